#!/usr/bin/env bash
# Everything a session with a lent GPU (H100/H200) should do, in ONE prepared call: the device
# budget is about 15 minutes in all, machine start included, and one command may run 10.
#
#   Here first (no GPU needed; ~3 min on 2 cores once its venv exists, ~5 min with the download):
#       scripts/build_prebuilt.sh            # the extension for the device's torch 2.11 -> build/prebuilt/
#   Then the device tool (the copy there has no .git: pass the commit for the records):
#       run(command="GRAPHSMILE_GIT_COMMIT=<git rev-parse HEAD> bash scripts/gpu_session.sh",
#           carry=["build/prebuilt"], timeout_s=600)
#   Then here:
#       scripts/collect_gpu_results.sh <files_at>   # results -> bench/results/, logs -> bench/results/gpu/
#       python bench/ab.py                          # the A/B stages side by side, per kernel option
#
# Stages, in priority order, each with its own time limit, all under one deadline
# (GS_DEADLINE_S, default 560 s, so the call ends inside the tool's 600 s). First what closes
# issues #3 and #4 (each backend's tests on the GPU and its bench/ops.py records), then the
# figures of #8; the stage limits add up to more than the deadline, so the tail may be skipped:
#   env          nvidia-smi, versions, measured device copy bandwidth
#   ext          the prebuilt extension when its torch version and source hash match, else a
#                build here (sm_90, all cores); then a smoke check against the reference
#   cuda         pytest tests/test_cuda.py
#   ops_cuda     bench/ops.py --preset gpu-targets (T1 bandwidth fp32+bf16 D 256/512, T2 shift), cuda
#   ab_ffma      fp32 bandwidth with the staged forward (GRAPHSMILE_CUDA_FFMA_DTILES=8 and 2)
#   model_cuda   bench/model.py --preset gpu-targets (T3: IEMOCAP batch, 16x1000, 1x20000), cuda + original
#   host         bench/host.py: the host time of a training step whose kernels do nothing (the
#                floor of T3/T4's launch-bound steps), per phase, and of one window_spmm call;
#                cuda, then triton
#   graphed      bench/graphed.py: the T3 steps (16xIEMOCAP, 16x1000) eager vs replayed from a CUDA
#                graph, i.e. with the host's work removed; cuda and triton (GPU only)
#   epoch        bench/epoch.py (T4: a synthetic IEMOCAP-6 epoch, DataLoader vs device-resident path,
#                with each epoch's top kernels)
#   ab_step      the T3 training steps with the staged kernels and the split pass B
#                (GRAPHSMILE_CUDA_FFMA_DTILES=8 with GRAPHSMILE_CUDA_ROWS_FSPLIT=4, then =auto)
#   model_tf32   bench/model.py --preset gpu-targets --tf32: T3 with TF32 products, cuda + original
#   profile      torch.profiler kernel tables (cuda, triton) + Nsight Compute of window_spmm
#   epoch_compiled  bench/epoch.py --paths device,compiled (the model under torch.compile; training)
#   model_compiled  bench/model.py --compile: T3 (16xIEMOCAP, 16x1000) with ours under torch.compile,
#                against the original (eager), with the verdicts
#   ab_step_compiled  the same with ab_step's kernels (staged, split pass B): everything built for
#                T3 at once, compiled from inductor's cache of model_compiled
#   ops_triton   bench/ops.py --preset gpu-targets, triton (TRITON_PRINT_AUTOTUNING=1: the tiles
#                the autotuner picks, for triton_kernels.PINNED)
#   triton       pytest tests/test_triton.py (Triton's compiler: cold, 8 processes took > 150 s
#                on the first H200 run; 113 s warm)
#   ab_tc        bf16 bandwidth again with GRAPHSMILE_CUDA_TENSOR_CORES=0 (the FFMA kernels) and with
#                GRAPHSMILE_CUDA_TC_DTILES=1 (the tensor-core forward restaging its coefficients for
#                every feature tile), beside ops_cuda's defaults (records carry cuda_tensor_cores,
#                cuda_tc_dtiles)
#   ab_nll       the fused shift loss (1x20000, shift_win -1, fp32 + bf16) with the two-pass kernels
#                and with the tiled kernel's fast intrinsics, beside ops_cuda's auto (tiled) run
#                (records carry cuda_shift_nll, cuda_fast_math)
#   model_triton bench/model.py --preset gpu-targets, triton
#   stack        bench/ops.py stack + shift sections at L 50 110 250 1000 (cuda, triton, dense, scatter, floor)
#   suite        the rest of the test suite
# A stage is skipped when less time is left than it needs. Everything lands under $OUT as TWO
# files, because the device tool brings back at most 8 (16 MiB each): summary.txt (also printed
# last, and written as the stages go) and session.tgz (logs/, results/*.jsonl, profile/ without
# the torch-profiler traces). The loose files are written to a work folder ($GS_WORK) and the
# archive is refreshed after every stage, so a run killed from outside (the device tool's limit,
# SIGKILL included) still leaves every finished stage's files in $OUT; TERM/INT also stop the
# running stage at once.
#
#   GS_STAGES="ext cuda ops_cuda"   a subset (ext is added when a later stage needs it)
#   GS_DEVICE=cpu GS_QUICK=1        a dry run of the commands on a CPU machine (benchmarks at
#                                   --quick size; CUDA-only checks skipped): tests/test_gpu_session.py
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OUT="${OUT:-/tmp/graphsmile-gpu-out}"
# the loose files (logs/ results/ profile/): GS_WORK, kept; by default a fresh temporary folder,
# removed on exit once the final archive is written
if [ -n "${GS_WORK:-}" ]; then W="$GS_WORK"; W_TEMP=0; else W="$(mktemp -d /tmp/graphsmile-gpu-work.XXXXXX)"; W_TEMP=1; fi
export W
mkdir -p "$OUT" "$W/logs" "$W/results" "$W/profile"
OUT="$(cd "$OUT" && pwd)"   # absolute: package() writes into it from $W
export PY="${PY:-python3}"
export GS_DEVICE="${GS_DEVICE:-cuda}"
QUICK=""; [ "${GS_QUICK:-0}" = 1 ] && QUICK="--quick"
export QUICK
DEADLINE_S="${GS_DEADLINE_S:-560}"
STAGES="${GS_STAGES:-env ext cuda ops_cuda ab_ffma model_cuda host graphed epoch ab_step model_tf32 profile epoch_compiled model_compiled ab_step_compiled ops_triton triton ab_tc ab_nll model_triton stack suite}"
# the stages that run the C++/CUDA extension (the Triton ones do not): skipped when ext failed
NEEDS_EXT="cuda ops_cuda ab_ffma model_cuda host graphed epoch ab_step epoch_compiled model_compiled ab_step_compiled ab_tc ab_nll model_tf32 stack profile"
T0=$(date +%s)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
NPROC=$(nproc 2>/dev/null || echo 8)

