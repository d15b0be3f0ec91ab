"""Host time of a training step whose arithmetic is nil: the floor of a launch-bound step.

    python bench/host.py                       # CPU: step phases and per-call times
    python bench/host.py --device cuda         # on a GPU: the same, with the CUDA kernels
    python bench/host.py --quick               # fewer repetitions (CI-sized)
    python bench/host.py --compare-tree /tmp/old   # A/B against another (built) checkout
    python bench/host.py --compiled            # + the model under torch.compile (inductor)

Why: on an H200 a training step of the IEMOCAP preset on a real-shaped batch (16 dialogues,
759 utterances) took 22 ms while its kernels took about 12.8 ms (bench/GPU_NOTES.md, T3 and
T4): the GPU waits for the host to issue the step. That host time can be measured without a
GPU. This benchmark runs the preset's model -- three graph modules of 7 layers, the fused shift
loss, the multi-task loss, AdamW (amsgrad) as the trainer builds it -- with every width set to
``--width`` (8) and ``--batch`` (16) dialogues of ``--length`` (2) utterances, so that the
kernels' work is nil and a step's time is what the host spends on it: Python, the dispatcher,
autograd, and each kernel's fixed cost.

Step variants, run interleaved (``--reps`` rounds of ``--steps`` steps each):

- ``model``: the step as the trainer runs it;
- ``no_window_ops``: the same step with each graph module's ``window_norm`` replaced by
  ``w.sum() * 0 + 1`` over the nodes and each ``window_spmm`` by ``z * s[:, None]`` (one
  elementwise op each): what the rest of the step costs. The difference is the window ops'
  host time.
- ``compiled`` (with ``--compiled``): the model's forward under ``torch.compile`` (inductor,
  static shapes; ``--compiled BACKEND`` for another backend), as ``Trainer(compile=True)`` runs
  it; compiled during the warm-up (about a
  minute on 2 CPU cores). Its ops are not counted (a dispatch mode makes compiled code fall
  back to eager).

Per phase (forward, backward, optimiser step) the median wall time, and the number of ops
dispatched below autograd (``aten`` and ``graphsmile`` ops, views included: on a GPU most
become kernel launches), counted in one extra step under a dispatch mode.

Per call (``calls``): the host time of one ``window_spmm`` at the same size, forward alone
and forward + backward, through :class:`graphsmile.ops.WindowGraph` (what the model calls),
through the free function ``window_spmm``, and as the raw registered op without autograd; and
``torch.mm`` of the same tensors for scale. On a GPU these are the time to queue the calls
(the device synchronised once after them).

``--compare-tree PATH`` measures this tree and another checkout of graphsmile (its extension
built in place, e.g. ``git worktree add /tmp/old <commit>`` then ``python setup.py build_ext
--inplace`` there) side by side: ``--reps`` alternating child processes of this script, each
importing graphsmile from its tree, one round each; the table gives both trees' medians and
their ratio. (A tree that predates :class:`graphsmile.ops.WindowGraph` has its free functions
stood in for in ``no_window_ops``, and no ``graph.spmm`` calls.)

Results: one JSON line per variant and per call kind, appended to ``--out`` (default
``bench/results/host.jsonl``) with device name, date, torch version and git commit.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import fmt_s  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import graphsmile.ops as gops  # noqa: E402

VARIANTS = ("model", "no_window_ops")
PHASES = ("fwd", "bwd", "opt")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", help="the model's backend (default auto: cpu / cuda)")
    ap.add_argument("--width", type=int, default=8, help="hidden and feature widths (default 8)")
    ap.add_argument("--batch", type=int, default=16, help="dialogues per batch (default 16)")
    ap.add_argument("--length", type=int, default=2, help="utterances per dialogue (default 2)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and variant (default 10)")
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--call-reps", type=int, default=2000, help="calls per per-call measurement (default 2000)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: host time, not parallel kernels)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 5 steps, 300 calls")
    ap.add_argument("--compiled", nargs="?", const="inductor", default=None, metavar="BACKEND",
                    help="also the variant 'compiled': the model's forward under torch.compile (default backend inductor)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "host.jsonl"))
    ap.add_argument("--compare-tree", metavar="PATH", help="another built checkout to measure side by side")
    ap.add_argument("--child-out", help=argparse.SUPPRESS)  # compare mode: a child's records, as JSON
    ap.add_argument("--tree-commit", help=argparse.SUPPRESS)  # compare mode: the child's tree's commit
    ap.add_argument("--tree-dirty", type=int, choices=(0, 1), help=argparse.SUPPRESS)  # ... and whether it had changes
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.call_reps = 5, 3, 300
    for name in ("width", "batch", "length", "steps", "reps", "call_reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


class OpCounter(TorchDispatchMode):
    """Counts the ops dispatched below autograd, by name."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _cheap_norm(graph, w):
    # one op per call, shaped as window_norm's output, differentiable in w
    return w.sum() * 0 + torch.ones(graph.num_modal * graph.num_nodes, device=w.device, dtype=w.dtype)


