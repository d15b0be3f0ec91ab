"""Benchmark of graphsmile's graph ops against the original's math and baselines.

    python bench/ops.py                        # CPU, B=16, D=512, K=7, L in 50 110 250 1000
    python bench/ops.py --quick                # a small end-to-end run (results/quick/)
    python bench/ops.py --device cuda          # every GPU backend (cuda, triton, reference)
    python bench/ops.py --lengths 500 2000 --single      # + one 20,000-utterance dialogue
    python bench/ops.py --providers cpu,floor --sections stack
    python bench/ops.py --device cuda --isolate none --preset gpu-targets    # issue #8 targets 1 and 2

Sections (``--sections``):

- ``stack``: forward + backward of one GraphSmile graph module (``K`` layers
  ``h_{l+1} = propagate(h_l @ W_l) + b_l``, one normalisation per stack, the residual sum of
  ``LeakyReLU(Linear_l(h_l))``; see bench/baselines.py) on ``B`` dialogues of length ``L``,
  ``M = 2`` modalities, per provider: graphsmile's backends, ``dense`` (the original), ``scatter``
  (PyG-style), ``floor`` (no propagation).
- ``shift``: ``shift_pair_logits`` forward + backward per backend vs the original's ``[P, 2D]``
  pair embeddings (``dense``).
- ``shift_loss``: the shift head and its loss (mean NLL and the confusion counts the metrics
  need), forward + backward: ``shift_pair_nll`` per backend (fused, O(N) memory) vs
  ``unfused`` (``shift_pair_logits`` on our fastest backend, then log_softmax, NLL and argmax:
  the ``[P, 2]`` path) and the original (``dense``).
- ``propagate``: one propagation layer alone -- ``window_spmm`` with the normalisation
  precomputed, forward + backward with gradients to ``x``, the per-edge weights and the
  normalisation (as inside a layer of the stack) -- per backend and ``scatter``, with the
  achieved memory bandwidth of forward and backward (bytes model: :func:`propagate_bytes`),
  against the device's peak and a measured device copy on a GPU.

Presets (``--preset``, several may be given; explicit options override a preset's values):

- ``gpu-bandwidth`` (issue #8 target 1): ``propagate`` at D 256 and 512, fp32 and bf16, on 16
  dialogues of 3,200 (102,400 nodes) and one dialogue of 60,000 (120,000 nodes), our GPU backends;
- ``gpu-shift`` (target 2): ``shift`` and ``shift_loss`` with ``shift_win = -1``, one
  ``propagate`` layer and a one-layer ``stack`` at D = 512, all on one dialogue of 20,000
  utterances;
- ``gpu-targets``: both (gpu-shift first). ``--quick`` scales a preset down to a CPU-sized smoke run.

Every measurement runs in a fresh subprocess (``--isolate subprocess``, the default) with a
wall-clock limit, so its peak RSS is its own and a crash, out-of-memory kill or timeout is
recorded, not fatal; ``--isolate none`` runs in-process (CUDA caches are emptied and peak
statistics reset between measurements). Before timing, every provider's output and gradients
are compared with the ``reference`` backend on a small batch, and at every size the aggregate
fingerprints of the outputs and gradients are compared across providers. Results are appended,
one JSON object per measurement, to ``bench/results/ops.jsonl``; the issue #8 / SPEC 9 target
verdicts are printed at the end and appended to ``ops_targets.jsonl`` next to it. See
bench/README.md.
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (also puts the repo on sys.path)
from common import fmt_bytes, fmt_s  # noqa: E402

import torch  # noqa: E402

import baselines  # noqa: E402
import graphsmile.ops as gops  # noqa: E402

SECTIONS = ("stack", "shift", "shift_loss", "propagate")
M = 2  # modalities per graph module (GraphSmile's tv, ta, va)
SCRIPT = Path(__file__).resolve()

# issue #8 targets (on a GPU)
TARGET_BW_FRAC = 0.60        # propagation forward and backward: >= 60% of the device's peak bandwidth
TARGET_BW_MIN_DIM = 256      # ... at D >= 256
TARGET_BW_MIN_NODES = 100_000  # ... on at least 100k nodes
TARGET_SHIFT_RATIO = 0.10    # shift_pair_logits (shift_win -1, 20,000 utterances) < 10% of one propagation layer
TARGET_SHIFT_MIN_L = 20_000
TARGET_SHIFT_DIM = 512


# --- providers ----------------------------------------------------------------------------


def section_providers(section: str, device: str) -> List[str]:
    ours = baselines.available_backends(device)
    if section == "stack":
        return ours + ["dense", "scatter", "floor"]
    if section == "shift":
        return ours + ["dense"]
    if section == "shift_loss":
        return ours + ["unfused", "dense"]
    return ours + ["scatter"]


def is_ours(p: str) -> bool:
    return p in baselines.OUR_BACKENDS


def fast_backends(device: str) -> List[str]:
    """Our backends that are meant to be fast on ``device`` (``reference`` left out unless it is
    the only one): on a GPU ``cuda`` and ``triton``, on a CPU ``cpu``."""
    ours = baselines.available_backends(device)
    return [p for p in ours if p != "reference"] or ours


# --- presets ------------------------------------------------------------------------------

# Per preset: the options it sets ("full", or "quick" with --quick) and the providers per
# section ("ours" = fast_backends(device); "+name" adds a baseline). Options given on the
# command line win over a preset's.
PRESETS: Dict[str, Dict[str, Any]] = {
    "gpu-bandwidth": {
        "help": "issue #8 target 1: propagate fwd/bwd bandwidth, D 256 512, fp32 bf16, 16x3200 (102,400 nodes) and 1x60000",
        "full": dict(sections=["propagate"], dim=[256, 512], dtype=["float32", "bfloat16"], lengths=[3200], batch=16,
                     single=60000, reps=5, budget_s=30.0),
        "quick": dict(sections=["propagate"], dim=[16, 32], dtype=["float32"], lengths=[40], batch=2, single=60, reps=2,
                      budget_s=30.0),
        "providers": {"propagate": ["ours"]},
    },
    "gpu-shift": {
        "help": "issue #8 target 2: shift_pair_logits (shift_win -1) vs one propagate layer (and a 1-layer stack), D 512, 1x20000",
        "full": dict(sections=["propagate", "stack", "shift_loss", "shift"], dim=[512], dtype=["float32"], lengths=[], batch=16,
                     single=20000, shift_win=-1, layers=1, reps=5, budget_s=60.0),
        "quick": dict(sections=["propagate", "stack", "shift_loss", "shift"], dim=[32], dtype=["float32"], lengths=[], batch=2,
                      single=120, shift_win=-1, layers=1, reps=2, budget_s=30.0),
        "providers": {"shift": ["ours", "dense"], "shift_loss": ["ours", "unfused"], "propagate": ["ours"],
                      "stack": ["ours", "floor"]},
    },
}
PRESET_GROUPS = {"gpu-targets": ["gpu-shift", "gpu-bandwidth"]}  # the short one first


def expand_presets(names: Optional[List[str]]) -> List[Optional[str]]:
    if not names:
        return [None]
    out: List[Optional[str]] = []
    for n in names:
        for p in PRESET_GROUPS.get(n, [n]):
            if p not in out:
                out.append(p)
    return out


# --- one measurement (runs in the child, or in-process with --isolate none) ----------------


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    """A seeded generator on the device the inputs live on (CUDA: generated there, which for
    the GPU presets' gigabyte-sized inputs is much faster than on the host)."""
    if device.startswith("cuda"):
        return torch.Generator(device=device).manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, shape, dev, dt) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=g.device).to(device=dev, dtype=dt)


def _rand(g: torch.Generator, shape, dev, dt) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=g.device).to(device=dev, dtype=dt)


