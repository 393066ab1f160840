#!/usr/bin/env bash
# Set up .venv if needed (scripts/setup_env.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k backbone -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"

# The suite writes checkpoints, ONNX files and toy datasets under pytest's temporary folder: at
# most ~1.8 GB at once (measured on the whole suite; pytest.ini deletes a passing test's
# folder). With less free space tests fail half-way with "No space left on device" at random
# places, so stop before running anything.
TMP_ROOT="${TMPDIR:-/tmp}"
NEED_MB="${RESNEST_DENSE_TEST_DISK_MB:-2500}"
FREE_MB="$(df -Pm "$TMP_ROOT" | awk 'NR == 2 {print $4}')"
if [ "$FREE_MB" -lt "$NEED_MB" ]; then
  echo "[run_tests] only ${FREE_MB} MB free in $TMP_ROOT; the test suite needs ${NEED_MB} MB." >&2
  echo "[run_tests] Free space there (old pytest runs: ${TMP_ROOT}/pytest-of-$(id -un)) or" \
    "point TMPDIR at a larger disk." >&2
  exit 2
fi
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest tests -q --durations=15 "$@"
