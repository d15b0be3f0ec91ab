"""Benchmark of graphsmile's graph ops against the original's math and baselines.

    python bench/ops.py                        # CPU, B=16, D=512, K=7, L in 50 110 250 1000
    python bench/ops.py --quick                # a small end-to-end run (results/quick/)
    python bench/ops.py --device cuda          # every GPU backend (cuda, triton, reference)
    python bench/ops.py --lengths 500 2000 --single      # + one 20,000-utterance dialogue
    python bench/ops.py --providers cpu,floor --sections stack

Sections (``--sections``):

- ``stack``: forward + backward of one GraphSmile graph module (``K`` layers
  ``h_{l+1} = propagate(h_l @ W_l) + b_l``, one normalisation per stack, the residual sum of
  ``LeakyReLU(Linear_l(h_l))``; see bench/baselines.py) on ``B`` dialogues of length ``L``,
  ``M = 2`` modalities, per provider: graphsmile's backends, ``dense`` (the original), ``scatter``
  (PyG-style), ``floor`` (no propagation).
- ``shift``: ``shift_pair_logits`` forward + backward per backend vs the original's ``[P, 2D]``
  pair embeddings (``dense``).
- ``propagate``: ``window_spmm`` alone (normalisation precomputed, gradient to ``x`` only), per
  backend and ``scatter``, with the achieved memory bandwidth (minimal traffic: read ``x``,
  write ``y``; backward read ``g``, write ``gx``) -- against the device's peak on a GPU.

Every measurement runs in a fresh subprocess (``--isolate subprocess``, the default) with a
wall-clock limit, so its peak RSS is its own and a crash, out-of-memory kill or timeout is
recorded, not fatal. Before timing, every provider's output and gradients are compared with
the ``reference`` backend on a small batch, and at every size the aggregate fingerprints of the
outputs and gradients are compared across providers. Results are appended, one JSON object per
measurement, to ``bench/results/ops.jsonl``. See bench/README.md.
"""
from __future__ import annotations

import argparse
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

SECTIONS = ("stack", "shift", "propagate")
M = 2  # modalities per graph module (GraphSmile's tv, ta, va)
SCRIPT = Path(__file__).resolve()


# --- providers ----------------------------------------------------------------------------


def section_providers(section: str, device: str) -> List[str]:
    ours = baselines.available_backends(device)
    if section == "stack":
        return ours + ["dense", "scatter", "floor"]
    if section == "shift":
        return ours + ["dense"]
    return ours + ["scatter"]


def is_ours(p: str) -> bool:
    return p in baselines.OUR_BACKENDS


# --- one measurement (runs in the child, or in-process with --isolate none) ----------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _zero_grads(tensors) -> None:
    for t in tensors:
        t.grad = None


def _fingerprint(tensors) -> List[float]:
    """Aggregates that agree across correct providers (abs sums and square sums, float64)."""
    fp = []
    for t in tensors:
        if t is None:
            fp += [0.0, 0.0]
            continue
        t = t.detach().double()
        fp += [float(t.abs().sum()), float(t.pow(2).sum())]
    return fp


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
            for e in evs:
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
    g = _gen(spec["seed"] + 1)
    x = torch.randn(n, D, generator=g).to(device=dev, dtype=dt).requires_grad_()
    gout = torch.randn(n, D, generator=g).to(device=dev, dtype=dt)
    prepare = baselines.make_prepare(spec["provider"], lens, M, wp, wf, spec["dense_capacity"])
    params = [x] + list(model.parameters())

    def forward():
        return model(x, prepare, E)

    def backward(out):
        out.backward(gout)

    def grads():
        return [x.grad, model.weights[0].grad, model.biases[0].grad, model.fcs[0].weight.grad, model.edge_weight.grad]

    return dict(forward=forward, backward=backward, params=params, grads=grads, extra={"E": E, "nodes": n})


