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
elif ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  # a half-made environment (venv interrupted, no pip) or one whose interpreter is gone
  if [ -f "$VENV/pyvenv.cfg" ]; then
    echo "[setup] $VENV is broken (no working python/pip): recreating it"
    "$PYTHON" -m venv --clear "$VENV"
  else
    echo "[setup] $VENV exists but is not a virtual environment with pip; remove it or set VENV=..." >&2
    exit 1
  fi
fi
PY="$VENV/bin/python"

have_torch() { "$PY" - <<'PY' 2>/dev/null
import sys, torch
major, minor = (int(v) for v in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PY
}

if [ -n "${TORCH_SPEC:-}" ]; then   # asked for: installed (a no-op when already satisfied)
  echo "[setup] installing $TORCH_SPEC"
  "$PY" -m pip install $PIP_QUIET "$TORCH_SPEC"
elif ! have_torch; then
  echo "[setup] installing torch (torch==2.13.0 if available, else torch>=2.4)"
  "$PY" -m pip install $PIP_QUIET "torch==2.13.0" 2>/dev/null || "$PY" -m pip install $PIP_QUIET "torch>=2.4"
fi

"$PY" -m pip install $PIP_QUIET setuptools wheel ninja numpy scikit-learn tqdm matplotlib pytest

WITH_TRITON=${WITH_TRITON:-auto}
# The config is read into a variable first: `pip config list | grep -q` under pipefail fails
# whenever grep exits before pip has written everything (SIGPIPE), which made this flaky.
PIP_CONFIG="$("$PY" -m pip config list 2>/dev/null || true)"
if [ "$WITH_TRITON" = "1" ] || { [ "$WITH_TRITON" = "auto" ] && [[ "$PIP_CONFIG" == *file://* ]]; }; then
  "$PY" -c "import triton" 2>/dev/null || "$PY" -m pip install $PIP_QUIET "triton>=3.0" || echo "[setup] triton not installed (optional)"
fi

TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
# The extension is rebuilt only when it could differ: other sources (scripts/source_hash.sh),
# another torch, other build switches, or no working module here (an editable install builds in
# a temporary folder, so pip alone would recompile every file on every `make` target).
STAMP_FILE="$VENV/.graphsmile-build"
STAMP="sources=$(bash scripts/source_hash.sh) torch=$TORCH_VERSION USE_CUDA=${USE_CUDA:-} FORCE_CUDA=${GRAPHSMILE_FORCE_CUDA:-} arch=${TORCH_CUDA_ARCH_LIST:-} repo=$PWD"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ] && ls graphsmile/_C*.so >/dev/null 2>&1 \
   && "$PY" - "$PWD" <<'PY' 2>/dev/null
import os, sys, warnings
warnings.simplefilter("ignore")
import graphsmile, graphsmile.ops as o
here = os.path.realpath(os.path.join(sys.argv[1], "graphsmile"))
sys.exit(0 if o.HAS_EXTENSION and os.path.realpath(os.path.dirname(graphsmile.__file__)) == here else 1)
PY
then
  echo "[setup] graphsmile's extension is up to date (torch $TORCH_VERSION, same sources): not rebuilt"
else
  echo "[setup] building graphsmile (C++ extension) against torch $TORCH_VERSION"
  rm -f "$STAMP_FILE"
  # Builds before the limited-API change were named _C.cpython-3XX-*.so; Python would import such a
  # stale module ahead of the new _C.abi3.so, so it goes.
  rm -f graphsmile/_C.cpython-*.so
  MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install $PIP_QUIET --no-build-isolation --no-deps -e .
  echo "$STAMP" > "$STAMP_FILE"
fi
"$PY" -c "import graphsmile.ops as o; print('[setup] graphsmile', __import__('graphsmile').__version__, '| C++ kernels:', o.HAS_EXTENSION, '| CUDA kernels:', o._ext.has_kernel('CUDA'))"