def _cheap_spmm(graph, x, w, s):
    return x * s[:, None]


class _NoWindowOps:
    """Within the block, WindowGraph.norm / .spmm are the one-op stand-ins above (in a tree
    without WindowGraph: the free functions, which its model calls)."""

    def __enter__(self):
        if hasattr(gops, "WindowGraph"):
            self.owner, self.names = gops.WindowGraph, ("norm", "spmm")
            stand_ins = (_cheap_norm, _cheap_spmm)
        else:
            self.owner, self.names = gops, ("window_norm", "window_spmm")
            stand_ins = (lambda w, lens, M, *a: torch.ones(M * sum(lens), device=w.device, dtype=w.dtype) + w.sum() * 0,
                         lambda x, w, s, *a: x * s[:, None])
        self.saved = [getattr(self.owner, n) for n in self.names]
        for n, f in zip(self.names, stand_ins):
            setattr(self.owner, n, f)
        return self

    def __exit__(self, *exc):
        for n, f in zip(self.names, self.saved):
            setattr(self.owner, n, f)


def build_step(args):
    """The preset's model at width ``args.width`` and one training step on a tiny batch, as
    bench/model.py times it (T3): returns ``step() -> {phase: seconds}`` and the model config."""
    import model as model_bench  # bench/model.py: the same batch and loss as the T3 benchmark
    from graphsmile.config import GraphSmileConfig
    from graphsmile.losses import MultiTaskLoss
    from graphsmile.model import GraphSmile

    try:
        from graphsmile.train.trainer import make_optimizer
    except ImportError:  # a tree from before make_optimizer (--compare-tree): its trainer's AdamW
        def make_optimizer(params, cfg):
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.l2, amsgrad=True)

    lens = [args.length] * args.batch
    W = args.width
    cfg0 = GraphSmileConfig.preset("IEMOCAP")
    E = gops.num_edges(lens, 2, cfg0.win_p, cfg0.win_f)
    cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=W, dim_t=W, dim_v=W, dim_a=W, edge_capacity=E,
                                  backend=args.backend)
    torch.manual_seed(0)
    model = GraphSmile(cfg).to(args.device).train()
    inputs, emo_y, sen_y, _ = model_bench.make_batch(lens, cfg, 0, args.device, torch.float32, shift_labels=False)
    loss_fn = MultiTaskLoss.from_config(cfg)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)  # as the trainer builds it
    n_pairs = gops.num_shift_pairs(lens, cfg.shift_win)
    dev = args.device

    def step(phase_context: Callable[[str], Any] = lambda phase: contextlib.nullcontext()) -> Dict[str, float]:
        opt.zero_grad(set_to_none=True)
        common.sync(dev)
        t0 = time.perf_counter()
        with phase_context("fwd"):
            loss = model_bench.fused_step_loss(model, inputs, lens, emo_y, sen_y, loss_fn, n_pairs)
        common.sync(dev)
        t1 = time.perf_counter()
        with phase_context("bwd"):
            loss.backward()
        common.sync(dev)
        t2 = time.perf_counter()
        with phase_context("opt"):
            opt.step()
        common.sync(dev)
        t3 = time.perf_counter()
        return {"fwd": t1 - t0, "bwd": t2 - t1, "opt": t3 - t2, "total": t3 - t0}

    step.model = model
    return step, cfg, lens, E


