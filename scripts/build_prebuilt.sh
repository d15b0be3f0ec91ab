#!/usr/bin/env bash
# Builds graphsmile's extension (CPU + CUDA kernels) HERE, on a machine without a GPU, against
# the exact torch of the lent GPU machines, so a device session spends no device time compiling.
#
#   scripts/build_prebuilt.sh                 # torch 2.11.0 (cu130), sm_90 -> build/prebuilt/torch-2.11.0/
#   TORCH_VERSION=2.12.0 ARCHS="8.0;9.0" scripts/build_prebuilt.sh
#   PREBUILT_VENV=/path/to/venv           reuse a venv that has that torch (default /tmp/graphsmile-venv-torch-<v>)
#   ALLOW_DOWNLOAD_FAILURE=1              exit 0 with SKIPPED when torch cannot be downloaded (CI)
#
# CI (.ci/run) runs it too: it proves the sources compile and load against the GPU machines'
# torch, which is older than the one the CUDA build check uses.
#
# Why this works: graphsmile/_C uses only CPython's limited API (setup.py), so the module built
# here with Python 3.11 (`_C.abi3.so`) loads on the device's Python 3.12; what must match is
# torch's C++ ABI, i.e. the torch version (and its CUDA major version). The build venv takes
# torch==$TORCH_VERSION from PyPI (the CUDA 13 wheel, a few GB with its nvidia-* packages,
# whose headers torch's CUDA headers include).
#
# Output: build/prebuilt/torch-$TORCH_VERSION/{_C.abi3.so, meta.json}. The device script
# (scripts/gpu_session.sh) uses it when the device's torch has that version and builds on the
# device otherwise. Hand it to the device with carry=["build/prebuilt"].
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
ARCHS="${ARCHS:-9.0}"
VENV="${PREBUILT_VENV:-/tmp/graphsmile-venv-torch-$TORCH_VERSION}"
OUT_DIR="$REPO/build/prebuilt/torch-$TORCH_VERSION"
PYTHON="${PYTHON:-python3}"
T0=$(date +%s)
say() { printf '[build_prebuilt %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' and torch.version.cuda else 1)" 2>/dev/null; then
  say "creating $VENV with torch==$TORCH_VERSION (CUDA build, from PyPI)"
  "$PYTHON" -m venv "$VENV"
  # /etc/xdg/pip caps torch at the versions on local disk; an older pin is within the cap.
  if ! "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy ninja setuptools wheel; then
    # CI sets ALLOW_DOWNLOAD_FAILURE=1: a network failure must not read as a build failure.
    if [ "${ALLOW_DOWNLOAD_FAILURE:-0}" = 1 ]; then say "SKIPPED: could not install torch==$TORCH_VERSION from PyPI"; exit 0; fi
    say "FAIL: could not install torch==$TORCH_VERSION"; exit 1
  fi
fi
"$VENV/bin/python" -c "import torch; print('  torch', torch.__version__, 'CUDA', torch.version.cuda)"

# shellcheck source=cuda_home.sh
source "$REPO/scripts/cuda_home.sh"
find_cuda_home || { say "FAIL: no CUDA toolkit found (set CUDA_HOME; nvcc: $(command -v nvcc || echo none))"; exit 1; }

# Build in a copy of the tracked tree, so the working tree's own _C (built against another
# torch) is left alone.
WORK="$(mktemp -d /tmp/graphsmile-prebuilt.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - 2>/dev/null) | tar xf - -C "$WORK"
say "building in $WORK for TORCH_CUDA_ARCH_LIST=$ARCHS (nvcc: $(nvcc --version | tail -1))"
(cd "$WORK" && GRAPHSMILE_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCHS" MAX_JOBS="${MAX_JOBS:-2}" \
   "$VENV/bin/python" setup.py -q build_ext --inplace) > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; say "FAIL: build"; exit 1; }
SO="$(ls "$WORK"/graphsmile/_C*.so)"
case "$SO" in *.abi3.so) ;; *) say "FAIL: expected a limited-API module _C.abi3.so, got $SO"; exit 1 ;; esac

# The module must load and register CPU and CUDA kernels for every op (no GPU needed for that).
(cd /tmp && PYTHONPATH="$WORK" "$VENV/bin/python" - <<'EOF') || { say "FAIL: the built module does not load"; exit 1; }
import torch
from graphsmile.ops import _ext
assert _ext.HAS_EXTENSION, _ext.LOAD_ERROR
for op in ("window_norm", "window_norm_backward", "window_spmm", "window_spmm_backward", "shift_pair_sum", "shift_pair_sum_backward", "shift_pair_nll"):
    for key in ("CPU", "CUDA", "Autograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{op}", key), (op, key)
assert torch._C._dispatch_has_kernel_for_dispatch_key("graphsmile::upload_by_value", "CompositeExplicitAutograd")
print("  loads; CPU, CUDA and autograd kernels registered for all seven ops, and upload_by_value")
EOF

mkdir -p "$OUT_DIR"
cp "$SO" "$OUT_DIR/_C.abi3.so"
COMMIT="$(cd "$REPO" && git rev-parse HEAD 2>/dev/null || echo unknown)"
DIRTY="$(cd "$REPO" && { git diff --quiet HEAD -- csrc kernels include setup.py 2>/dev/null && echo false || echo true; })"
SRC_HASH="$(cd "$WORK" && bash scripts/source_hash.sh)"   # of the sources built, not of the tree now
"$VENV/bin/python" - "$OUT_DIR/meta.json" "$TORCH_VERSION" "$ARCHS" "$COMMIT" "$DIRTY" "$SRC_HASH" <<'EOF'
import json, sys, datetime, torch
path, version, archs, commit, dirty, src = sys.argv[1:]
json.dump({"torch": torch.__version__, "torch_cuda": torch.version.cuda, "arch_list": archs, "git_commit": commit,
           "sources_dirty": dirty == "true", "sources_sha256_16": src,
           "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
          open(path, "w"), indent=1)
EOF
say "wrote $OUT_DIR/_C.abi3.so ($(du -h "$OUT_DIR/_C.abi3.so" | cut -f1)) and meta.json"
