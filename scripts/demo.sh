#!/usr/bin/env bash
# The main job: set up .venv if needed, then run `denoise demo` (extra arguments are passed on, e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
# Two torch threads, the count the README's figures were made with (they depend on it: one thread gives others),
# waiting passively: spinning pools on cores shared with other jobs made the demo many times slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/denoise demo "$@"
