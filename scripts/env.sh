#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with denoise and its test/bench extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/denoise ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e ".[test,bench]"
    touch .venv/.installed
fi