# After every stage and on exit: logs/, results/ and profile/ into $OUT/session.tgz, written
# under another name and renamed, so $OUT always holds a whole archive of the stages so far;
# collect_gpu_results.sh unpacks it.
package() {
  (cd "$W" && tar czf "$OUT/.session.tgz.part" --exclude='trace_*.json' logs results profile) \
    && mv -f "$OUT/.session.tgz.part" "$OUT/session.tgz"
}
STAGE_PID=""
on_signal() {
  # the stage runs under timeout in a process group of its own: stop it now, not at its limit
  [ -n "$STAGE_PID" ] && kill -TERM -- "-$STAGE_PID" 2>/dev/null
  note "interrupted (signal): stopping"
  exit 143
}
finish() { package && [ "$W_TEMP" = 1 ] && rm -rf "$W"; }
trap finish EXIT
trap on_signal TERM INT

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( DEADLINE_S - $(elapsed) )); }
note() { printf '[%4ss] %s\n' "$(elapsed)" "$*" | tee -a "$SUMMARY"; }
want() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# stage NAME MAX_S MIN_S CMD: runs CMD (bash -c) when at least MIN_S are left, killed after
# min(MAX_S, time left); CMD sees that limit as $LIMIT (benchmarks stop starting new cases at
# $((LIMIT - 25)) via --time-limit-s). Log: $W/logs/NAME.log; its key lines go to the summary.
stage() {
  local name=$1 max=$2 min=$3 cmd=$4 t l rc t1
  want "$name" || return 0
  case " $NEEDS_EXT " in
    *" $name "*) [ -f "$W/logs/ext.ok" ] || { note "$name: SKIPPED (the extension did not load: logs/ext.log)"; return 0; } ;;
  esac
  l=$(left)
  if [ "$l" -lt "$min" ]; then note "$name: SKIPPED (only ${l}s left, needs ${min}s)"; return 0; fi
  t=$(( max < l ? max : l ))
  t1=$(date +%s)
  note "$name: start (limit ${t}s)"
  # in the background and waited for, so that a TERM reaches on_signal at once
  LIMIT=$t timeout --signal=TERM --kill-after=15 "$t" bash -c "$cmd" > "$W/logs/$name.log" 2>&1 &
  STAGE_PID=$!
  wait "$STAGE_PID"
  rc=$?
  STAGE_PID=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then note "$name: TIMEOUT after $(( $(date +%s) - t1 ))s"
  else note "$name: rc=$rc in $(( $(date +%s) - t1 ))s"; fi
  grep -E "passed|failed|[0-9] error|PASS|MISS|GB/s|FAIL|Error|using the prebuilt|building here" "$W/logs/$name.log" \
    | tail -n 14 | cut -c1-220 | sed 's/^/    /' >> "$SUMMARY"
  package
  return 0
}

