#!/usr/bin/env bash
# CUDA build check for CI machines without a GPU.
#
#   .ci/cuda_build_check.sh
#
# 1. creates (or reuses) a venv at ${GRAPHSMILE_CUDA_VENV:-<repo>/.venv-cuda} with the CUDA build
#    of torch (${GRAPHSMILE_TORCH_VERSION:-2.14.1}), numpy, ninja, setuptools, wheel;
# 2. copies the repository (without venvs, build outputs, compiled modules, .git) to a temp dir;
# 3. builds and installs it there with GRAPHSMILE_FORCE_CUDA=1 and
#    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}, MAX_JOBS=${MAX_JOBS:-2};
# 4. checks that every csrc/cuda/*.cu produced an object file, lists compiler warnings from our
#    sources (GRAPHSMILE_CUDA_WERROR=1 makes them fatal);
# 5. imports graphsmile from outside the source tree and asserts that all seven
#    torch.ops.graphsmile ops have CPU and CUDA kernels, and upload_by_value its
#    CompositeExplicitAutograd one (no GPU needed for that).
# Exits non-zero on any failure. Set KEEP_BUILD_DIR=1 to keep the temp dir.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GRAPHSMILE_CUDA_VENV:-$REPO/.venv-cuda}"
TORCH_VERSION="${GRAPHSMILE_TORCH_VERSION:-2.14.1}"
ARCHS="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}"
JOBS="${MAX_JOBS:-2}"
PYTHON="${PYTHON:-python3}"
T0=$(date +%s)

say() { printf '[cuda_build_check %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

# --- 1. venv ----------------------------------------------------------------------------------
venv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$TORCH_VERSION" <<'EOF' >/dev/null 2>&1
import sys
import torch, numpy, ninja, setuptools, wheel  # noqa: F401
want = sys.argv[1]
sys.exit(0 if torch.__version__.split("+")[0] == want and torch.version.cuda else 1)
EOF
}
if venv_ok; then
  say "reusing venv $VENV"
else
  say "creating venv $VENV (torch==$TORCH_VERSION)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy ninja setuptools wheel
  venv_ok || fail "the venv at $VENV has no CUDA build of torch==$TORCH_VERSION"
fi
"$VENV/bin/python" -c "import torch; print('  torch', torch.__version__, 'CUDA', torch.version.cuda)"

# --- nvcc / CUDA_HOME -------------------------------------------------------------------------
# shellcheck source=../scripts/cuda_home.sh
source "$REPO/scripts/cuda_home.sh"
find_cuda_home || fail "no CUDA toolkit found (set CUDA_HOME; nvcc: $(command -v nvcc || echo none))"
say "CUDA_HOME=$CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | tail -1))"

# --- 2. copy of the repository ----------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/graphsmile-cuda-check.XXXXXX")"
if [ "${KEEP_BUILD_DIR:-0}" = 1 ]; then say "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$WORK/src"
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude='./.venv-*' --exclude=./build --exclude=./dist \
  --exclude='*.egg-info' --exclude='*.so' --exclude='__pycache__' --exclude=./data --exclude=./runs --exclude=./out \
  -cf - . | tar -C "$WORK/src" -xf -
