#!/usr/bin/env bash
# Set up .venv if needed (scripts/setup_env.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k backbone -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest tests -q --durations=15 "$@"
