"""Shared machinery of the graphsmile benchmarks (bench/ops.py, bench/model.py).

- environment metadata stored with every result (device, CPU model / GPU name, torch, threads,
  git commit, date);
- timing: forward/backward timed separately with a device sync, median / min / p20 / p80 over
  repetitions after warm-up, repetitions cut down to fit a per-measurement time budget;
- memory: CPU peak RSS delta of a fresh subprocess (``ru_maxrss``), peak of torch's own CPU
  allocations (profiler memory events), CUDA ``max_memory_allocated``;
- isolation: each (section, provider, case) can run in a fresh child process with a wall-clock
  limit, so a crash, an out-of-memory kill or a timeout is recorded, not fatal;
- JSON-lines result files (one object per measurement, appended).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# run as `python bench/ops.py` from a checkout: this tree's graphsmile, unless the caller chose
# another one on PYTHONPATH (host.py --compare-tree's children measure the other tree)
if str(REPO) not in sys.path and not os.environ.get("GRAPHSMILE_BENCH_TREE"):
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

CHILD_MARKER = "BENCH_RESULT_JSON "

# Peak DRAM bandwidth by GPU name (vendor data sheets), for "achieved / peak". Matched by
# substring, most specific first. Unknown GPUs get None; the measured copy bandwidth is
# stored as well and is the better yardstick anyway.
GPU_PEAK_BW_GBPS = [
    ("GH200", 4000.0),  # before "H200", which it contains
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # SXM5 80GB
    ("H800", 3350.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-40GB", 1555.0),
    ("A100", 1555.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("V100", 900.0),
    ("T4", 320.0),
]


# --- environment --------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def gpu_peak_bandwidth_gbps(name: str) -> Optional[float]:
    for key, bw in GPU_PEAK_BW_GBPS:
        if key.lower() in name.lower():
            return bw
    return None


def git_info() -> Dict[str, Any]:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return ""

    commit = git("rev-parse", "HEAD")
    if not commit:  # a copy of the tree without .git (the GPU machines): the commit is passed in
        return {"git_commit": os.environ.get("GRAPHSMILE_GIT_COMMIT") or None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def env_info(device: str, dtype: str) -> Dict[str, Any]:
    """Metadata stored with every result record."""
    import graphsmile.ops as gops

    info = {
        "device": "cuda" if device.startswith("cuda") else "cpu",
        "device_name": device_name(device),
        "dtype": dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "graphsmile_extension": bool(gops.HAS_EXTENSION),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        info["cuda"] = torch.version.cuda
        info["gpu_peak_bw_gbps"] = gpu_peak_bandwidth_gbps(info["device_name"])
        # which 16-bit forward kernel the CUDA backend runs (csrc/cuda/window_propagate_cuda.cu)
        info["cuda_tensor_cores"] = os.environ.get("GRAPHSMILE_CUDA_TENSOR_CORES", "1") != "0"
        # feature tiles per block of the tensor-core forward (its coefficients staged once for them)
        info["cuda_tc_dtiles"] = os.environ.get("GRAPHSMILE_CUDA_TC_DTILES") or "4"
        # which fused shift-loss kernels (csrc/cuda/shift_pair_cuda.cu): auto, tiled or two_pass,
        # and whether the tiled kernel's fast intrinsics are on
        info["cuda_shift_nll"] = os.environ.get("GRAPHSMILE_CUDA_SHIFT_NLL") or "auto"
        info["cuda_fast_math"] = os.environ.get("GRAPHSMILE_CUDA_FAST_MATH", "0") == "1"
        # the staged fp32/fp64 forward's feature tiles per block, recorded only when it runs (unset
        # or 0: the original FFMA forward, as in every record before it existed)
        ffma = os.environ.get("GRAPHSMILE_CUDA_FFMA_DTILES", "")
        if ffma not in ("", "0"):
            info["cuda_ffma_dtiles"] = ffma
        # the split backward pass B's feature steps per block, likewise only when it runs
        fsplit = os.environ.get("GRAPHSMILE_CUDA_ROWS_FSPLIT", "")
        if fsplit not in ("", "0"):
            info["cuda_rows_fsplit"] = fsplit
    info.update(git_info())
    return info


def start(args) -> bool:
    """The common start of a benchmark's main(): ``--threads`` (if given) and, for a CUDA
    ``--device``, the check that there is one (prints why not). False: exit with status 2."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device here", file=sys.stderr)
        return False
    return True


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def parse_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise SystemExit(f"--dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


# --- memory -------------------------------------------------------------------------------


def mem_available_bytes(device: str) -> int:
    """Memory a new measurement may use: CUDA free memory, or MemAvailable of /proc/meminfo."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    avail = _proc_kib("/proc/meminfo", "MemAvailable")
    return avail if avail is not None else int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return maxrss_bytes()


def maxrss_bytes() -> int:
    """High-water mark of the resident set of this process (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if sys.platform == "darwin" else 1024)


def _proc_kib(path: str, field: str) -> Optional[int]:
    """Bytes of a ``field:  N kB`` line of a /proc file; None where there is none (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _status_kib(field: str) -> Optional[int]:
    return _proc_kib("/proc/self/status", field)


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory of the code run between :meth:`start` and :meth:`stop`.

    - CUDA: ``torch.cuda.max_memory_allocated()`` minus what was allocated at ``start``.
    - CPU, ``isolated`` (a fresh process per measurement): peak RSS (``VmHWM``, reset at
      ``start`` where the kernel allows, else ``ru_maxrss``) minus the RSS at ``start``. Counts
      everything the process touches (torch, BLAS, kernels' own buffers, allocator slack).
    - CPU in-process: nothing here (the caller adds the profiler's allocation peak).
    """

    def __init__(self, device: str, isolated: bool):
        self.gpu = device.startswith("cuda")
        self.isolated = isolated

    def start(self) -> None:
        import gc

        gc.collect(1)  # the young generations (where the pre-warm's garbage is): a full pass costs ~0.3 s
        if self.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif self.isolated:
            self.hwm_reset = reset_peak_rss()
            self.rss0 = rss_bytes()
            self.maxrss0 = maxrss_bytes()

    def stop(self) -> tuple:
        """Returns ``(details dict, primary bytes or None, method string or None)``."""
        if self.gpu:
            torch.cuda.synchronize()
            peak = int(torch.cuda.max_memory_allocated() - self.base)
            return {"cuda_peak": peak}, peak, "torch.cuda.max_memory_allocated minus allocated before the first run"
        if self.isolated:
            hwm = _status_kib("VmHWM") if self.hwm_reset else None
            peak_abs = hwm if hwm is not None else maxrss_bytes()
            d = {"peak_rss_delta": int(peak_abs - self.rss0), "rss_before": int(self.rss0), "hwm_reset": bool(self.hwm_reset and hwm is not None)}
            if not d["hwm_reset"]:
                # the process peak from before start may hide this run's peak: then it is at most this
                d["rss_peak_unchanged"] = peak_abs <= self.maxrss0
            return d, d["peak_rss_delta"], "fresh process: peak RSS during the runs minus RSS before them (after a tiny warm-up)"
        return {}, None, None


def measure_with_memory(step: Callable[[], Dict[str, float]], device: str, spec: Dict[str, Any],
                        prewarm: Optional[Callable[[], Any]] = None, after_first: Optional[Callable[[], Any]] = None) -> tuple:
    """Pre-warm (lazy initialisation of libraries and kernels on a tiny problem, so it does not
    count as this problem's memory), then :func:`measure` under a :class:`MemoryProbe`, then --
    on a CPU, time permitting -- one more run under the profiler for the peak of torch's own
    allocations. Returns ``(times, mem details, primary peak bytes, method)``."""
    if prewarm is not None:
        prewarm()
    t0 = time.perf_counter()
    probe = MemoryProbe(device, bool(spec.get("isolated")))
    probe.start()

    def first():
        r = step()
        if after_first is not None:
            after_first()
        return r

    times = measure(step, device, spec["reps"], spec["warmup"], spec["budget_s"], first=first)
    mem, primary, method = probe.stop()
    if not device.startswith("cuda"):
        mem["peak_alloc"] = None
        if time.perf_counter() - t0 + times["total"]["median"] <= 1.5 * spec["budget_s"]:
            _, mem["peak_alloc"] = profiled_cpu_peak(step)
        if primary is None:
            primary, method = mem["peak_alloc"], "torch CPU allocations during one run (profiler memory events)"
    return times, mem, primary, method


def profiled_cpu_peak(fn: Callable[[], Any]) -> tuple:
    """Runs ``fn()`` under the torch profiler with memory events and returns
    ``(fn's result, peak bytes of torch CPU allocations made during fn)`` -- the running sum of
    allocations minus frees, in time order, maximised. Tensors alive before ``fn`` are not
    counted; memory a kernel allocates outside torch's allocator (std::vector, BLAS buffers)
    is not seen. ``None`` as the peak if the profiler's event API is unavailable."""
    try:
        from torch.profiler import ProfilerActivity, profile

        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    except Exception:  # profiler unavailable: run plainly
        return fn(), None
    # kineto prints start/stop lines, and a warning for every tensor allocated before and freed
    # during the profile, on fd 2: silenced (Python exceptions still propagate)
    with _quiet_stderr():
        try:
            prof.__enter__()
        except Exception:
            return fn(), None
        try:
            out = fn()
        finally:
            prof.__exit__(None, None, None)
    try:
        evs = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        cur = peak = 0
        for e in sorted(evs, key=lambda e: e.start_ns()):
            if "cpu" not in str(e.device_type()).lower():
                continue
            cur += e.nbytes()
            peak = max(peak, cur)
        return out, int(peak)
    except Exception:
        return out, None


class _quiet_stderr:
    """Silences file descriptor 2 (C++ log lines) inside the block."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        return False


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(b) >= div:
            return f"{b / div:.2f} {unit}"
    return f"{int(b)} B"


def fmt_s(t: Optional[float]) -> str:
    if t is None:
        return "-"
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


# --- timing -------------------------------------------------------------------------------


# --- the CUDA extension's opt-in launch options ---------------------------------------------

#: The options :func:`env_info` records (``cuda_*``, from the ``GRAPHSMILE_CUDA_*`` variables) and
#: their values when not set: a record whose values differ ran a kernel variant (bench/ab.py's
#: variants, the verdict lines' labels).
CUDA_OPTION_DEFAULTS: Dict[str, Any] = {
    "cuda_ffma_dtiles": None, "cuda_rows_fsplit": None, "cuda_tensor_cores": True, "cuda_tc_dtiles": "4",
    "cuda_shift_nll": "auto", "cuda_fast_math": False,
}


def differs_from_default(value: Any, default: Any) -> bool:
    """Compared as text: records written before an option existed lack it (``None``: the
    default), and a JSON round trip may turn "4" into 4."""
    return value is not None and str(value) != str(default)


# --- what the GPU's time is made of --------------------------------------------------------

#: Kinds of device activity, tried in order on each kineto event name: the first pattern that
#: matches names the kind. graphsmile's kernels (CUDA: ``graphsmile::gpu::...``; Triton: ours
#: are ``_spmm_*``, ``_norm_*``, ``_pair_*``); cuBLAS/cuBLASLt/CUTLASS matrix products; the
#: optimiser's fused and multi-tensor kernels; inductor's generated kernels (``--compile``);
#: copies and memsets; the rest of aten (elementwise, reductions, softmax, dropout, cuDNN's
#: batch norm, ...).
KERNEL_KINDS = (
    ("graph ops", r"graphsmile::|^_(spmm|norm|pair)_\w*kernel"),
    ("optimiser", r"multi_tensor_apply|fused_adam|FusedAdam|_fused_adamw"),
    ("GEMM", r"gemm|gemv|cutlass|xmma|splitKreduce|cublas"),
    ("inductor", r"^triton_"),
    ("copies", r"^Memcpy|^Memset|memcpy|memset"),
    ("aten", r"at::|at_cuda_detail|cub::|c10::|cudnn|softmax|elementwise|reduce|nll_loss|dropout|batch_norm|index"),
)


def kernel_kind(name: str) -> str:
    """The kind (:data:`KERNEL_KINDS`) of a device activity named ``name``; ``"other"``."""
    for kind, pattern in KERNEL_KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def summarise_kernels(per_name: Dict[str, Sequence[float]], top: int = 12) -> Dict[str, Any]:
    """``per_name``: activity name -> (launches, seconds). Returns ``kernel_time_s`` (their sum:
    the device's busy time on one stream), ``launches``, ``kinds`` ({kind: [launches, seconds]},
    largest first) and ``top_kernels`` (the ``top`` largest as ``[name, launches, seconds]``)."""
    kinds: Dict[str, List[float]] = {}
    for name, (n, t) in per_name.items():
        acc = kinds.setdefault(kernel_kind(name), [0, 0.0])
        acc[0] += int(n)
        acc[1] += float(t)
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "kernel_time_s": sum(float(t) for _, t in per_name.values()),
        "launches": sum(int(n) for n, _ in per_name.values()),
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1][1])),
        "top_kernels": [[name[:160], int(n), float(t)] for name, (n, t) in ranked],
    }


def kernel_profile(fn: Callable[[], Any], top: int = 12) -> Dict[str, Any]:
    """``fn()`` once under torch.profiler (CUDA): what its device time is made of, as
    :func:`summarise_kernels` (every kernel, memcpy and memset is one kineto event; their times
    are summed per name). The device is synchronised before and after ``fn``.

    kineto may leave CUPTI attached after a profile and slow later launches in the process
    (pytorch#144455): ``TEARDOWN_CUPTI=1`` (torch's default since pytorch#146604, in 2.7) is set
    unless set already, and callers profile after their timed measurements. (The first H200
    run's epoch benchmark timed its second data path after the first one's profile: the same
    250 ms.)"""
    os.environ.setdefault("TEARDOWN_CUPTI", "1")
    from torch.profiler import ProfilerActivity, profile

    on_gpu = torch.cuda.is_available()  # without CUDA there are no device events: zeros (the API is exercised)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    if on_gpu:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        fn()
        if on_gpu:
            torch.cuda.synchronize()
    per_name: Dict[str, List[float]] = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            acc = per_name.setdefault(ev.name, [0, 0.0])
            acc[0] += 1
            acc[1] += ev.device_time_total / 1e6
    return summarise_kernels(per_name, top)


def kernel_kinds_line(prof: Dict[str, Any], min_share: float = 0.01) -> str:
    """One line: ``12.8 ms in 612 launches: graph ops 7.9 ms (62%), GEMM 2.6 ms (20%), ...``
    (kinds under ``min_share`` of the total left out)."""
    total = prof.get("kernel_time_s") or 0.0
    parts = [f"{kind} {fmt_s(t)} ({100 * t / total:.0f}%)" for kind, (n, t) in prof.get("kinds", {}).items()
             if total > 0 and t >= min_share * total]
    return f"{fmt_s(total)} in {prof.get('launches', 0)} launches" + (": " + ", ".join(parts) if parts else "")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (as numpy's default), q in [0, 100]."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(xs: Sequence[float]) -> Dict[str, Any]:
    if not xs:
        return {"reps": 0}
    return {
        "median": percentile(xs, 50),
        "min": min(xs),
        "p20": percentile(xs, 20),
        "p80": percentile(xs, 80),
        "mean": sum(xs) / len(xs),
        "reps": len(xs),
        "all": [round(x, 6) for x in xs],
    }


class BudgetExceeded(Exception):
    pass


def measure(
    step: Callable[[], Dict[str, float]],
    device: str,
    reps: int,
    warmup: int,
    budget_s: float,
    first: Optional[Callable[[], Dict[str, float]]] = None,
) -> Dict[str, Any]:
    """Times ``step()`` (which returns its phase times, e.g. ``{"fwd": .., "total": ..}``).

    ``first`` (default ``step``) is the first warm-up (used to collect memory and outputs).
    Then ``warmup - 1`` further warm-ups and up to ``reps`` timed repetitions, stopping early
    when the next one would end after ``budget_s`` (counted from the start); at least one timed
    repetition runs whenever the first warm-up finished within the budget. Raises
    :class:`BudgetExceeded` if the first warm-up alone took longer than the budget.
    """
    t0 = time.perf_counter()
    w = (first or step)()
    t_est = w["total"]
    if time.perf_counter() - t0 > budget_s:
        raise BudgetExceeded(f"one run took {t_est:.1f} s, over the budget of {budget_s:.0f} s")
    for _ in range(max(0, warmup - 1)):
        if time.perf_counter() - t0 + t_est > budget_s:
            break
        t_est = step()["total"]
    phases: Dict[str, List[float]] = {}
    for i in range(reps):
        if i > 0 and time.perf_counter() - t0 + t_est > budget_s:
            break
        r = step()
        t_est = r["total"]
        for k, v in r.items():
            phases.setdefault(k, []).append(v)
    out = {k: summarize(v) for k, v in phases.items()}
    out["warmup_first_s"] = w["total"]
    out["budget_limited"] = len(phases.get("total", [])) < reps
    return out


# --- isolation ----------------------------------------------------------------------------


def run_child(script: Path, spec: Dict[str, Any], timeout_s: float) -> Dict[str, Any]:
    """Runs ``script --child '<spec json>'`` in a fresh interpreter and returns the dict the
    child printed after :data:`CHILD_MARKER`. Timeouts, kills (out of memory) and crashes come
    back as ``{"status": ..., "reason": ...}``."""
    cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        # own process group so a timeout can end the child and anything it started
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    except OSError as exc:
        return {"status": "error", "reason": f"could not start child: {exc}"}
    try:
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.communicate()
        return {"status": "timeout", "reason": f"killed after {timeout_s:.0f} s (time budget)"}
    for line in reversed(out.splitlines()):
        if line.startswith(CHILD_MARKER):
            return json.loads(line[len(CHILD_MARKER):])
    if p.returncode in (-signal.SIGKILL, 137):
        return {"status": "oom", "reason": f"child killed by SIGKILL (out of memory?), rc={p.returncode}"}
    tail = (err or out).strip().splitlines()[-6:]
    return {"status": "error", "reason": f"child exited with rc={p.returncode}: " + " | ".join(tail)}


def child_main(argv: List[str], fn: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
    """Entry point of a child: parses the spec, runs ``fn(spec)``, prints the result line."""
    spec = json.loads(argv[0])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    try:
        res = fn(spec)
    except Exception as exc:  # recorded by the parent
        res = classify_exception(exc)
    print(CHILD_MARKER + json.dumps(res, default=_json_default), flush=True)


def classify_exception(exc: BaseException) -> Dict[str, Any]:
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BudgetExceeded):
        return {"status": "timeout", "reason": str(exc)}
    if isinstance(exc, MemoryError) or "out of memory" in msg.lower() or "DefaultCPUAllocator: can't allocate" in msg:
        return {"status": "oom", "reason": msg[:500]}
    return {"status": "error", "reason": msg[:500], "traceback": traceback.format_exc()[-2000:]}


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


# --- results ------------------------------------------------------------------------------


def append_jsonl(path: Path, records: Iterable[Dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r, default=_json_default) + "\n")


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    out = []
    path = Path(path)
    if not path.exists():
        return out
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"warning: {path}:{i + 1}: not JSON, skipped", file=sys.stderr)
    return out


class FailureMemo:
    """Remembers, per key (section, provider), the smallest size that timed out or ran out of
    memory, so larger sizes of that key are skipped instead of burning the budget again."""

    def __init__(self):
        self._failed: Dict[Any, tuple] = {}

    def note(self, key, size: int, status: str) -> None:
        if status in ("timeout", "oom") and (key not in self._failed or size < self._failed[key][0]):
            self._failed[key] = (size, status)

    def reason(self, key, size: int) -> Optional[str]:
        if key in self._failed and size > self._failed[key][0]:
            s, st = self._failed[key]
            return f"skipped: {st} at a smaller size ({s} utterances)"
        return None