def _identity(x):
    return x


def _zero_grads(tensors) -> None:
    for t in tensors:
        t.grad = None


def _fingerprint(tensors, chunk: int = 1 << 20) -> List[float]:
    """Aggregates that agree across correct providers (abs sums and square sums, float64).
    Computed in chunks of ``chunk`` elements: it runs inside the memory probe (the first
    warm-up), where float64 copies of a whole output (a [4e8, 2] shift output: 6.4 GB) would
    count as the op's peak."""
    fp = []
    for t in tensors:
        if t is None:
            fp += [0.0, 0.0]
            continue
        flat = t.detach().reshape(-1)
        s1 = s2 = 0.0
        for i in range(0, flat.numel(), chunk):
            part = flat[i:i + chunk].double()
            s1 += float(part.abs().sum())
            s2 += float(part.pow(2).sum())
        fp += [s1, s2]
    return fp


def release_device_memory(device: str) -> None:
    """Between in-process measurements: drop garbage, hand cached CUDA blocks back and reset the
    peak statistics, so the next measurement's free memory (guard) and peak are its own."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _busy_ns(intervals: List[tuple]) -> int:
    """Length of the union of ``(start, end)`` intervals (ns)."""
    total, cur_s, cur_e = 0, None, None
    for a, b in sorted(intervals):
        if cur_e is None or a > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def cuda_busy_time(fn) -> tuple:
    """Runs ``fn()`` under the profiler and returns ``(fn's result, seconds
    the device was busy -- union of its kernels, memsets and copies --, number of device
    activities)``: the device time of the op without launch gaps and host overhead."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with common._quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            out = fn()
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
    evs = [e for e in prof.profiler.kineto_results.events() if "CUDA" in str(e.device_type()).upper()]
    busy = _busy_ns([(e.start_ns(), e.end_ns()) for e in evs]) / 1e9
    if not evs or not 0 < busy <= 1.05 * wall:  # dropped events or timestamps off the clock (seen with kineto)
        raise ValueError(f"profiler device time {busy:.3g} s over {len(evs)} activities is inconsistent with {wall:.3g} s wall")
    return out, busy, len(evs)


def kernel_times(forward, backward, zero, iters: int = 3) -> Dict[str, Any]:
    """Device-busy time of forward and of backward (median of ``iters``, profiled separately)."""
    fw, bw, nf, nb = [], [], 0, 0
    for _ in range(iters):
        zero()
        out, t, nf = cuda_busy_time(forward)
        fw.append(t)
        _, t, nb = cuda_busy_time(lambda: backward(out))
        bw.append(t)
        del out
    zero()
    return {"fwd": common.percentile(fw, 50), "bwd": common.percentile(bw, 50), "fwd_all": fw, "bwd_all": bw,
            "device_activities_fwd": nf, "device_activities_bwd": nb,
            "method": "CUDA profiler: union of the device activities (kernels, memsets, copies) of one forward / backward"}


#: GPU steps shorter than this are repeated back to back within one timed step (at most 200 times)
INNER_TARGET_S = 20e-3


def _timed_step(device: str, forward, backward, zero):
    """A step: ``zero()`` (drop gradients), forward (returns the output), backward.

    CPU: wall-clock with ``perf_counter``. CUDA: CUDA events around forward and backward (no
    host sync inside), ``holder["inner"]`` iterations per step averaged, so launch and sync
    latency do not swamp sub-millisecond kernels (the caller raises ``inner`` after the first
    run when a step is that short)."""
    holder: Dict[str, Any] = {"inner": 1}
    on_gpu = device.startswith("cuda")

    def step() -> Dict[str, float]:
        n = holder["inner"]
        if on_gpu:
            evs = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(n)]
            torch.cuda.synchronize()
            out = None
            for e in evs:
                out = None  # the previous iteration's output is not part of this one's peak
                zero()
                e[0].record()
                out = forward()
                e[1].record()
                backward(out)
                e[2].record()
            torch.cuda.synchronize()
            fwd = sum(e[0].elapsed_time(e[1]) for e in evs) / n / 1e3
            bwd = sum(e[1].elapsed_time(e[2]) for e in evs) / n / 1e3
        else:
            fwd = bwd = 0.0
            for _ in range(n):
                zero()
                t0 = time.perf_counter()
                out = forward()
                t1 = time.perf_counter()
                backward(out)
                t2 = time.perf_counter()
                fwd += t1 - t0
                bwd += t2 - t1
            fwd, bwd = fwd / n, bwd / n
        holder["out"] = out
        return {"fwd": fwd, "bwd": bwd, "total": fwd + bwd}

    return step, holder


def setup_stack(spec, dev, dt):
    lens, D, K = spec["lengths"], spec["dim"], spec["layers"]
    wp, wf = spec["win_p"], spec["win_f"]
    n = M * sum(lens)
    E = gops.num_edges(lens, M, wp, wf)
    capacity = max(spec["dense_capacity"], E)
    model = baselines.GraphStack(D, K, capacity, seed=spec["seed"]).to(device=dev, dtype=dt)
    g = _gen(spec["seed"] + 1, dev)
    x = _randn(g, (n, D), dev, dt).requires_grad_()
    gout = _randn(g, (n, D), dev, dt)
    prepare = baselines.make_prepare(spec["provider"], lens, M, wp, wf, spec["dense_capacity"])
    params = [x] + list(model.parameters())

    def forward():
        return model(x, prepare, E)

    def backward(out):
        out.backward(gout)

    def grads():
        return [x.grad, model.weights[0].grad, model.biases[0].grad, model.fcs[0].weight.grad, model.edge_weight.grad]

    return dict(forward=forward, backward=backward, params=params, grads=grads, extra={"E": E, "nodes": n})


def _shift_head_inputs(spec, dev, dt, seed_offset: int):
    """The shift sections' leaves: features ``u [N, D]`` (GraphSmile passes them as ``u`` and
    ``v``), the head's ``weight [2, 2D]`` (uniform, Linear-like scale) and ``bias [2]``; with
    the generator for further draws and ``P``."""
    lens, D = spec["lengths"], spec["dim"]
    g = _gen(spec["seed"] + seed_offset, dev)
    u = _randn(g, (sum(lens), D), dev, dt).requires_grad_()
    weight = ((_rand(g, (2, 2 * D), dev, torch.float32) * 2 - 1) / (2 * D) ** 0.5).to(dt).requires_grad_()
    bias = (_rand(g, (2,), dev, torch.float32) * 0.1).to(dt).requires_grad_()
    return g, u, weight, bias, gops.num_shift_pairs(lens, spec["shift_win"])


def setup_shift(spec, dev, dt):
    lens, sw = spec["lengths"], spec["shift_win"]
    g, u, weight, bias, P = _shift_head_inputs(spec, dev, dt, 2)
    gout = _randn(g, (P, 2), dev, dt)
    provider = spec["provider"]

    def forward():
        # GraphSmile passes the same tensor as u and v
        return gops.shift_pair_logits(u, u, lens, sw, weight, bias, backend=provider)

    def backward(out):
        out.backward(gout)

    return dict(forward=forward, backward=backward, params=[u, weight, bias],
                grads=lambda: [u.grad, weight.grad, bias.grad], extra={"P": P})