class _Compiled:
    """Within the block, the model's forward is the torch.compile'd one (inductor, static
    shapes: one batch structure here), compiled on first use and kept across blocks."""

    def __init__(self, model, backend: str = "inductor"):
        self.model, self.backend = model, backend
        self.eager = model.forward
        self.compiled = None

    def __enter__(self):
        if self.compiled is None:
            self.compiled = torch.compile(self.eager, dynamic=False, backend=self.backend)
        self.model.forward = self.compiled
        return self

    def __exit__(self, *exc):
        self.model.forward = self.eager


def variant_context(variant: str, compiled: "Optional[_Compiled]"):
    if variant == "no_window_ops":
        return _NoWindowOps()
    if variant == "compiled":
        return compiled
    return contextlib.nullcontext()


def count_ops(step: Callable, variant: str) -> Optional[Dict[str, Dict[str, Any]]]:
    """Ops dispatched per phase of one step (run under a counter per phase). None for the
    compiled variant: a dispatch mode makes compiled code fall back to eager."""
    if variant == "compiled":
        return None
    counters = {p: OpCounter() for p in PHASES}
    with variant_context(variant, None):
        step(lambda phase: counters[phase])
    return {p: {"total": sum(c.counts.values()), "top": c.counts.most_common(8)} for p, c in counters.items()}


def time_steps(step: Callable, args, variants) -> Dict[str, Dict[str, List[float]]]:
    samples = {v: {p: [] for p in (*PHASES, "total")} for v in variants}
    compiled = _Compiled(step.model, args.compiled) if "compiled" in variants else None
    for v in variants:  # warm-up: lazy initialisation, optimiser state, caches (and compilation)
        with variant_context(v, compiled):
            for _ in range(3):
                step()
    for _ in range(args.reps):
        for v in variants:
            with variant_context(v, compiled):
                for _ in range(args.steps):
                    r = step()
                    for k, t in r.items():
                        samples[v][k].append(t)
    return samples


def time_calls(args, lens, cfg) -> Dict[str, float]:
    """Host seconds per call of window_spmm at this size, by path (see the module docstring)."""
    dev, W, M = args.device, args.width, 2
    graph = gops.WindowGraph(lens, M, cfg.win_p, cfg.win_f, "per_edge", args.backend) if hasattr(gops, "WindowGraph") else None
    w = torch.rand(gops.num_edges(lens, M, cfg.win_p, cfg.win_f), device=dev, requires_grad=True)
    x = torch.randn(M * sum(lens), W, device=dev, requires_grad=True)
    with torch.no_grad():
        s0 = gops.window_norm(w, lens, M, cfg.win_p, cfg.win_f, backend=args.backend)
    s = s0.clone().requires_grad_()
    g = torch.randn_like(x)
    L = torch.tensor(lens)
    raw_ok = gops.HAS_EXTENSION and gops._backend.resolve(args.backend, x.device, x.dtype, True) in ("cpu", "cuda")

    def per_call(fn: Callable[[], Any], n: int) -> float:
        for _ in range(min(n, 50)):
            fn()
        common.sync(dev)
        t = time.perf_counter()
        for _ in range(n):
            fn()
        common.sync(dev)
        return (time.perf_counter() - t) / n

    def fwd_bwd(f):
        def run():
            torch.autograd.backward(f(), g)
        return run

    cases: Dict[str, Callable[[], Any]] = {}
    if graph is not None:
        cases["graph.spmm fwd"] = lambda: graph.spmm(x, w, s)
        cases["graph.spmm fwd+bwd"] = fwd_bwd(lambda: graph.spmm(x, w, s))
    cases.update({
        "window_spmm fwd": lambda: gops.window_spmm(x, w, s, lens, M, cfg.win_p, cfg.win_f, backend=args.backend),
        "window_spmm fwd+bwd": fwd_bwd(lambda: gops.window_spmm(x, w, s, lens, M, cfg.win_p, cfg.win_f,
                                                                 backend=args.backend)),
        "torch.mm fwd+bwd (scale)": fwd_bwd(lambda: torch.mm(x, torch.ones(W, W, device=dev))),
    })
    if raw_ok:
        def raw():
            with torch.no_grad():
                torch.ops.graphsmile.window_spmm(x, w, s, L, M, cfg.win_p, cfg.win_f, 0)
                torch.ops.graphsmile.window_spmm_backward(g, x, w, s, L, M, cfg.win_p, cfg.win_f, 0, [True] * 3)
        cases["raw ops fwd+bwd (no autograd)"] = raw
    out = {}
    for name, fn in cases.items():
        out[name] = min(per_call(fn, args.call_reps) for _ in range(3))
    return out