# --- env ----------------------------------------------------------------------------------------
stage env 40 10 '
command -v nvidia-smi >/dev/null && nvidia-smi
$PY - <<EOF
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton: not importable", e)
if "$GS_DEVICE".startswith("cuda"):
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "SMs", p.multi_processor_count, "mem GiB", round(p.total_memory / 2**30, 1), "cc", p.major, p.minor)
    sys.path.insert(0, "bench")
    import ops  # bench/ops.py: the copy ceiling its bandwidth records are compared with
    print("copy bandwidth (read + write): %.0f GB/s" % ops.measure_copy_bandwidth("cuda"))
EOF'

# --- ext ----------------------------------------------------------------------------------------
# The prebuilt module is used only when built for this torch from these very sources
# (scripts/source_hash.sh); otherwise build here on all cores for this GPU only.
export NPROC
EXT_CMD='
set -e
TV=$($PY -c "import torch; print(torch.__version__.split(\"+\")[0])")
PB=build/prebuilt/torch-$TV
HASH=$(bash scripts/source_hash.sh)
build_here() {
  echo "building here (sm_90, $NPROC jobs)"
  source scripts/cuda_home.sh
  find_cuda_home || export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}   # (no libcudart.so link: try anyway)
  rm -f graphsmile/_C*.so
  GRAPHSMILE_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$NPROC $PY setup.py -q build_ext --inplace
}
smoke() {
$PY - <<EOF
import torch
from graphsmile.ops import _ext
import graphsmile.ops as g
dev = "$GS_DEVICE"
assert _ext.HAS_EXTENSION, _ext.LOAD_ERROR
if dev == "cuda":
    assert _ext.has_kernel("CUDA"), "the extension has no CUDA kernels"
x = torch.randn(2 * 7, 8, device=dev, dtype=torch.float64)
w = torch.rand(g.num_edges([3, 4], 2, 1, 1), device=dev, dtype=torch.float64) + 0.5
y = g.window_propagate(x, w, [3, 4], 2, 1, 1, backend="cuda" if dev == "cuda" else "cpu")
r = g.window_propagate(x.cpu(), w.cpu(), [3, 4], 2, 1, 1, backend="reference")
err = float((y.cpu() - r).abs().max())
print("smoke: kernel vs reference, max abs err", err)
assert err < 1e-12
print("extension OK")
EOF
}
if [ "$GS_DEVICE" = cuda ]; then
  rm -f graphsmile/_C*.so
  if [ -f "$PB/_C.abi3.so" ] && grep -q "\"sources_sha256_16\": \"$HASH\"" "$PB/meta.json"; then
    echo "using the prebuilt extension $PB (sources $HASH)"; cat "$PB/meta.json"
    cp "$PB/_C.abi3.so" graphsmile/_C.abi3.so
    smoke || { echo "the prebuilt extension failed its smoke check: building here"; build_here; smoke; }
  else
    echo "no prebuilt extension for torch $TV and sources $HASH: building here"
    if [ -f "$PB/meta.json" ]; then cat "$PB/meta.json"; fi
    build_here
    smoke
  fi