def setup_shift_loss(spec, dev, dt):
    """The shift head and its loss as a training step needs them: the mean NLL (back-propagated)
    and the ``[2, 2]`` confusion counts (for the metrics). Ours: ``shift_pair_nll``; ``unfused``:
    ``shift_pair_logits`` on our fastest backend, log_softmax, NLL, argmax and a bincount (the
    ``[P, 2]`` path, labels precomputed untimed as the trainer does); ``dense``: the original's
    pair embeddings, then the same loss."""
    lens, sw = spec["lengths"], spec["shift_win"]
    g, u, weight, bias, P = _shift_head_inputs(spec, dev, dt, 3)
    sentiment = (_rand(g, (u.shape[0],), dev, torch.float32) * 3).long().clamp_(max=2)
    provider = spec["provider"]
    if provider == "unfused":
        backend = fast_backends(dev)[0]
        labels = gops.shift_pair_labels(sentiment, lens, sw)

        def forward():
            z = gops.shift_pair_logits(u, u, lens, sw, weight, bias, backend=backend)
            total, confusion = gops.reference.nll_from_logits(z, labels)   # the trainer's "logits" mode
            return total / P, confusion
    else:
        def forward():
            return gops.shift_pair_nll(u, u, lens, sw, weight, bias, sentiment, backend=provider)

    def backward(out):
        out[0].backward()

    return dict(forward=forward, backward=backward, params=[u, weight, bias], output=lambda out: out[0],
                grads=lambda: [u.grad, weight.grad, bias.grad], extra={"P": P})


def setup_propagate(spec, dev, dt):
    """One propagation layer as inside the stack: ``y = window_spmm(x, w, s)`` with the
    per-edge weights ``w`` (``E`` entries) and the normalisation ``s`` (one per node) as leaves,
    backward to all three (``grad_x``, ``grad_w``, ``grad_s``). ``s`` is computed once,
    untimed, as the stack computes it once per forward for all its layers. ``scatter``: the same
    layer PyG-style (per-edge ``s_row w s_col``, gather, ``[E, D]`` messages, ``index_add``)."""
    lens, D = spec["lengths"], spec["dim"]
    wp, wf = spec["win_p"], spec["win_f"]
    n = M * sum(lens)
    E = gops.num_edges(lens, M, wp, wf)
    g = _gen(spec["seed"] + 3, dev)
    x = _randn(g, (n, D), dev, dt).requires_grad_()
    w = (_rand(g, (E,), dev, dt) + 0.5).requires_grad_()
    gout = _randn(g, (n, D), dev, dt)
    provider = spec["provider"]
    with torch.no_grad():
        s = gops.window_norm(w, lens, M, wp, wf, "per_edge", "auto" if provider == "scatter" else provider).to(dt)
    s.requires_grad_()
    if provider == "scatter":
        row, col = gops.window_edge_index(lens, M, wp, wf, device=w.device)

        def forward():
            norm = s.index_select(0, row) * w * s.index_select(0, col)
            msg = x.index_select(0, col) * norm[:, None]  # [E, D]
            return torch.zeros_like(x).index_add(0, row, msg)
    else:
        def forward():
            return gops.window_spmm(x, w, s, lens, M, wp, wf, "per_edge", provider)

    def backward(out):
        out.backward(gout)

    return dict(forward=forward, backward=backward, params=[x, w, s], grads=lambda: [x.grad, w.grad, s.grad],
                extra={"E": E, "nodes": n})


SETUPS = {"stack": setup_stack, "shift": setup_shift, "shift_loss": setup_shift_loss, "propagate": setup_propagate}


def run_measurement(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Builds the inputs of one (section, provider, case), times it, measures its memory."""
    dev = spec["device"]
    dt = common.parse_dtype(spec["dtype"])
    setup = SETUPS[spec["section"]]
    on_gpu = dev.startswith("cuda")
    s = setup(spec, dev, dt)
    step, holder = _timed_step(dev, s["forward"], s["backward"], lambda: _zero_grads(s["params"]))
    notes: Dict[str, Any] = {}

    def prewarm():  # the same code path on a tiny batch: lazy initialisation is not this run's memory
        t = setup(dict(spec, lengths=[3, 2]), dev, dt)
        for _ in range(2):
            _zero_grads(t["params"])
            t["backward"](t["forward"]())
        del t
        if on_gpu:
            # one untimed run at this size, outside the memory probe: JIT compilation and (Triton)
            # autotuning for this problem's size class (the kernels' tuning key has a node-count
            # bucket, graphsmile/ops/triton_ops._size_bucket), not the tiny one's
            step()
            holder.pop("out", None)
            _zero_grads(s["params"])

    fingerprint: List[Optional[List[float]]] = [None]

    def step_or_first():
        r = step()
        out = holder.pop("out")
        if fingerprint[0] is None:  # the first warm-up: fingerprint of the outputs and gradients
            fingerprint[0] = _fingerprint([s.get("output", _identity)(out)] + s["grads"]())
            if on_gpu:
                # steps shorter than INNER_TARGET_S run back to back, so that the host issues an
                # iteration while the device runs the previous one, as in a training loop: a
                # single 1.5 ms propagate step after a sync also timed the host's latency to its
                # first kernel (the first H200 run: 0.50 ms of event time for a 0.26 ms forward)
                holder["inner"] = max(1, min(200, int(INNER_TARGET_S / max(r["total"], 1e-7))))
        del out
        return r

    times, mem, primary, method = common.measure_with_memory(step_or_first, dev, spec, prewarm=prewarm)
    if on_gpu and spec.get("kernel_times") and spec["section"] in ("propagate", "shift", "shift_loss"):
        try:  # device time without launch gaps: what the kernels themselves achieve
            notes["kernel_s"] = kernel_times(s["forward"], s["backward"], lambda: _zero_grads(s["params"]))
        except Exception as exc:
            notes["kernel_s"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "status": "ok",
        "time_s": times.pop("total"),
        "fwd_s": times.pop("fwd"),
        "bwd_s": times.pop("bwd"),
        "warmup_first_s": times["warmup_first_s"],
        "budget_limited": times["budget_limited"],
        "inner_iterations": holder["inner"],
        "peak_mem_bytes": primary,
        "mem_method": method,
        "mem": mem,
        "fingerprint": fingerprint[0],
        **notes,
        **s["extra"],
    }


# --- correctness before timing ------------------------------------------------------------


CHECK_LENGTHS = [37, 1, 18, 5]  # longer than the window span (35), a singleton, odd sizes


def correctness_check(section: str, providers: List[str], args) -> Dict[str, Dict[str, Any]]:
    """Runs every provider once on the same small batch and compares its output and gradients
    with the ``reference`` backend's. Returns ``{provider: {"ok", "max_rel_err", ...}}``.
    ``args``: one plan (scalar ``dim`` and ``dtype``).

    fp16/bf16: two computations in that precision differ by their own rounding errors, which
    grow over a stack's layers (the CPU kernels and the reference differed by 14% of the largest
    value in bf16 at 7 layers), so there each provider and the reference are compared with the
    float64 reference instead: ok when the provider's error is at most twice plain torch's
    (the reference backend in that precision) plus 1e-2, as the tests judge it."""
    dt = common.parse_dtype(args.dtype)
    low_precision = dt not in (torch.float32, torch.float64)
    tol = 1e-4 if not low_precision else 1e-2
    # the check is about the math: the capacity is made large enough for the check batch
    cap = max(args.dense_capacity, gops.num_edges(CHECK_LENGTHS, M, *args.win))
    spec_base = dict(section=section, lengths=CHECK_LENGTHS, dim=args.dim, layers=args.layers, win_p=args.win[0],
                     win_f=args.win[1], shift_win=args.shift_win, dense_capacity=cap, seed=args.seed,
                     device=args.device, dtype=args.dtype)
    results: Dict[str, List[torch.Tensor]] = {}
    errors: Dict[str, str] = {}

    def run_once(provider: str, dtype_name: str, dtype: torch.dtype) -> List[Optional[torch.Tensor]]:
        """The provider's output and gradients on the check batch, as float64 CPU tensors."""
        s = SETUPS[section](dict(spec_base, provider=provider, dtype=dtype_name), args.device, dtype)
        out = s["forward"]()
        s["backward"](out)
        out = s.get("output", _identity)(out)
        return [t.detach().double().cpu() if t is not None else None for t in [out] + s["grads"]()]

    # the reference backend is always run here, timed or not
    for p in (["reference"] if "reference" not in providers else []) + providers:
        if p == "floor":
            continue
        try:
            results[p] = run_once(p, args.dtype, dt)
        except Exception as exc:
            errors[p] = f"{type(exc).__name__}: {exc}"[:300]
    exact = run_once("reference", "float64", torch.float64) if low_precision and "reference" in results else None

    def rel_err(got, want):
        worst = 0.0
        for a, b in zip(got, want):
            if a is None or b is None:
                continue
            scale = float(b.abs().max()) or 1.0
            worst = max(worst, float((a - b).abs().max()) / scale)
        return worst

    ref = "reference" if "reference" in results else next(iter(results), None)
    ref_err = rel_err(results[ref], exact) if exact is not None else None
    out: Dict[str, Dict[str, Any]] = {}
    for p in providers:
        if p == "floor":
            out[p] = {"ok": None, "note": "no propagation: not comparable"}
        elif p in errors:
            out[p] = {"ok": False, "error": errors[p]}
        elif p == ref:
            out[p] = {"ok": True, "against": "self (the reference)"}
        elif exact is not None:
            worst = rel_err(results[p], exact)
            out[p] = {"ok": worst <= 2 * ref_err + tol, "max_rel_err": worst, "against": "reference in float64",
                      "reference_rel_err": ref_err, "tol": f"2 x reference_rel_err + {tol}"}
        else:
            worst = rel_err(results[p], results[ref])
            out[p] = {"ok": worst <= tol, "max_rel_err": worst, "against": ref, "tol": tol}
        out[p]["lengths"] = CHECK_LENGTHS
    return out