mapfile -t CU_FILES < <(cd "$WORK/src" && ls csrc/cuda/*.cu 2>/dev/null | sort)
[ "${#CU_FILES[@]}" -gt 0 ] || fail "no csrc/cuda/*.cu files"
say "copied the repository to $WORK/src; CUDA sources: ${CU_FILES[*]}"

# --- 3. build + install -----------------------------------------------------------------------
say "building (GRAPHSMILE_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=\"$ARCHS\" MAX_JOBS=$JOBS)"
LOG="$WORK/build.log"
set +e
(cd "$WORK/src" && GRAPHSMILE_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCHS" MAX_JOBS="$JOBS" \
  "$VENV/bin/pip" install --no-build-isolation --no-deps --force-reinstall -v . >"$LOG" 2>&1)
rc=$?
set -e
if [ $rc -ne 0 ]; then
  grep -nE "error|Error" "$LOG" | grep -v "^.*warning" | head -15 || true
  if grep -q "C++20 or later compatible compiler is required" "$LOG"; then
    say "hint: setup.py passes -std=c++17 but torch $TORCH_VERSION needs C++20; drop the -std flags from setup.py (torch's build_ext then picks the standard the installed torch needs)"
  fi
  tail -20 "$LOG"
  fail "build failed (exit $rc); full log above / in $LOG"
fi
grep -q "building CPU + CUDA kernels" "$LOG" || fail "setup.py did not build the CUDA kernels: $(grep -m1 'graphsmile: building' "$LOG" || echo '?')"

# --- 4. every .cu compiled, warnings ----------------------------------------------------------
for cu in "${CU_FILES[@]}"; do
  obj=$(find "$WORK/src/build" -path "*/${cu%.cu}.o" 2>/dev/null | head -1)
  [ -n "$obj" ] || fail "$cu was not compiled (no object file)"
  say "compiled $cu -> ${obj#$WORK/src/} ($(stat -c %s "$obj") bytes)"
done
WARN=$(grep -E "(csrc|kernels|include)/[^ ]*(\.cu|\.cuh|\.h|\.cpp)[(:][0-9]+.*warning" "$LOG" | sort -u || true)
if [ -n "$WARN" ]; then
  say "compiler warnings in graphsmile sources:"
  echo "$WARN"
  [ "${GRAPHSMILE_CUDA_WERROR:-0}" = 1 ] && fail "warnings (GRAPHSMILE_CUDA_WERROR=1)"
else
  say "no compiler warnings in graphsmile sources"
fi

# --- 4b. the fat binary: machine code per architecture, PTX where "+PTX" asks for it ------------
# (PTX lets GPUs newer than the list, e.g. sm_100, compile the kernels at load time.) cuobjdump
# comes with the CUDA toolkit or with triton's wheel; without one this check is skipped, said so.
SO=$(find "$WORK/src/build" -name "_C*.so" 2>/dev/null | head -1)
CUOBJDUMP=$(command -v cuobjdump || true)
[ -n "$CUOBJDUMP" ] || CUOBJDUMP=$(ls "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump" 2>/dev/null || true)
[ -n "$CUOBJDUMP" ] || CUOBJDUMP=$(ls "$VENV"/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump \
  "$REPO"/.venv/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump 2>/dev/null | head -1 || true)
if [ -z "$SO" ]; then
  fail "no built _C*.so under $WORK/src/build"
elif [ -z "$CUOBJDUMP" ]; then
  say "cuobjdump not found: fat-binary contents not checked"
else
  LISTING=$("$CUOBJDUMP" --list-elf --list-ptx "$SO")
  # entry names depend on nvcc's flags (per source file with -lineinfo, else per module): at
  # least one entry per architecture
  NCU=1
  read -ra ARCH_ITEMS <<< "${ARCHS//;/ }"
  for a in "${ARCH_ITEMS[@]}"; do
    sm="sm_${a//[.+PTXptx]/}"
    n=$(echo "$LISTING" | grep -c "\.${sm}\.cubin" || true)
    [ "$n" -ge "$NCU" ] || fail "no $sm machine code (cubin) in $SO"
    if [[ "$a" == *+PTX ]]; then
      n=$(echo "$LISTING" | grep -c "\.${sm}\.ptx" || true)
      [ "$n" -ge "$NCU" ] || fail "no $sm PTX in $SO, although $a asks for it"
    fi
  done
  say "fat binary: $(echo "$LISTING" | awk '{print $NF}' | tr '\n' ' ')"
fi

# --- 5. import from outside the source tree, kernels registered -------------------------------
say "importing graphsmile from $WORK (outside the source tree)"
(cd "$WORK" && "$VENV/bin/python" - <<'EOF')
import os
import torch
import graphsmile
import graphsmile.ops as ops

src = os.path.join(os.getcwd(), "src")
assert not os.path.abspath(graphsmile.__file__).startswith(src), f"imported the source tree: {graphsmile.__file__}"
assert ops.HAS_EXTENSION, f"graphsmile._C did not load: {ops._ext.LOAD_ERROR}"
ops_ = ["window_norm", "window_norm_backward", "window_spmm", "window_spmm_backward",
        "shift_pair_sum", "shift_pair_sum_backward",
        "shift_pair_nll"]
missing = [(op, key) for op in ops_ for key in ("CPU", "CUDA")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{op}", key)]
assert not missing, f"missing kernels: {missing}"
# the by-value upload (csrc/cuda/upload_cuda.cu): a CPU input and a CUDA output, so not a backend key
assert torch._C._dispatch_has_kernel_for_dispatch_key("graphsmile::upload_by_value", "CompositeExplicitAutograd"), \
    "missing kernel: upload_by_value (CompositeExplicitAutograd)"
print(f"  graphsmile from {os.path.dirname(graphsmile.__file__)}: CPU + CUDA kernels for {', '.join(ops_)}")
print(f"  torch.cuda.is_available() = {torch.cuda.is_available()}")
EOF
say "OK"