else
  echo "dry run on $GS_DEVICE: the extension already in the tree is used"
  smoke
fi
touch "$W/logs/ext.ok"
'
NEED_EXT=0  # every stage but env imports graphsmile, so it needs the package (ext) in place
for s in $STAGES; do [ "$s" = env ] || NEED_EXT=1; done
if want ext || [ $NEED_EXT -eq 1 ]; then STAGES="$STAGES ext"; stage ext 240 30 "$EXT_CMD"; fi

export PYTEST="$PY -m pytest -q -p no:cacheprovider"  # pyproject's addopts leave out the micro-benchmarks
XDIST=""
$PY -c "import xdist" 2>/dev/null && [ "$GS_DEVICE" = cuda ] && XDIST="-n 8"
# a hanging test fails alone (pytest-timeout, where installed) instead of costing its stage's
# summary line and junit file
$PY -c "import pytest_timeout" 2>/dev/null && XDIST="$XDIST --timeout=120"
export XDIST
OPS='$PY bench/ops.py --device $GS_DEVICE --isolate none $QUICK --time-limit-s $((LIMIT - 25)) --out $W/results/ops.jsonl'
# the backend of the "cuda" stages: the CPU kernels in a dry run
BE=cuda; [ "$GS_DEVICE" = cuda ] || BE=cpu
MODEL='$PY bench/model.py --device $GS_DEVICE --isolate none $QUICK --time-limit-s $((LIMIT - 25)) --out $W/results/model.jsonl'