def fingerprint_check(fp: List[float], ref_fp: List[float], tol: float) -> Dict[str, Any]:
    worst = 0.0
    for a, b in zip(fp, ref_fp):
        worst = max(worst, abs(a - b) / max(abs(b), 1e-30))
    return {"ok": worst <= tol, "max_rel_err": worst, "tol": tol}


# --- driver -------------------------------------------------------------------------------


def build_cases(args) -> List[Dict[str, Any]]:
    cases = [{"label": f"{args.batch}x{L}", "B": args.batch, "L": L, "lengths": [L] * args.batch} for L in sorted(args.lengths)]
    if args.single:
        cases.append({"label": f"1x{args.single}", "B": 1, "L": args.single, "lengths": [args.single]})
    return cases


def guard(section: str, provider: str, case, args, avail: int) -> Optional[Dict[str, Any]]:
    """Returns a skip record (status, reason) when the run must not start."""
    lens = case["lengths"]
    isz = torch.empty((), dtype=common.parse_dtype(args.dtype)).element_size()
    if section == "stack" and provider == "dense":
        E = gops.num_edges(lens, M, *args.win)
        if E > args.dense_capacity:
            return {"status": "edge-capacity exceeded",
                    "reason": f"E = {E} edges > the original's per-edge capacity {args.dense_capacity}", "E": E}
    if section == "stack":
        need = baselines.estimate_stack_bytes(provider, lens, M, args.dim, args.layers, *args.win, isz)
    elif section == "shift":
        need = baselines.estimate_shift_bytes(provider, lens, args.dim, args.shift_win, isz)
    elif section == "shift_loss":
        need = baselines.estimate_shift_loss_bytes(provider, lens, args.dim, args.shift_win, isz)
    else:
        need = baselines.estimate_stack_bytes("scatter" if provider == "scatter" else provider, lens, M, args.dim, 1, *args.win, isz)
    if need > args.mem_safety * avail:
        return {"status": "skipped", "reason": f"skipped: would need ~{common.fmt_bytes(need)}, {common.fmt_bytes(avail)} available",
                "estimated_bytes": need}
    return None


def add_ratios(group: List[Dict[str, Any]]) -> None:
    """Baseline time / our time (how many times faster ours is), and ours / floor."""
    ok = {r["provider"]: r for r in group if r["status"] == "ok"}
    ours = [p for p in ok if is_ours(p)]
    for r in ok.values():
        r["ratio_to_ours"] = {p: r["time_s"]["median"] / ok[p]["time_s"]["median"] for p in ours if p != r["provider"]}
        r["ratio_to_ours_min"] = {p: r["time_s"]["min"] / ok[p]["time_s"]["min"] for p in ours if p != r["provider"]}
        if is_ours(r["provider"]) and "floor" in ok:
            r["vs_floor"] = r["time_s"]["median"] / ok["floor"]["time_s"]["median"]
            r["vs_floor_min"] = r["time_s"]["min"] / ok["floor"]["time_s"]["min"]


BYTES_MODEL = ("minimal traffic of one propagation layer; fwd: read x [n, D] + read w [E] + read s [n] + write y [n, D]; "
               "bwd: read grad_y [n, D] + read x [n, D] + read w [E] + read s [n] + write grad_x [n, D] + write grad_w [E] "
               "+ write grad_s [n] (y is not needed by the backward); bwd_issue: issue #8's count, read x, y, grad_y + "
               "write grad_x [n, D] + write grad_w [E] (the T1 verdict); every tensor in the run's dtype, each moved once")


def propagate_bytes(nodes: int, dim: int, edges: int, itemsize: int) -> Dict[str, int]:
    """Bytes a propagation layer must move at least (see :data:`BYTES_MODEL`): forward reads
    ``x``, the per-edge weights and the normalisation and writes ``y``; backward reads ``grad_y``,
    ``x``, the weights and the normalisation and writes ``grad_x``, ``grad_w``, ``grad_s``."""
    feat = nodes * dim * itemsize
    fwd = 2 * feat + edges * itemsize + nodes * itemsize
    bwd = 3 * feat + 2 * edges * itemsize + 2 * nodes * itemsize
    # issue #8's own count of the backward: "read x, y, grad y, write grad x and grad weights"
    # (it includes y, which our backward does not need); the T1 verdict uses it
    bwd_issue = 4 * feat + edges * itemsize
    return {"fwd": fwd, "bwd": bwd, "total": fwd + bwd, "bwd_issue": bwd_issue}


def add_bandwidth(rec: Dict[str, Any], env) -> None:
    """Achieved bandwidth of a ``propagate`` record: fwd, bwd and both, from the medians (and
    ``*_best`` from the minima), as fractions of the device's peak and of a measured copy."""
    if rec["status"] != "ok" or rec["op"] != "propagate":
        return
    isz = torch.empty((), dtype=common.parse_dtype(rec["dtype"])).element_size()
    nb = propagate_bytes(rec["nodes"], rec["D"], rec["E"], isz)
    bw: Dict[str, Any] = {"bytes_model": BYTES_MODEL, "fwd_bytes": nb["fwd"], "bwd_bytes": nb["bwd"],
                          "bwd_bytes_issue": nb["bwd_issue"]}
    for ph, key in (("fwd", "fwd_s"), ("bwd", "bwd_s"), ("bwd_issue", "bwd_s"), ("fwd_bwd", "time_s")):
        nbytes = nb["total" if ph == "fwd_bwd" else ph]
        bw[f"{ph}_GBps"] = nbytes / rec[key]["median"] / 1e9
        bw[f"{ph}_GBps_best"] = nbytes / rec[key]["min"] / 1e9
    peak = env.get("gpu_peak_bw_gbps")
    copy_bw = env.get("copy_bw_gbps")
    for ph in ("fwd", "bwd", "bwd_issue", "fwd_bwd"):
        if peak:
            bw[f"{ph}_frac_of_peak"] = bw[f"{ph}_GBps"] / peak
        if copy_bw:
            bw[f"{ph}_frac_of_copy"] = bw[f"{ph}_GBps"] / copy_bw
    if peak:
        bw["peak_GBps"] = peak
    if copy_bw:
        bw["copy_GBps"] = copy_bw
    ks = rec.get("kernel_s") or {}
    if ks.get("fwd") and ks.get("bwd"):  # device-busy time only (no launch gaps / host overhead)
        for ph in ("fwd", "bwd", "bwd_issue"):
            bw[f"kernel_{ph}_GBps"] = nb[ph] / ks[ph.split("_")[0]] / 1e9
            if peak:
                bw[f"kernel_{ph}_frac_of_peak"] = bw[f"kernel_{ph}_GBps"] / peak
    bw["target_frac_of_peak"] = TARGET_BW_FRAC
    rec["bandwidth"] = bw


