#!/usr/bin/env bash
# The main job: set up .venv if needed, then run `denoise demo` (extra arguments are passed on, e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
exec .venv/bin/denoise demo "$@"
