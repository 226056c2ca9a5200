#!/usr/bin/env bash
# The test suite: set up .venv if needed, then run every test, the slow end-to-end ones included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
exec .venv/bin/python -m pytest -q "$@"