def setup_shift(spec, dev, dt):
    lens, D, sw = spec["lengths"], spec["dim"], spec["shift_win"]
    N = sum(lens)
    P = gops.num_shift_pairs(lens, sw)
    g = _gen(spec["seed"] + 2)
    u = torch.randn(N, D, generator=g).to(device=dev, dtype=dt).requires_grad_()
    weight = ((torch.rand(2, 2 * D, generator=g) * 2 - 1) / (2 * D) ** 0.5).to(device=dev, dtype=dt).requires_grad_()
    bias = (torch.rand(2, generator=g) * 0.1).to(device=dev, dtype=dt).requires_grad_()
    gout = torch.randn(P, 2, generator=g).to(device=dev, dtype=dt)
    provider = spec["provider"]

    def forward():
        # GraphSmile passes the same tensor as u and v
        return gops.shift_pair_logits(u, u, lens, sw, weight, bias, backend=provider)

    def backward(out):
        out.backward(gout)

    return dict(forward=forward, backward=backward, params=[u, weight, bias],
                grads=lambda: [u.grad, weight.grad, bias.grad], extra={"P": P})


def setup_propagate(spec, dev, dt):
    lens, D = spec["lengths"], spec["dim"]
    wp, wf = spec["win_p"], spec["win_f"]
    n = M * sum(lens)
    E = gops.num_edges(lens, M, wp, wf)
    g = _gen(spec["seed"] + 3)
    x = torch.randn(n, D, generator=g).to(device=dev, dtype=dt).requires_grad_()
    w = (torch.rand(E, generator=g) + 0.5).to(device=dev, dtype=dt)
    gout = torch.randn(n, D, generator=g).to(device=dev, dtype=dt)
    provider = spec["provider"]
    with torch.no_grad():
        if provider == "scatter":
            prop = baselines.scatter_prepare(lens, M, wp, wf)(w)
        else:
            s = gops.window_norm(w, lens, M, wp, wf, "per_edge", provider).to(dt)

            def prop(z):
                return gops.window_spmm(z, w, s, lens, M, wp, wf, "per_edge", provider)

    def forward():
        return prop(x)

    def backward(out):
        out.backward(gout)

    return dict(forward=forward, backward=backward, params=[x], grads=lambda: [x.grad], extra={"E": E, "nodes": n})


SETUPS = {"stack": setup_stack, "shift": setup_shift, "propagate": setup_propagate}


