#!/usr/bin/env bash
# The test suite: set up .venv if needed, run ruff, then every test, the slow end-to-end ones included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
.venv/bin/ruff check denoise tests benchmarks  # lint first: set -e stops here when ruff finds something
# headless Chromium for the report's rendering test (it skips, saying why, where this fails)
command -v chromium >/dev/null || timeout 300 sh -c 'apt-get update -qq && apt-get install -y -qq chromium' \
    >/dev/null 2>&1 || true
exec .venv/bin/python -m pytest -q "$@"
