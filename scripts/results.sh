#!/usr/bin/env bash
# Regenerate docs/results.md and the marked figure blocks of README.md and docs/*.md from benchmarks/results/
# (`--check`: only say which pages differ, exit 1 if any).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m denoise.cli.bench.results "$@"