def measure_copy_bandwidth(device: str, nbytes: Optional[int] = None) -> Optional[float]:
    """Achievable bandwidth of a plain device copy (read + write), GB/s: the best of 10 copies of
    ``nbytes`` (GPU: 1 GiB, timed with CUDA events; CPU: 256 MiB)."""
    gpu = device.startswith("cuda")
    nbytes = nbytes or (1 << 30 if gpu else 1 << 28)
    try:
        a = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
        b = torch.empty_like(a)
        for _ in range(3):
            b.copy_(a)
        common.sync(device)
        ts = []
        for _ in range(10):
            if gpu:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                b.copy_(a)
                e1.record()
                e1.synchronize()
                ts.append(e0.elapsed_time(e1) / 1e3)
            else:
                t0 = time.perf_counter()
                b.copy_(a)
                ts.append(time.perf_counter() - t0)
        del a, b
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # the children need that memory
        return 2 * nbytes / min(ts) / 1e9
    except Exception:
        return None


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def print_group(section: str, case, group: List[Dict[str, Any]]) -> None:
    print(f"\n  {section} {case['label']}:")
    print(f"    {'provider':<10} {'status':<8} {'median':>9} {'min':>9} {'p20-p80':>19} {'peak mem':>10} {'utt/s':>9}  vs ours / notes")
    for r in group:
        if r["status"] != "ok":
            print(f"    {r['provider']:<10} {r['status'][:8]:<8} {r.get('reason', '')}")
            continue
        t = r["time_s"]
        notes = []
        if r.get("ratio_to_ours"):
            notes.append(", ".join(f"{v:.2f}x {k}" for k, v in r["ratio_to_ours"].items()))
        if "vs_floor" in r:
            notes.append(f"{r['vs_floor']:.2f}x floor")
        if "bandwidth" in r:
            bw = r["bandwidth"]
            for ph in ("fwd", "bwd"):
                notes.append(f"{ph} {bw[ph + '_GBps']:.3g} GB/s" + (f" ({_pct(bw[ph + '_frac_of_peak'])} of peak)" if ph + "_frac_of_peak" in bw else ""))
        if r.get("check") and r["check"].get("ok") is False:
            notes.append("CHECK FAILED")
        if r.get("fingerprint_check") and not r["fingerprint_check"]["ok"]:
            notes.append("FINGERPRINT MISMATCH")
        print(f"    {r['provider']:<10} {'ok':<8} {fmt_s(t['median']):>9} {fmt_s(t['min']):>9} "
              f"{fmt_s(t['p20']) + '-' + fmt_s(t['p80']):>19} {fmt_bytes(r.get('peak_mem_bytes')):>10} "
              f"{r['utt_per_s']:>9.0f}  {'; '.join(notes)}")


# --- target verdicts (printed last: a device run may only show the tail of the output) -----


def _ok(r: Optional[Dict[str, Any]]) -> bool:
    return r is not None and r.get("status") == "ok"


def _gpu(r: Dict[str, Any]) -> bool:
    return r.get("device") == "cuda"


def failed_check(*recs: Optional[Dict[str, Any]]) -> Optional[str]:
    """Why a verdict built on ``recs`` cannot pass on speed alone: a record whose correctness
    check (against the reference) or fingerprint check (the original against ours) failed.
    None when every check that ran passed."""
    for r in recs:
        for key in ("check", "fingerprint_check"):
            c = (r or {}).get(key)
            if isinstance(c, dict) and c.get("ok") is False:
                err = c.get("max_rel_err")
                return (f"{r.get('provider')} failed its {key.replace('_', ' ')}"
                        + (f" (max rel err {err:.2g} > {c.get('tol')})" if isinstance(err, (int, float)) else ""))
    return None


def variant_label(r: Dict[str, Any]) -> str:
    """The non-default kernel options a record ran with (:data:`common.CUDA_OPTION_DEFAULTS`),
    e.g. ``" (tensor_cores False, tc_dtiles 1)"``; empty for the defaults: so that an A/B
    stage's verdict lines say what they measured."""
    opts = [f"{k[5:]} {r[k]}" for k, default in common.CUDA_OPTION_DEFAULTS.items()
            if common.differs_from_default(r.get(k), default)]
    return f" ({', '.join(opts)})" if opts else ""


def failed_verdict(r: Dict[str, Any]) -> str:
    """Verdict of a target case that did not run ok: MISS on a GPU (out of memory, error,
    timeout, skipped by the memory guard), n/a when only --time-limit-s kept it from running."""
    if not _gpu(r):
        return "n/a (not a GPU)"
    if "time-limit" in str(r.get("reason", "")):
        return "n/a (not measured: --time-limit-s)"
    return "MISS"