def measure(args, tree_commit=None, tree_dirty=None) -> List[Dict[str, Any]]:
    """This process's records: one per step variant (phase samples, medians, op counts) and one
    per call kind."""
    env = common.env_info(args.device, "float32")
    if tree_commit is not None:  # a child measuring another checkout: its commit, not this script's
        env.update(git_commit=tree_commit, git_dirty=tree_dirty)
    step, cfg, lens, E = build_step(args)
    variants = VARIANTS + (("compiled",) if args.compiled else ())
    samples = time_steps(step, args, variants)
    counts = {v: count_ops(step, v) for v in variants}
    calls = time_calls(args, lens, cfg)
    base = dict(bench="host", preset="IEMOCAP", compile_backend=args.compiled, width=args.width, batch=args.batch,
                length=args.length, N=sum(lens), E=E, backend=args.backend, steps=args.steps, reps=args.reps,
                graphsmile_path=str(Path(gops.__file__).resolve().parents[1]), **env)
    records = []
    for v in variants:
        rec = dict(base, op="train_step", variant=v, samples=samples[v])
        rec["ops_dispatched"] = {p: counts[v][p]["total"] for p in PHASES} if counts[v] else None
        rec["top_ops"] = {p: counts[v][p]["top"] for p in PHASES} if counts[v] else None
        records.append(rec)
    for name, t in calls.items():
        records.append(dict(base, op="call", variant=name, time_s=t, call_reps=args.call_reps))
    return records


def summarise(records: List[Dict[str, Any]]) -> None:
    for rec in records:
        if rec["op"] == "train_step":
            for k, xs in rec["samples"].items():
                rec[f"{k}_s"] = common.summarize(xs)


def print_tables(records: List[Dict[str, Any]], label: str = "") -> None:
    steps = [r for r in records if r["op"] == "train_step"]
    print(f"\n{label}{'variant':14} {'forward':>9} {'backward':>9} {'optimiser':>9} {'step':>9}   ops dispatched (fwd / bwd / opt)")
    for rec in steps:
        n = rec["ops_dispatched"]
        print(f"{label}{rec['variant']:14} " + " ".join(f"{fmt_s(rec[f'{k}_s']['median']):>9}" for k in (*PHASES, "total"))
              + (f"   {n['fwd']} / {n['bwd']} / {n['opt']}" if n else "   -"))
    by = {r["variant"]: r for r in steps}
    m, r = by["model"], by["no_window_ops"]
    for k in ("fwd", "bwd", "total"):
        d = m[f"{k}_s"]["median"] - r[f"{k}_s"]["median"]
        print(f"{label}  the window ops' share of the {k:5}: {fmt_s(d)} ({100 * d / m[f'{k}_s']['median']:.0f}%)")
    if "compiled" in by:
        c = by["compiled"]
        print(f"{label}  compiled / model: " + "  ".join(
            f"{k} {c[f'{k}_s']['median'] / m[f'{k}_s']['median']:.2f}" for k in (*PHASES, "total")))
    print(f"{label}per call of window_spmm at this size (host time; best of 3 batches of calls):")
    for rec in records:
        if rec["op"] == "call":
            print(f"{label}  {fmt_s(rec['time_s']):>9}  {rec['variant']}")


def child_args(args, reps: int, out: str) -> List[str]:
    return ["--device", args.device, "--backend", args.backend, "--width", str(args.width), "--batch", str(args.batch),
            "--length", str(args.length), "--steps", str(args.steps), "--reps", str(reps), "--call-reps",
            str(args.call_reps), "--threads", str(args.threads), "--child-out", out] + (["--compiled", args.compiled] if args.compiled else [])


