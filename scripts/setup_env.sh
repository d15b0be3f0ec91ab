#!/usr/bin/env bash
# Creates or reuses a virtual environment, installs torch and the dependencies, then builds and
# installs graphsmile (with its C++ extension) into it. Used by `make run` and `make test`.
#
#   VENV=.venv            where the environment lives
#   PYTHON=python3        interpreter that creates it
#   TORCH_SPEC            torch requirement; default: torch==2.13.0 where pip can get it (the CI
#                         machine has that CPU wheel on local disk), else torch>=2.4
#   WITH_TRITON=auto      install triton too (auto: only where pip can get it quickly, i.e. a local index)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PIP_QUIET=${PIP_QUIET:--q}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

have_torch() { "$PY" - <<'PY' 2>/dev/null
import sys, torch
major, minor = (int(v) for v in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PY
}

if ! have_torch; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    echo "[setup] installing $TORCH_SPEC"
    "$PY" -m pip install $PIP_QUIET "$TORCH_SPEC"
  else
    echo "[setup] installing torch (torch==2.13.0 if available, else torch>=2.4)"
    "$PY" -m pip install $PIP_QUIET "torch==2.13.0" 2>/dev/null || "$PY" -m pip install $PIP_QUIET "torch>=2.4"
  fi
fi

"$PY" -m pip install $PIP_QUIET setuptools wheel ninja numpy scikit-learn tqdm matplotlib pytest

WITH_TRITON=${WITH_TRITON:-auto}
# The config is read into a variable first: `pip config list | grep -q` under pipefail fails
# whenever grep exits before pip has written everything (SIGPIPE), which made this flaky.
PIP_CONFIG="$("$PY" -m pip config list 2>/dev/null || true)"
if [ "$WITH_TRITON" = "1" ] || { [ "$WITH_TRITON" = "auto" ] && [[ "$PIP_CONFIG" == *file://* ]]; }; then
  "$PY" -c "import triton" 2>/dev/null || "$PY" -m pip install $PIP_QUIET "triton>=3.0" || echo "[setup] triton not installed (optional)"
fi

echo "[setup] building graphsmile (C++ extension) against torch $("$PY" -c 'import torch; print(torch.__version__)')"
# Builds before the limited-API change were named _C.cpython-3XX-*.so; Python would import such a
# stale module ahead of the new _C.abi3.so, so it goes.
rm -f graphsmile/_C.cpython-*.so
MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install $PIP_QUIET --no-build-isolation --no-deps -e .
"$PY" -c "import graphsmile.ops as o; print('[setup] graphsmile', __import__('graphsmile').__version__, '| C++ kernels:', o.HAS_EXTENSION, '| CUDA kernels:', o._ext.has_kernel('CUDA'))"