def bandwidth_targets(recs: List[Dict[str, Any]], worst: bool = True) -> List[Dict[str, Any]]:
    """Target 1: per propagate record, forward and backward bandwidth against 60% of the peak;
    PASS/MISS where the record is a target case (GPU with a known peak, D >= 256, >= 100k nodes),
    else n/a with the reason; then the worst qualifying fraction per (provider, dtype)."""
    out: List[Dict[str, Any]] = []
    worst_of: Dict[tuple, List] = {}
    for r in recs:
        if r.get("op") != "propagate" or r.get("provider") == "scatter" or not (_gpu(r) or r.get("bench_preset")):
            continue
        what = f"{r['provider']}{variant_label(r)} {r['dtype']} D={r['D']} {r['case']} ({r.get('nodes', M * r['N'])} nodes)"
        line = {"target": "T1 propagate bandwidth", "case": what, "threshold": f">= {TARGET_BW_FRAC:.0%} of peak, fwd and bwd"}
        if not _ok(r):
            line.update(measured=f"{r['status']}: {str(r.get('reason', ''))[:120]}", verdict=failed_verdict(r))
            out.append(line)
            continue
        bw = r["bandwidth"]
        # the verdict counts bytes as the issue does (its backward includes reading y); the
        # minimal count (no y) is shown beside it
        issue_ph = {"fwd": "fwd", "bwd": "bwd_issue" if "bwd_issue_GBps" in bw else "bwd"}
        fr = {ph: bw.get(f"{issue_ph[ph]}_frac_of_peak") for ph in ("fwd", "bwd")}
        line["measured"] = "; ".join(
            f"{ph} {bw[issue_ph[ph] + '_GBps']:.4g} GB/s = {_pct(fr[ph])} of peak, {_pct(bw.get(issue_ph[ph] + '_frac_of_copy'))} of copy"
            + (f" (kernels alone {_pct(bw['kernel_' + issue_ph[ph] + '_frac_of_peak'])})"
               if "kernel_" + issue_ph[ph] + "_frac_of_peak" in bw else "")
            + (f" [without y: {_pct(bw.get('bwd_frac_of_peak'))}]" if ph == "bwd" and issue_ph[ph] != "bwd" else "")
            for ph in ("fwd", "bwd"))
        why = ("not a GPU" if not _gpu(r) else "peak bandwidth of this GPU unknown" if fr["fwd"] is None
               else f"D < {TARGET_BW_MIN_DIM}" if r["D"] < TARGET_BW_MIN_DIM
               else f"< {TARGET_BW_MIN_NODES} nodes" if r["nodes"] < TARGET_BW_MIN_NODES else None)
        wrong = failed_check(r)
        if why:
            line["verdict"] = f"n/a ({why})"
        else:
            line["verdict"] = (f"MISS ({wrong})" if wrong else "PASS" if min(fr.values()) >= TARGET_BW_FRAC
                               else "MISS")
            worst_of.setdefault((r["provider"] + variant_label(r), r["dtype"]), []).append(
                (fr["fwd"], fr["bwd"], bw.get("kernel_fwd_frac_of_peak"), bw.get(f"kernel_{issue_ph['bwd']}_frac_of_peak"),
                 wrong is None))
        line["values"] = {k: bw[k] for k in ("fwd_GBps", "bwd_GBps", "bwd_issue_GBps", "fwd_frac_of_peak", "bwd_frac_of_peak",
                                             "bwd_issue_frac_of_peak", "kernel_fwd_GBps", "kernel_bwd_GBps",
                                             "kernel_bwd_issue_GBps", "kernel_fwd_frac_of_peak", "kernel_bwd_frac_of_peak",
                                             "kernel_bwd_issue_frac_of_peak") if k in bw}
        out.append(line)
    for (p, dt), fr in (worst_of.items() if worst else ()):
        f, b = min(x[0] for x in fr), min(x[1] for x in fr)
        kern = [x[2:4] for x in fr if None not in x[2:4]]
        checks_ok = all(x[4] for x in fr)
        meas = f"fwd {_pct(f)}, bwd {_pct(b)} of peak"
        if kern:
            meas += f" (kernels alone: fwd {_pct(min(k[0] for k in kern))}, bwd {_pct(min(k[1] for k in kern))})"
        out.append({"target": "T1 propagate bandwidth", "case": f"{p} {dt}: worst of {len(fr)} target cases",
                    "measured": meas, "threshold": f">= {TARGET_BW_FRAC:.0%}",
                    "verdict": ("MISS (a correctness check failed)" if not checks_ok
                                else "PASS" if min(f, b) >= TARGET_BW_FRAC else "MISS")})
    return out


def shift_ratio(r: Dict[str, Any], recs: List[Dict[str, Any]], copy_bw: Optional[float]) -> Optional[Dict[str, Any]]:
    """For an ok ``shift`` record: its median over that of the ``propagate`` record of the same
    provider, case, dtype and D among ``recs`` (one propagation layer: window_spmm fwd+bwd,
    grads to x, w, s); also over a one-layer ``stack`` (the whole graph layer: GEMMs,
    propagation, residual Linear) if that ran, and the ratio that the shift op's unavoidable
    traffic alone implies (write the ``[P, 2]`` logits, read their gradient) at the measured copy
    bandwidth. None without both records."""
    if not _ok(r):
        return None
    key = (r["provider"], r["case"], r["dtype"], r["D"])
    prop = next((q for q in recs if q.get("op") == "propagate" and _ok(q) and (q["provider"], q["case"], q["dtype"], q["D"]) == key), None)
    if prop is None:
        return None
    out = {"ratio": r["time_s"]["median"] / prop["time_s"]["median"], "shift_median_s": r["time_s"]["median"],
           "propagate_median_s": prop["time_s"]["median"], "target": TARGET_SHIFT_RATIO}
    stack = next((q for q in recs if q.get("op") == "stack" and _ok(q) and q.get("layers") == 1
                  and (q["provider"], q["case"], q["dtype"], q["D"]) == key), None)
    if stack is not None:
        out["graph_layer_median_s"] = stack["time_s"]["median"]
        out["ratio_to_graph_layer"] = r["time_s"]["median"] / stack["time_s"]["median"]
    ks, kp = r.get("kernel_s") or {}, prop.get("kernel_s") or {}
    if ks.get("fwd") and kp.get("fwd"):
        out["kernel_ratio"] = (ks["fwd"] + ks["bwd"]) / (kp["fwd"] + kp["bwd"])
    if copy_bw and r.get("P") and r.get("op") == "shift":
        isz = torch.empty((), dtype=common.parse_dtype(r["dtype"])).element_size()
        out["traffic_floor_s"] = 2 * r["P"] * 2 * isz / (copy_bw * 1e9)
        out["traffic_floor_ratio"] = out["traffic_floor_s"] / prop["time_s"]["median"]
    return out


def shift_targets(recs: List[Dict[str, Any]], copy_bw: Optional[float]) -> List[Dict[str, Any]]:
    """Target 2: shift_pair_logits fwd+bwd with shift_win -1 on one dialogue of >= 20,000
    utterances < 10% of one propagation layer at D = 512 on the same dialogue (:func:`shift_ratio`),
    per provider and dtype."""
    out: List[Dict[str, Any]] = []
    for r in recs:
        if r.get("op") not in ("shift", "shift_loss") or r.get("shift_win") != -1 or not is_ours(r["provider"]):
            continue
        what = f"{r['provider']}{variant_label(r)} {r['dtype']} {r['case']} shift_win -1 (P = {r.get('P', '?')}) vs propagate D={r['D']}"
        target = "T2 shift vs one propagate layer" if r["op"] == "shift" else "T2 fused shift loss (shift_pair_nll) vs one propagate layer"
        line = {"target": target, "case": what, "threshold": f"< {TARGET_SHIFT_RATIO:.0%}"}
        v = r.get("vs_propagate_layer") or shift_ratio(r, recs, copy_bw)
        if v is None:
            prop = [q["status"] for q in recs if q.get("op") == "propagate" and q["provider"] == r["provider"] and q["case"] == r["case"]]
            line.update(measured=f"shift {r['status']}, propagate {prop[0] if prop else 'not run'}",
                        verdict=failed_verdict(r) if r["status"] != "ok" else "n/a (propagate not measured)")
            out.append(line)
            continue
        meas = f"shift {fmt_s(v['shift_median_s'])} / propagate {fmt_s(v['propagate_median_s'])} = {100 * v['ratio']:.1f}%"
        if "ratio_to_graph_layer" in v:
            meas += f" (of one whole graph layer, {fmt_s(v['graph_layer_median_s'])}: {100 * v['ratio_to_graph_layer']:.1f}%)"
        if "kernel_ratio" in v:
            meas += f"; kernels alone: {100 * v['kernel_ratio']:.1f}%"
        if "traffic_floor_ratio" in v:
            meas += f"; writing + reading the [P, 2] logits alone at copy bandwidth: {100 * v['traffic_floor_ratio']:.0f}%"
        line["measured"] = meas
        line["values"] = v
        target_case = _gpu(r) and r["B"] == 1 and r["L"] >= TARGET_SHIFT_MIN_L and r["D"] >= TARGET_SHIFT_DIM
        prop = next((q for q in recs if q.get("op") == "propagate" and _ok(q)
                     and (q["provider"], q["case"], q["dtype"], q["D"]) == (r["provider"], r["case"], r["dtype"], r["D"])), None)
        wrong = failed_check(r, prop)
        line["verdict"] = (f"MISS ({wrong})" if wrong else "PASS" if v["ratio"] < TARGET_SHIFT_RATIO else "MISS") if target_case else \
            "n/a (" + ("not a GPU" if not _gpu(r) else f"not one dialogue of >= {TARGET_SHIFT_MIN_L} at D >= {TARGET_SHIFT_DIM}") + ")"
        out.append(line)
    return out