def compare(args, run_id: str) -> List[Dict[str, Any]]:
    """This tree and ``args.compare_tree`` side by side: alternating child processes."""
    import json
    import os
    import subprocess
    import tempfile

    trees = {"this": Path(__file__).resolve().parents[1], "other": Path(args.compare_tree).resolve()}
    if not (trees["other"] / "graphsmile" / "__init__.py").is_file():
        raise SystemExit(f"--compare-tree {args.compare_tree}: no graphsmile package there")
    commits, dirty = {}, {}
    for k, t in trees.items():
        r = subprocess.run(["git", "-C", str(t), "rev-parse", "HEAD"], capture_output=True, text=True)
        commits[k] = r.stdout.strip() or None
        r = subprocess.run(["git", "-C", str(t), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True)
        dirty[k] = bool(r.stdout.strip()) if commits[k] else None
    merged: Dict[str, List[Dict[str, Any]]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for k in ("other", "this") if rep % 2 else ("this", "other"):
                out = os.path.join(tmp, f"{k}-{rep}.json")
                env = dict(os.environ, PYTHONPATH=str(trees[k]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                           GRAPHSMILE_BENCH_TREE=str(trees[k]))
                cmd = [sys.executable, str(Path(__file__).resolve()), *child_args(args, 1, out)]
                if commits[k]:
                    cmd += ["--tree-commit", commits[k], "--tree-dirty", str(int(dirty[k]))]
                subprocess.run(cmd, env=env, check=True)
                with open(out) as f:
                    recs = json.load(f)
                measured = {Path(r["graphsmile_path"]).resolve() for r in recs if r.get("graphsmile_path")}
                if measured != {(Path(trees[k]) / "graphsmile").resolve()}:
                    raise RuntimeError(f"the {k} tree's run imported graphsmile from {sorted(map(str, measured))}, "
                                       f"not from {trees[k]}")
                if not merged[k]:
                    merged[k] = recs
                    continue
                for old, new in zip(merged[k], recs):  # same order: variants, then call kinds
                    if old["op"] == "train_step":
                        for ph, xs in new["samples"].items():
                            old["samples"][ph] += xs
                    else:
                        old["time_s"] = min(old["time_s"], new["time_s"])
    out_records = []
    for k in ("this", "other"):
        for rec in merged[k]:
            rec.update(run_id=run_id, reps=args.reps, compare=k, compare_trees={t: str(p) for t, p in trees.items()},
                       compare_commits=commits)
            out_records.append(rec)
    summarise(out_records)
    return out_records


def main(argv=None) -> int:
    args = parse_args(argv)
    if not common.start(args):
        return 2
    if args.child_out:
        import json

        records = measure(args, args.tree_commit, None if args.tree_dirty is None else bool(args.tree_dirty))
        with open(args.child_out, "w") as f:
            json.dump(records, f, default=common._json_default)
        return 0
    run_id = common.new_run_id()
    env = common.env_info(args.device, "float32")
    print(f"GraphSmile host-time benchmark, run {run_id}: {env['device_name']} ({args.device}, {env['threads']} "
          f"threads), torch {env['torch']}, git {str(env['git_commit'])[:10]}")
    print(f"  the IEMOCAP preset's structure at width {args.width}: {args.batch} dialogues of {args.length} "
          f"utterances; {args.reps} rounds x {args.steps} steps per variant")
    if args.compare_tree:
        records = compare(args, run_id)
        for k in ("this", "other"):
            recs = [r for r in records if r["compare"] == k]
            print(f"\n[{k}] {recs[0]['graphsmile_path']} at {str(recs[0]['git_commit'])[:10]}")
            print_tables(recs, f"[{k}] ")
        this = {(r["op"], r["variant"]): r for r in records if r["compare"] == "this"}
        print("\nthis / other (< 1: this tree is faster):")
        for r in records:
            if r["compare"] != "other" or (r["op"], r["variant"]) not in this:
                continue
            t = this[(r["op"], r["variant"])]
            if r["op"] == "train_step":
                print(f"  {r['variant']:14} " + "  ".join(
                    f"{k} {t[f'{k}_s']['median'] / r[f'{k}_s']['median']:.2f}" for k in (*PHASES, "total")))
            else:
                print(f"  call {r['variant']:32} {t['time_s'] / r['time_s']:.2f}")
    else:
        records = measure(args)
        for rec in records:
            rec["run_id"] = run_id
        summarise(records)
        print(f"  N = {records[0]['N']}, E = {records[0]['E']} per graph module")
        print_tables(records)
    for rec in records:
        rec["quick"] = args.quick
    common.append_jsonl(Path(args.out), records)
    print(f"\n{len(records)} records appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