# --- issue #3: the CUDA tests; issue #8: the CUDA benchmarks ---------------------------------------
# (issue #4, the Triton tests, passed on the first H200 run: they come after the figures now)
stage cuda 150 40 '$PYTEST $XDIST tests/test_cuda.py --junitxml=$W/logs/cuda.xml'
# --kernel-times: T1's bandwidth also from the kernels' own device time (torch.profiler), as the
# CUDA-event time of a 50-100 us layer includes the host's launch gaps
KT=""; [ "$GS_DEVICE" = cuda ] && KT="--kernel-times"
stage ops_cuda 120 45 "$OPS --preset gpu-targets --providers $BE,floor,dense,unfused --reps 3 $KT"
# the staged fp32 forward (GRAPHSMILE_CUDA_FFMA_DTILES: coefficients once per block for 8 or 2
# feature tiles, 16-byte x loads) beside ops_cuda's original forward: records carry cuda_ffma_dtiles
FFMA_AB="$OPS --preset gpu-bandwidth --dtype float32 --providers $BE --reps 3 $KT"
stage ab_ffma 80 30 "GRAPHSMILE_CUDA_FFMA_DTILES=8 $FFMA_AB; GRAPHSMILE_CUDA_FFMA_DTILES=2 $FFMA_AB"
stage model_cuda 100 40 "$MODEL --preset gpu-targets --providers $BE,original --reps 3"
# the host time of a step (T3/T4 are bound by it): C++ autograd, WindowGraph, fused AdamW since the first run
# (and with the Triton kernels, auto's choice for fp16/bf16: their launches are Python calls)
HOST='$PY bench/host.py --device $GS_DEVICE $QUICK --out $W/results/host.jsonl'
stage host 60 15 "$HOST && { [ \"\$GS_DEVICE\" != cuda ] || $HOST --backend triton --reps 3; }"
# the same T3 steps replayed from a CUDA graph: the step's GPU time with the host's work removed
# (CUDA graphs need a GPU: nothing to do in a dry run)
stage graphed 90 30 '[ "$GS_DEVICE" != cuda ] && echo "no CUDA graphs on $GS_DEVICE" || $PY bench/graphed.py $QUICK --reps 3 --out $W/results/graphed.jsonl'
stage epoch 60 20 '$PY bench/epoch.py --device $GS_DEVICE $QUICK --out $W/results/epoch.jsonl'
# the small-batch training step (T3) with the staged kernels and pass B split over the features
# beside model_cuda's defaults: GRAPHSMILE_CUDA_ROWS_FSPLIT=4 (128 features per block: 192 blocks
# at 16xIEMOCAP, D = 512; split at every size) and auto (the candidate default: 32 features per
# block, 768 blocks, at 16xIEMOCAP; unsplit at 16x1000 and 1x20000)
AB_STEP="$MODEL --preset gpu-targets --providers $BE --reps 3 --no-check"
stage ab_step 80 25 "GRAPHSMILE_CUDA_FFMA_DTILES=8 GRAPHSMILE_CUDA_ROWS_FSPLIT=4 $AB_STEP; GRAPHSMILE_CUDA_FFMA_DTILES=8 GRAPHSMILE_CUDA_ROWS_FSPLIT=auto $AB_STEP"
# (before the compiled stages, whose cold compiles can take the rest of the deadline)
# T3 with every provider's fp32 products in TF32 (graphsmile train --tf32), the original's too:
# what the GEMMs (about half of the 16x1000 and 1x20000 steps, GPU_NOTES item 9) cost on tensor cores
stage model_tf32 80 30 "$MODEL --preset gpu-targets --providers $BE,original --reps 3 --no-check --tf32"
# Nsight Compute of the staged kernels (GPU_NOTES item 8) and the profiler's kernel tables
PROFILE_SIZE=""; [ -n "$QUICK" ] && PROFILE_SIZE="--lengths 40 30 --dim 16"
stage profile 60 25 "
PROF_BE=cuda; [ \$GS_DEVICE = cuda ] || PROF_BE=cpu
\$PY bench/profile_ops.py --device \$GS_DEVICE --backend \$PROF_BE $PROFILE_SIZE --torch-profiler \$W/profile/trace_\$PROF_BE.json > \$W/profile/kernels_\$PROF_BE.txt 2>&1
tail -30 \$W/profile/kernels_\$PROF_BE.txt
if [ \$GS_DEVICE = cuda ]; then
  \$PY bench/profile_ops.py --backend triton --torch-profiler \$W/profile/trace_triton.json > \$W/profile/kernels_triton.txt 2>&1
  tail -30 \$W/profile/kernels_triton.txt
  if command -v ncu >/dev/null; then
    ncu --clock-control none -k regex:window_spmm -c 3 --section SpeedOfLight --section MemoryWorkloadAnalysis \
      \$PY bench/profile_ops.py --backend cuda --iters 1 > \$W/profile/ncu_window_spmm.txt 2>&1
    tail -80 \$W/profile/ncu_window_spmm.txt
    ncu --clock-control none -k regex:shift_pair_nll -c 2 --section SpeedOfLight --section ComputeWorkloadAnalysis \
      \$PY bench/profile_ops.py --backend cuda --iters 1 > \$W/profile/ncu_shift_pair_nll.txt 2>&1
    tail -40 \$W/profile/ncu_shift_pair_nll.txt
  fi