def run_measurement(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Builds the inputs of one (section, provider, case), times it, measures its memory."""
    dev = spec["device"]
    dt = common.parse_dtype(spec["dtype"])
    setup = SETUPS[spec["section"]]

    def prewarm():  # the same code path on a tiny batch: lazy initialisation is not this run's memory
        t = setup(dict(spec, lengths=[3, 2]), dev, dt)
        for _ in range(2):
            _zero_grads(t["params"])
            t["backward"](t["forward"]())

    s = setup(spec, dev, dt)
    step, holder = _timed_step(dev, s["forward"], s["backward"], lambda: _zero_grads(s["params"]))
    fingerprint: List[Optional[List[float]]] = [None]

    def step_or_first():
        r = step()
        out = holder.pop("out")
        if fingerprint[0] is None:  # the first warm-up: fingerprint of the outputs and gradients
            fingerprint[0] = _fingerprint([out] + s["grads"]())
            if dev.startswith("cuda"):  # average sub-millisecond steps over several iterations
                holder["inner"] = max(1, min(200, int(2e-3 / max(r["total"], 1e-7))))
        del out
        return r

    times, mem, primary, method = common.measure_with_memory(step_or_first, dev, spec, prewarm=prewarm)
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
        **s["extra"],
    }


# --- correctness before timing ------------------------------------------------------------


CHECK_LENGTHS = [37, 1, 18, 5]  # longer than the window span (35), a singleton, odd sizes


def correctness_check(section: str, providers: List[str], args) -> Dict[str, Dict[str, Any]]:
    """Runs every provider once on the same small batch and compares its output and gradients
    with the ``reference`` backend's. Returns ``{provider: {"ok", "max_rel_err", ...}}``."""
    dt = common.parse_dtype(args.dtype)
    tol = 1e-4 if dt in (torch.float32, torch.float64) else 3e-2
    # the check is about the math: the capacity is made large enough for the check batch
    cap = max(args.dense_capacity, gops.num_edges(CHECK_LENGTHS, M, *args.win))
    spec_base = dict(section=section, lengths=CHECK_LENGTHS, dim=args.dim, layers=args.layers, win_p=args.win[0],
                     win_f=args.win[1], shift_win=args.shift_win, dense_capacity=cap, seed=args.seed,
                     device=args.device, dtype=args.dtype)
    results: Dict[str, List[torch.Tensor]] = {}
    errors: Dict[str, str] = {}
    # the reference backend is always run here, timed or not
    for p in (["reference"] if "reference" not in providers else []) + providers:
        if p == "floor":
            continue
        try:
            s = SETUPS[section](dict(spec_base, provider=p), args.device, dt)
            out = s["forward"]()
            s["backward"](out)
            results[p] = [t.detach().double().cpu() if t is not None else None for t in [out] + s["grads"]()]
        except Exception as exc:
            errors[p] = f"{type(exc).__name__}: {exc}"[:300]
    ref = "reference" if "reference" in results else next(iter(results), None)
    out: Dict[str, Dict[str, Any]] = {}
    for p in providers:
        if p == "floor":
            out[p] = {"ok": None, "note": "no propagation: not comparable"}
        elif p in errors:
            out[p] = {"ok": False, "error": errors[p]}
        elif p == ref:
            out[p] = {"ok": True, "against": "self (the reference)"}
        else:
            worst = 0.0
            for a, b in zip(results[p], results[ref]):
                if a is None or b is None:
                    continue
                scale = float(b.abs().max()) or 1.0
                worst = max(worst, float((a - b).abs().max()) / scale)
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


def add_bandwidth(rec: Dict[str, Any], args, env) -> None:
    if rec["status"] != "ok" or rec["op"] != "propagate":
        return
    isz = torch.empty((), dtype=common.parse_dtype(args.dtype)).element_size()
    n, D = rec["nodes"], rec["D"]
    fwd_bytes, fb_bytes = 2 * n * D * isz, 4 * n * D * isz
    bw = {"fwd_GBps": fwd_bytes / rec["fwd_s"]["median"] / 1e9, "fwd_bwd_GBps": fb_bytes / rec["time_s"]["median"] / 1e9,
          "bytes_model": "fwd: read x + write y; bwd: read g + write gx (2 and 4 x nodes x D x itemsize)"}
    peak = env.get("gpu_peak_bw_gbps")
    if peak:
        bw["peak_GBps"] = peak
        bw["fwd_frac_of_peak"] = bw["fwd_GBps"] / peak
        bw["fwd_bwd_frac_of_peak"] = bw["fwd_bwd_GBps"] / peak
    if env.get("copy_bw_gbps"):
        bw["copy_GBps"] = env["copy_bw_gbps"]
        bw["fwd_frac_of_copy"] = bw["fwd_GBps"] / env["copy_bw_gbps"]
    rec["bandwidth"] = bw


def measure_copy_bandwidth(device: str, nbytes: int = 1 << 28) -> Optional[float]:
    """Achievable bandwidth of a plain device copy (read + write), GB/s."""
    try:
        a = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
        b = torch.empty_like(a)
        for _ in range(3):
            b.copy_(a)
        common.sync(device)
        ts = []
        for _ in range(10):
            t0 = time.perf_counter()
            b.copy_(a)
            common.sync(device)
            ts.append(time.perf_counter() - t0)
        del a, b
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # the children need that memory
        return 2 * nbytes / min(ts) / 1e9
    except Exception:
        return None


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
            notes.append(f"fwd {bw['fwd_GBps']:.3g} GB/s" + (f" ({100 * bw['fwd_frac_of_peak']:.0f}% of peak)" if "fwd_frac_of_peak" in bw else ""))
        if r.get("check") and r["check"].get("ok") is False:
            notes.append("CHECK FAILED")
        if r.get("fingerprint_check") and not r["fingerprint_check"]["ok"]:
            notes.append("FINGERPRINT MISMATCH")
        print(f"    {r['provider']:<10} {'ok':<8} {fmt_s(t['median']):>9} {fmt_s(t['min']):>9} "
              f"{fmt_s(t['p20']) + '-' + fmt_s(t['p80']):>19} {fmt_bytes(r.get('peak_mem_bytes')):>10} "
              f"{r['utt_per_s']:>9.0f}  {'; '.join(notes)}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small end-to-end run: L 20 50, B 2, 3 reps, budget 30 s, results in bench/results/quick/")
    ap.add_argument("--device", default=None, help="cpu (default) or cuda[:i]")
    ap.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16, float64")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="dialogue lengths L (default 50 110 250 1000)")
    ap.add_argument("--single", type=int, nargs="?", const=20000, default=None,
                    help="also one dialogue of this many utterances (default 20000 when given without a value)")
    ap.add_argument("--batch", type=int, default=None, help="dialogues per batch (default 16)")
    ap.add_argument("--dim", type=int, default=512, help="feature width D (default 512)")
    ap.add_argument("--layers", type=int, default=7, help="layers K of the graph module (default 7)")
    ap.add_argument("--win", type=int, nargs=2, default=[17, 17], metavar=("WIN_P", "WIN_F"))
    ap.add_argument("--shift-win", type=int, default=19)
    ap.add_argument("--providers", default=None, help="comma list (default: every available backend + dense,scatter,floor)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions after warm-up (default 5; fewer when the budget runs out)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up runs (the first also measures memory and checks outputs)")
    ap.add_argument("--budget-s", type=float, default=None, help="time budget per measurement in s (default 120)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--mem-safety", type=float, default=0.8, help="skip a run whose estimated peak exceeds this fraction of available memory")
    ap.add_argument("--dense-capacity", type=int, default=baselines.ORIGINAL_EDGE_CAPACITY)
    ap.add_argument("--isolate", choices=("subprocess", "none"), default="subprocess",
                    help="subprocess (default): fresh process per measurement (peak RSS, crash/timeout safe); none: in-process")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check before timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON-lines file to append to (default bench/results/ops.jsonl, or quick/ops.jsonl)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.providers:
        unknown = [p for p in args.providers.split(",") if p.strip() and p.strip() not in baselines.OUR_BACKENDS + baselines.BASELINES]
        if unknown:
            ap.error(f"unknown provider(s) {unknown}; choose from {baselines.OUR_BACKENDS + baselines.BASELINES}")
    q = args.quick
    args.lengths = args.lengths or ([20, 50] if q else [50, 110, 250, 1000])
    args.batch = args.batch or (2 if q else 16)
    args.reps = args.reps or (3 if q else 5)
    args.budget_s = args.budget_s or (30.0 if q else 120.0)
    args.device = args.device or "cpu"
    if args.out is None:
        args.out = str(common.RESULTS / ("quick" if q else "") / "ops.jsonl")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    sections = [s for s in args.sections.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            print(f"unknown section {s!r}; choose from {SECTIONS}", file=sys.stderr)
            return 2
    env = common.env_info(args.device, args.dtype)
    if args.device.startswith("cuda"):
        env["copy_bw_gbps"] = measure_copy_bandwidth(args.device)
    run_id = common.new_run_id()
    cases = build_cases(args)
    out_path = Path(args.out)
    print(f"graphsmile op benchmark, run {run_id}: {env['device_name']} ({args.device}, {env['threads']} threads), torch {env['torch']}, "
          f"{args.dtype}, git {str(env['git_commit'])[:10]}{'+dirty' if env['git_dirty'] else ''}")
    print(f"  cases {[c['label'] for c in cases]}, D={args.dim}, K={args.layers}, win={tuple(args.win)}, shift_win={args.shift_win}, "
          f"reps={args.reps}, budget {args.budget_s:.0f} s, isolate={args.isolate} -> {out_path}")
    memo = common.FailureMemo()
    t_start = time.time()
    n_written = 0
    for section in sections:
        providers = section_providers(section, args.device)
        if args.providers:
            wanted = [p.strip() for p in args.providers.split(",") if p.strip()]
            missing = [p for p in wanted if p in baselines.OUR_BACKENDS and p not in providers]
            if missing and section == sections[0]:
                print(f"note: backend(s) {missing} not available on {args.device} here")
            providers = [p for p in wanted if p in providers]
        if not providers:
            continue
        checks: Dict[str, Dict[str, Any]] = {}
        if not args.no_check:
            t0 = time.time()
            checks = correctness_check(section, providers, args)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            bad = [f"{p} ({c.get('error') or 'max rel err %.2e' % c.get('max_rel_err', float('nan'))})" for p, c in checks.items() if c.get("ok") is False]
            print(f"\n[{section}] correctness vs reference on lengths {CHECK_LENGTHS}: "
                  + ("all ok" if not bad else "FAILED: " + ", ".join(bad)) + f" ({time.time() - t0:.1f} s)")
        for case in cases:
            group: List[Dict[str, Any]] = []
            ref_fp = None
            for provider in providers:
                base = dict(bench="ops", run_id=run_id, quick=args.quick, op=section, provider=provider, case=case["label"],
                            B=case["B"], L=case["L"], N=sum(case["lengths"]), D=args.dim, layers=args.layers,
                            win_p=args.win[0], win_f=args.win[1], shift_win=args.shift_win, isolate=args.isolate, **env)
                key = (section, provider)
                skip = memo.reason(key, base["N"]) or None
                res = {"status": "skipped", "reason": skip} if skip else guard(section, provider, case, args, common.mem_available_bytes(args.device))
                if res is None:
                    spec = dict(section=section, provider=provider, lengths=case["lengths"], dim=args.dim, layers=args.layers,
                                win_p=args.win[0], win_f=args.win[1], shift_win=args.shift_win, dense_capacity=args.dense_capacity,
                                device=args.device, dtype=args.dtype, reps=args.reps, warmup=args.warmup, budget_s=args.budget_s,
                                seed=args.seed, threads=args.threads or torch.get_num_threads(),
                                isolated=args.isolate == "subprocess")
                    t0 = time.time()
                    print(f"  [{section} {case['label']}] {provider} ...", end="", flush=True)
                    if args.isolate == "subprocess":
                        res = common.run_child(SCRIPT, spec, timeout_s=2 * args.budget_s + 90)
                    else:
                        try:
                            res = run_measurement(spec)
                        except Exception as exc:
                            res = common.classify_exception(exc)
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
                            tol = 1e-3 if args.dtype in ("float32", "float64", "fp32") else 5e-2
                            rec["fingerprint_check"] = {**fingerprint_check(fp, ref_fp[1], tol), "against": ref_fp[0]}
                    add_bandwidth(rec, args, env)
                group.append(rec)
            add_ratios(group)
            print_group(section, case, group)
            common.append_jsonl(out_path, group)
            n_written += len(group)
    print(f"\n{n_written} records appended to {out_path} in {time.time() - t_start:.0f} s. Draw: python bench/plot.py"
          + (" --quick" if args.quick else ""))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        common.child_main(sys.argv[2:], run_measurement)
    else:
        sys.exit(main())