def spec9_targets(recs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """SPEC 9 (CPU, stack, B = 16, D = 512, K = 7, win 17/17, fp32): ours / floor <= 1.2 (minima,
    as SPEC's best-of-3) and, at L = 1000, <= 7.5 s and <= 2.5 GB."""
    out: List[Dict[str, Any]] = []
    stack = [r for r in recs if r.get("op") == "stack" and r.get("device") == "cpu" and r["B"] == 16 and r["D"] == 512
             and r.get("layers") == 7 and (r.get("win_p"), r.get("win_f")) == (17, 17) and r["dtype"] == "float32"]
    by = {(r["case"], r["provider"]): r for r in stack}
    for r in stack:
        if not is_ours(r["provider"]) or r["provider"] == "reference" or not _ok(r):
            continue
        f = by.get((r["case"], "floor"))
        if _ok(f):
            v = r["time_s"]["min"] / f["time_s"]["min"]
            out.append({"target": "SPEC 9 ours / floor", "case": f"{r['provider']} {r['case']}", "measured": f"{v:.2f}x (min)",
                        "threshold": "<= 1.2x", "verdict": "PASS" if v <= 1.2 else "MISS"})
        if r["L"] == 1000:
            t, mem = r["time_s"]["min"], r.get("peak_mem_bytes")
            out.append({"target": "SPEC 9 L=1000", "case": f"{r['provider']} {r['case']}", "measured": f"{fmt_s(t)}, {fmt_bytes(mem)}",
                        "threshold": "<= 7.5 s and <= 2.5 GB", "verdict": "PASS" if t <= 7.5 and mem is not None and mem <= 2.5e9 else "MISS"})
    return out


def print_targets(lines: List[Dict[str, Any]], title: str) -> None:
    print(f"\n=== {title}: {len(lines)} verdict line(s) ===")
    if not lines:
        print("  (no target case in this run)")
    for ln in lines:
        print(f"  [{ln['verdict']}] {ln['target']} | {ln['case']} | {ln['measured']} | target {ln['threshold']}")


def write_targets(lines: List[Dict[str, Any]], out_path: Path, meta: Dict[str, Any]) -> Optional[Path]:
    if not lines:
        return None
    path = out_path.with_name(out_path.stem + "_targets.jsonl")
    # the run's kernel options travel with its verdict lines (the case strings name the non-default ones)
    meta = {**meta, **{k: v for k, v in meta.get("env", {}).items() if k in common.CUDA_OPTION_DEFAULTS}}
    meta.pop("env", None)
    common.append_jsonl(path, [{**meta, **ln} for ln in lines])
    return path


# --- command line and plans ---------------------------------------------------------------

# generic defaults (full, quick) of the options a preset may set
DEFAULTS = dict(lengths=([50, 110, 250, 1000], [20, 50]), batch=(16, 2), reps=(5, 3), budget_s=(120.0, 30.0),
                dim=([512], [512]), dtype=(["float32"], ["float32"]), layers=(7, 7), win=([17, 17], [17, 17]),
                shift_win=(19, 19), sections=(list(SECTIONS), list(SECTIONS)), single=(None, None))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small end-to-end run: L 20 50, B 2, 3 reps, budget 30 s, results in "
                    "bench/results/quick/; with --preset: the preset scaled down to CPU size")
    ap.add_argument("--preset", nargs="+", default=None, choices=list(PRESETS) + list(PRESET_GROUPS), metavar="NAME",
                    help="; ".join(f"{k}: {v['help']}" for k, v in PRESETS.items()) + "; gpu-targets: all of them")
    ap.add_argument("--device", default=None, help="cpu (default) or cuda[:i]")
    ap.add_argument("--dtype", nargs="+", default=None, help="float32 (default), bfloat16, float16, float64; several run one after the other")
    ap.add_argument("--lengths", type=int, nargs="*", default=None, help="dialogue lengths L (default 50 110 250 1000)")
    ap.add_argument("--single", type=int, nargs="?", const=20000, default=None,
                    help="also one dialogue of this many utterances (default 20000 when given without a value)")
    ap.add_argument("--no-single", action="store_true", help="leave out the single dialogue (also a preset's)")
    ap.add_argument("--batch", type=int, default=None, help="dialogues per batch (default 16)")
    ap.add_argument("--dim", type=int, nargs="+", default=None, help="feature width(s) D (default 512)")
    ap.add_argument("--layers", type=int, default=None, help="layers K of the graph module (default 7)")
    ap.add_argument("--win", type=int, nargs=2, default=None, metavar=("WIN_P", "WIN_F"), help="default 17 17")
    ap.add_argument("--shift-win", type=int, default=None, help="default 19")
    ap.add_argument("--providers", default=None, help="comma list (default: every available backend + dense,scatter,floor)")
    ap.add_argument("--sections", default=None, help=f"comma list of {SECTIONS} (default all)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions after warm-up (default 5; fewer when the budget runs out)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs (the first also measures memory and checks outputs)")
    ap.add_argument("--budget-s", type=float, default=None, help="time budget per measurement in s (default 120)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--mem-safety", type=float, default=0.8, help="skip a run whose estimated peak exceeds this fraction of available memory")
    ap.add_argument("--dense-capacity", type=int, default=baselines.ORIGINAL_EDGE_CAPACITY)
    ap.add_argument("--isolate", choices=("subprocess", "none"), default="subprocess",
                    help="subprocess (default): fresh process per measurement (peak RSS, crash/timeout safe); none: in-process")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check before timing")
    ap.add_argument("--kernel-times", action="store_true",
                    help="GPU: also profile the device-busy time of propagate and shift after timing them (kernel_s, "
                    "kernel_*_GBps: bandwidth without launch gaps). Off by default: CUPTI may stay attached and slow "
                    "later in-process measurements (TEARDOWN_CUPTI=1 is set to avoid that)")
    ap.add_argument("--time-limit-s", type=float, default=None,
                    help="no new measurement starts after this many seconds from the start (recorded as skipped); the "
                    "target verdicts are still printed. For a device with a fixed time budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON-lines file to append to (default bench/results/ops.jsonl, or quick/ops.jsonl)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.providers:
        unknown = [p for p in args.providers.split(",") if p.strip() and p.strip() not in baselines.OUR_BACKENDS + baselines.BASELINES]
        if unknown:
            ap.error(f"unknown provider(s) {unknown}; choose from {baselines.OUR_BACKENDS + baselines.BASELINES}")
    if args.sections is not None:
        args.sections = [s for s in args.sections.split(",") if s]
        bad = [s for s in args.sections if s not in SECTIONS]
        if bad:
            ap.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    for dt in args.dtype or []:
        common.parse_dtype(dt)
    args.device = args.device or "cpu"
    if args.out is None:
        args.out = str(common.RESULTS / ("quick" if args.quick else "") / "ops.jsonl")
    return args


def make_plan(args, preset: Optional[str]):
    """The options of one preset (or of none): the command line's where given, else the
    preset's (its quick variant with --quick), else the generic defaults."""
    a = copy.copy(args)
    a.preset = preset
    q = 1 if args.quick else 0
    pv = PRESETS[preset]["quick" if args.quick else "full"] if preset else {}
    for k, (full, quick) in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(a, k, copy.copy(pv[k] if k in pv else (quick if q else full)))
    if args.no_single:
        a.single = None
    a.section_providers = {}
    for section in a.sections:
        avail = section_providers(section, a.device)
        if args.providers:
            wanted = [p.strip() for p in args.providers.split(",") if p.strip()]
        elif preset:
            wanted = []
            for p in PRESETS[preset]["providers"].get(section, ["ours"]):
                wanted += fast_backends(a.device) if p == "ours" else [p]
        else:
            wanted = avail
        a.section_providers[section] = [p for p in wanted if p in avail]
    return a


def run_plan(a, env0: Dict[str, Any], run_id: str, out_path: Path, memo, all_recs: List[Dict[str, Any]]) -> int:
    """Runs one plan: for every dtype, section, D, case and provider one measurement."""
    cases = build_cases(a)
    print(f"\n##### {'preset ' + a.preset if a.preset else 'benchmark'}: sections {a.sections}, cases {[c['label'] for c in cases]}, "
          f"D={a.dim}, dtype={a.dtype}, K={a.layers}, win={tuple(a.win)}, shift_win={a.shift_win}, reps={a.reps}, "
          f"budget {a.budget_s:.0f} s, isolate={a.isolate}")
    n_written = 0
    for dtype in a.dtype:
        env = dict(env0, dtype=dtype)
        for section in a.sections:
            providers = a.section_providers.get(section) or []
            if not providers:
                print(f"\n[{section}] no provider available on {a.device}")
                continue
            for D in a.dim:
                pa = copy.copy(a)
                pa.dim, pa.dtype = D, dtype
                checks: Dict[str, Dict[str, Any]] = {}
                if not a.no_check and not (a.time_limit_s is not None and time.time() - a.t_start > a.time_limit_s):
                    t0 = time.time()
                    checks = correctness_check(section, providers, pa)
                    release_device_memory(a.device)
                    bad = [f"{p} ({c.get('error') or 'max rel err %.2e' % c.get('max_rel_err', float('nan'))})" for p, c in checks.items() if c.get("ok") is False]
                    print(f"\n[{section} D={D} {dtype}] correctness vs reference on lengths {CHECK_LENGTHS}: "
                          + ("all ok" if not bad else "FAILED: " + ", ".join(bad)) + f" ({time.time() - t0:.1f} s)")
                for case in cases:
                    group: List[Dict[str, Any]] = []
                    ref_fp = None
                    for provider in providers:
                        base = dict(bench="ops", run_id=run_id, quick=a.quick, bench_preset=a.preset, op=section, provider=provider,
                                    case=case["label"], B=case["B"], L=case["L"], N=sum(case["lengths"]), D=D, layers=a.layers,
                                    win_p=a.win[0], win_f=a.win[1], shift_win=a.shift_win, isolate=a.isolate, **env)
                        key = (section, provider, D, dtype, a.layers, a.shift_win)
                        skip = memo.reason(key, base["N"]) or None
                        if not skip and a.time_limit_s is not None and time.time() - a.t_start > a.time_limit_s:
                            skip = f"skipped: --time-limit-s {a.time_limit_s:g} reached"
                        res = {"status": "skipped", "reason": skip} if skip else guard(section, provider, case, pa, common.mem_available_bytes(a.device))
                        if res is None:
                            spec = dict(section=section, provider=provider, lengths=case["lengths"], dim=D, layers=a.layers,
                                        win_p=a.win[0], win_f=a.win[1], shift_win=a.shift_win, dense_capacity=a.dense_capacity,
                                        device=a.device, dtype=dtype, reps=a.reps, warmup=a.warmup, budget_s=a.budget_s,
                                        seed=a.seed, threads=a.threads or torch.get_num_threads(),
                                        isolated=a.isolate == "subprocess", kernel_times=a.kernel_times)
                            t0 = time.time()
                            print(f"  [{section} {case['label']} D={D} {dtype}] {provider} ...", end="", flush=True)
                            if a.isolate == "subprocess":
                                res = common.run_child(SCRIPT, spec, timeout_s=2 * a.budget_s + 90)
                            else:
                                try:
                                    res = run_measurement(spec)
                                except Exception as exc:
                                    res = common.classify_exception(exc)
                                release_device_memory(a.device)
                            msg = fmt_s(res["time_s"]["median"]) if res.get("status") == "ok" else res.get("status")
                            print(f" {msg} ({time.time() - t0:.1f} s)", flush=True)
                            memo.note(key, base["N"], res.get("status", "error"))
                        rec = {**base, **res}
                        if provider in checks:
                            rec["check"] = checks[provider]
                        if rec["status"] == "ok":
                            rec["utt_per_s"] = rec["N"] / rec["time_s"]["median"]
                            fp = rec.pop("fingerprint", None)
                            if fp is not None and provider != "floor":
                                if ref_fp is None:
                                    ref_fp = (provider, fp)
                                else:
                                    tol = 1e-3 if dtype in ("float32", "float64", "fp32") else 5e-2
                                    rec["fingerprint_check"] = {**fingerprint_check(fp, ref_fp[1], tol), "against": ref_fp[0]}
                            add_bandwidth(rec, env)
                            if section in ("shift", "shift_loss") and rec["shift_win"] == -1:
                                v = shift_ratio(rec, all_recs, env.get("copy_bw_gbps"))
                                if v is not None:
                                    rec["vs_propagate_layer"] = v
                        group.append(rec)
                    add_ratios(group)
                    print_group(f"{section} D={D} {dtype}", case, group)
                    common.append_jsonl(out_path, group)
                    all_recs.extend(group)
                    n_written += len(group)
                    # verdicts as soon as they are known (a run cut short still shows them)
                    for ln in bandwidth_targets(group, worst=False) + shift_targets(group, env.get("copy_bw_gbps")):
                        print(f"    -> [{ln['verdict']}] {ln['target']} | {ln['case']} | {ln['measured']}")
    return n_written


def main(argv=None) -> int:
    args = parse_args(argv)
    if not common.start(args):
        return 2
    if args.kernel_times:  # kineto leaves CUPTI attached after a profile unless told (pytorch#144455); children inherit it
        os.environ.setdefault("TEARDOWN_CUPTI", "1")
    plans = [make_plan(args, p) for p in expand_presets(args.preset)]
    env0 = common.env_info(args.device, plans[0].dtype[0])
    if args.device.startswith("cuda"):
        env0["copy_bw_gbps"] = measure_copy_bandwidth(args.device)
    run_id = common.new_run_id()
    out_path = Path(args.out)
    print(f"graphsmile op benchmark, run {run_id}: {env0['device_name']} ({args.device}, {env0['threads']} threads), torch {env0['torch']}, "
          f"git {str(env0['git_commit'])[:10]}{'+dirty' if env0['git_dirty'] else ''}"
          + (f", peak {env0.get('gpu_peak_bw_gbps')} GB/s (data sheet), copy {env0['copy_bw_gbps']:.0f} GB/s (measured)"
             if env0.get("copy_bw_gbps") else "") + f" -> {out_path}")
    memo = common.FailureMemo()
    t_start = time.time()
    all_recs: List[Dict[str, Any]] = []
    n_written = 0
    for plan in plans:
        plan.t_start = t_start
        n_written += run_plan(plan, env0, run_id, out_path, memo, all_recs)
    print(f"\n{n_written} records appended to {out_path} in {time.time() - t_start:.0f} s. Draw: python bench/plot.py"
          + (" --quick" if args.quick else ""))
    lines = bandwidth_targets(all_recs) + shift_targets(all_recs, env0.get("copy_bw_gbps")) + spec9_targets(all_recs)
    tpath = write_targets(lines, out_path, dict(bench="ops", run_id=run_id, device_name=env0["device_name"], date=env0["date"],
                                                git_commit=env0["git_commit"], git_dirty=env0["git_dirty"], env=env0))
    print_targets(lines, f"targets, {env0['device_name']}, run {run_id}" + (f" (also in {tpath})" if tpath else ""))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        common.child_main(sys.argv[2:], run_measurement)
    else:
        sys.exit(main())
