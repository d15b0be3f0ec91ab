"""The training step replayed from a CUDA graph, against the same step run eagerly: how much of
a step is host time (issue #8, targets 3 and 4).

    python bench/graphed.py                        # 16xIEMOCAP and 16x1000, backends cuda (+ triton)
    python bench/graphed.py --quick                # 2xIEMOCAP and 2x30
    python bench/graphed.py --providers cuda --lengths 110

The step is bench/model.py's T3 step: the IEMOCAP preset (hidden 512, three graph modules of 7
layers, dropout 0.2, fused shift loss), forward, loss, backward and AdamW (amsgrad), on a
synthetic IEMOCAP-shaped batch. Both variants use the same model, batch and optimiser (torch's
fused AdamW with ``capturable=True``: its step count lives on the GPU):

- ``eager``: the step as the trainer runs it, timed from a device sync to a device sync;
- ``graphed``: the same step captured once in a CUDA graph (after three eager warm-up steps on
  a side stream, torch's recipe), then replayed. A replay launches the step's kernels with no
  Python, autograd or dispatcher work in between, so its time is the step's GPU time without
  launch gaps. (Dropout stays on: a replay draws new masks, as CUDA graphs advance the RNG
  offset.) graphsmile's ops are capturable: their per-batch tables go by value
  (``torch.ops.graphsmile.upload_by_value``, ``cuda_host::upload_meta``).

Rounds alternate: ``--steps`` eager steps, then as many replays, ``--reps`` times; medians.
``eager / graphed`` is what removing all host work would give a step of that shape. Only fixed
shapes replay: a trainer whose batches change shape every step cannot use one graph as is.

Results: ``bench/results/graphed.jsonl`` (device, date, torch, commit).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import fmt_s  # noqa: E402

import torch  # noqa: E402

import model as model_bench  # noqa: E402  (bench/model.py: the T3 model, batch and lengths)
import graphsmile.ops as gops  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--providers", default=None, help="comma list of our GPU backends (default: cuda, and triton "
                                                      "where installed)")
    ap.add_argument("--batch", type=int, default=16, help="dialogues per batch (default 16)")
    ap.add_argument("--lengths", type=int, nargs="*", default=[1000],
                    help="also BATCH dialogues of each of these lengths (default 1000)")
    ap.add_argument("--no-iemocap", action="store_true", help="without the IEMOCAP-shaped batch")
    ap.add_argument("--steps", type=int, default=10, help="steps per round and variant (default 10)")
    ap.add_argument("--reps", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--quick", action="store_true", help="2 dialogues, L = 30, 3 rounds of 3 steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSONL file (default bench/results/graphed.jsonl; "
                                                "--quick: bench/results/quick/graphed.jsonl)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.lengths, args.steps, args.reps = 2, [30], 3, 3
    for name in ("batch", "steps", "reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if any(L < 1 for L in args.lengths):
        ap.error(f"--lengths must be >= 1, got {args.lengths}")
    results = Path(__file__).resolve().parent / "results"
    args.out = Path(args.out) if args.out else (results / "quick" if args.quick else results) / "graphed.jsonl"
    known = ("cuda", "triton")
    if args.providers:
        args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
        bad = [p for p in args.providers if p not in known]
        if bad:
            ap.error(f"unknown provider(s) {bad}; choose from {list(known)}")
    else:
        args.providers = ["cuda"] + (["triton"] if gops._backend._TRITON else [])
    return args


def cases(args) -> List[Dict[str, Any]]:
    out = []
    if not args.no_iemocap:
        out.append(dict(label=f"{args.batch}xIEMOCAP", lengths=model_bench.iemocap_lengths(args.batch, args.seed)))
    out += [dict(label=f"{args.batch}x{L}", lengths=[L] * args.batch) for L in args.lengths]
    return out


def build_step(provider: str, lens: List[int], args):
    """The T3 training step on fixed tensors and the model's config: ``step()`` runs forward,
    loss, backward and the optimiser and returns the loss (a device tensor)."""
    from graphsmile.losses import MultiTaskLoss

    dev = args.device
    model, cfg = model_bench.build_model(provider, lens, args.seed, dev, torch.float32, 500_000)
    model.train()
    inputs, emo_y, sen_y, _ = model_bench.make_batch(lens, cfg, args.seed, dev, torch.float32, shift_labels=False)
    loss_fn = MultiTaskLoss.from_config(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.l2, amsgrad=True, fused=True, capturable=True)
    n_pairs = gops.num_shift_pairs(lens, cfg.shift_win)

    def step() -> torch.Tensor:
        # gradients zeroed, not dropped: the captured backward then accumulates into the .grad
        # tensors that exist at capture time, which the captured optimiser step reads
        opt.zero_grad(set_to_none=False)
        loss = model_bench.fused_step_loss(model, inputs, lens, emo_y, sen_y, loss_fn, n_pairs)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, cfg


def capture(step: Callable[[], torch.Tensor]):
    """(graph, static loss, seconds): three eager warm-up steps on a side stream, then one
    captured step."""
    t0 = time.perf_counter()
    graph, loss = gops.index.capture_cuda_graph(step, warmup=3)
    torch.cuda.synchronize()
    return graph, loss, time.perf_counter() - t0


def measure(provider: str, case: Dict[str, Any], args) -> Dict[str, Any]:
    lens = case["lengths"]
    step, cfg = build_step(provider, lens, args)
    graph, static_loss, capture_s = capture(step)
    samples: Dict[str, List[float]] = {"eager": [], "graphed": []}
    losses = {"eager": float("nan"), "graphed": float("nan")}

    def timed(variant: str, fn: Callable[[], Any]) -> None:
        for _ in range(args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            torch.cuda.synchronize()
            samples[variant].append(time.perf_counter() - t0)
            losses[variant] = float(out)

    for rep in range(args.reps):
        order = ("eager", "graphed") if rep % 2 == 0 else ("graphed", "eager")
        for v in order:
            timed(v, step if v == "eager" else lambda: (graph.replay(), static_loss)[1])
    if not all(x == x and abs(x) != float("inf") for x in losses.values()):
        raise RuntimeError(f"{provider} {case['label']}: non-finite loss {losses}")
    eager = common.summarize(samples["eager"])
    graphed = common.summarize(samples["graphed"])
    del graph
    return dict(
        provider=provider, case=case["label"], lengths=lens, N=sum(lens),
        E=gops.num_edges(lens, 2, cfg.win_p, cfg.win_f), eager=eager, graphed=graphed,
        eager_s=eager["median"], graphed_s=graphed["median"], ratio=eager["median"] / graphed["median"],
        capture_s=capture_s, last_loss=losses,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if not common.start(args):
        return 2
    env = common.env_info(args.device, "float32")
    run_id = common.new_run_id()
    print(f"GraphSmile training step, eager vs replayed from a CUDA graph, run {run_id}: {env['device_name']}, "
          f"torch {env['torch']}, git {str(env.get('git_commit'))[:10]}")
    print(f"  IEMOCAP preset, fp32; {args.reps} alternating rounds of {args.steps} steps per variant -> {args.out}")
    records = []
    print(f"{'case':<14} {'provider':<8} {'N':>6} {'eager':>10} {'graphed':>10} {'eager/graphed':>14} {'capture':>9}")
    for case in cases(args):
        for provider in args.providers:
            base = dict(bench="graphed", run_id=run_id, quick=args.quick, steps=args.steps, reps=args.reps, **env)
            try:
                rec = dict(base, status="ok", **measure(provider, case, args))
            except torch.cuda.OutOfMemoryError as exc:
                rec = dict(base, status="oom", provider=provider, case=case["label"], error=str(exc)[:300])
            except Exception as exc:   # e.g. a capture error: recorded, and the other cases still run
                rec = dict(base, status="error", provider=provider, case=case["label"],
                           error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            torch.cuda.empty_cache()
            records.append(rec)
            # appended one by one: a stage limit that cuts the run keeps the cases already measured
            common.append_jsonl(args.out, [rec])
            if rec["status"] != "ok":
                print(f"{case['label']:<14} {provider:<8} {'':>6} {rec['status']}: {rec.get('error', '')[:120]}")
                continue
            print(f"{case['label']:<14} {provider:<8} {rec['N']:>6} {fmt_s(rec['eager_s']):>10} {fmt_s(rec['graphed_s']):>10} "
                  f"{rec['ratio']:>13.2f}x {fmt_s(rec['capture_s']):>9}")
    print(f"{len(records)} records appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
