#!/usr/bin/env bash
# Build (or refresh) the project's virtual environment in .venv on a fresh machine.
#
# Idempotent: a second run only checks what is there. It keeps a detectron2 that is already
# importable in the venv (for example one installed from GitHub with
#   pip install 'git+https://github.com/facebookresearch/detectron2.git'
# ) and otherwise installs the sal-detectron2 wheel, a packaging of upstream detectron2.
#
# Environment:
#   VENV=path          where the venv lives (default: <repo>/.venv)
#   PYTHON=python3     interpreter used to create the venv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.resnest_dense_setup_v1"

log() { echo "[setup_env] $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if [ -f "$STAMP" ] && "$PY" -c "import torch, torchvision, detectron2, timm, resnest_dense" 2>/dev/null; then
  log "environment ready ($VENV)"
  exit 0
fi

"${PIP[@]}" install --upgrade pip wheel >/dev/null

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  log "installing torch 2.14.1 / torchvision 0.29.1 (from local disk when available)"
  "${PIP[@]}" install torch==2.14.1 torchvision==0.29.1
fi

log "installing detectron2's runtime dependencies"
"${PIP[@]}" install fvcore iopath pycocotools omegaconf hydra-core yacs termcolor tabulate \
  cloudpickle tqdm matplotlib tensorboard black "setuptools<81" opencv-python-headless \
  timm pytest pytest-timeout onnx onnxscript onnxruntime

if "$PY" -c "import detectron2" 2>/dev/null; then
  log "keeping the detectron2 already installed: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
else
  SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  log "installing detectron2 (sal-detectron2 wheel) into $SITE"
  "${PIP[@]}" install --upgrade --no-deps --only-binary=:all: --python-version 3.10 \
    --target "$SITE" sal-detectron2==0.7.2
  # The wheel ships detectron2's own scripts as a top-level 'tools' package, which would
  # shadow this repository's tools/ on import.
  rm -rf "$SITE/tools"
fi

log "installing resnest_dense (editable)"
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"

"$PY" -c "import torch, detectron2, timm, resnest_dense; print('torch', torch.__version__, '| detectron2', detectron2.__version__, '| timm', timm.__version__)"
touch "$STAMP"
log "environment ready ($VENV)"