fi"
# torch.compile of the whole model (T4: fewer, fused kernels per step); its warm-up epoch compiles.
# Training only, one timed epoch: every graph is a cold inductor compile (3 for training, 2 more for
# evaluation), and the records are written only when the stage ends
stage epoch_compiled 150 60 '$PY bench/epoch.py --device $GS_DEVICE $QUICK --paths device,compiled --no-eval --epochs 1 --out $W/results/epoch.jsonl'
# T3 with ours under torch.compile (after epoch_compiled: inductor's cache has the model's kernels)
stage model_compiled 150 60 "$MODEL --preset gpu-targets --providers $BE,original --reps 3 --no-check --no-single --compile"
# all of T3's options at once: torch.compile and ab_step's kernels (the env vars change only the
# extension's launches, not the traced graph, so inductor's cache from model_compiled serves)
stage ab_step_compiled 100 40 "GRAPHSMILE_CUDA_FFMA_DTILES=8 GRAPHSMILE_CUDA_ROWS_FSPLIT=auto $MODEL --preset gpu-targets --providers $BE,original --reps 3 --no-check --no-single --compile"
stage ops_triton 120 45 "TRITON_PRINT_AUTOTUNING=1 $OPS --preset gpu-targets --providers triton,floor --reps 3 $KT"
# the tests autotune under xdist (8 processes on one GPU): their timings must not be cached for
# the benchmarks' tile choice
stage triton 270 60 'GRAPHSMILE_TRITON_AUTOTUNE_CACHE=0 $PYTEST $XDIST tests/test_triton.py --junitxml=$W/logs/triton.xml'
# --- issue #8: the A/B comparisons, the rest ------------------------------------------------------
TC_AB="$OPS --preset gpu-bandwidth --dtype bfloat16 --dim 512 --providers $BE --reps 3 --no-check $KT"
stage ab_tc 80 30 "GRAPHSMILE_CUDA_TENSOR_CORES=0 $TC_AB; GRAPHSMILE_CUDA_TC_DTILES=1 $TC_AB"
NLL_AB="$OPS --preset gpu-shift --sections shift_loss --dtype float32 bfloat16 --providers $BE --reps 3 --no-check $KT"
stage ab_nll 60 25 "GRAPHSMILE_CUDA_SHIFT_NLL=two_pass $NLL_AB; GRAPHSMILE_CUDA_SHIFT_NLL=tiled GRAPHSMILE_CUDA_FAST_MATH=1 $NLL_AB"
stage model_triton 80 40 "$MODEL --preset gpu-targets --providers triton --reps 3"
# --- the rest -----------------------------------------------------------------------------------
STACK_LENGTHS="50 110 250 1000"; [ -n "$QUICK" ] && STACK_LENGTHS="20 50"
stage stack 90 30 "$OPS --sections stack,shift --lengths $STACK_LENGTHS --providers cuda,triton,dense,scatter,floor,cpu --reps 3 --budget-s 15"
stage suite 240 60 'GRAPHSMILE_TRITON_AUTOTUNE_CACHE=0 $PYTEST $XDIST tests --ignore=tests/test_cuda.py --ignore=tests/test_triton.py'

note "done in $(elapsed)s; files under $OUT"
echo "================ summary ================"
cat "$SUMMARY"
# what each T3 step's GPU time is made of (bench/model.py's profiled step: one line per case and provider)
if [ -f "$W/logs/model_cuda.log" ]; then
  echo "---- model_cuda.log: GPU time of one step by kind"
  grep -E '^  train step |^      [a-z]+ +[0-9.]+ [mu]?s in [0-9]+ launches' "$W/logs/model_cuda.log" | cut -c1-220
fi
# the benchmarks' verdict blocks, last, so they are in the tool's output tail
for f in "$W"/logs/ops_cuda.log "$W"/logs/model_cuda.log "$W"/logs/epoch.log "$W"/logs/epoch_compiled.log "$W"/logs/model_compiled.log "$W"/logs/ab_step_compiled.log "$W"/logs/ops_triton.log "$W"/logs/model_triton.log; do
  [ -f "$f" ] && { echo "---- $(basename "$f")"; sed -n '/^=== targets/,$p' "$f" | cut -c1-200 | tail -n 20; }
done
exit 0
