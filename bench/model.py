"""One full GraphSmile training step (forward, loss, backward, AdamW step) per backend.

    python bench/model.py                      # CPU, IEMOCAP-6 preset, B=16, L 50 .. 5000 + 1x20000
    python bench/model.py --quick              # small end-to-end run (results/quick/)
    python bench/model.py --device cuda --providers cuda,triton,original
    python bench/model.py --lengths 50 110 250 --no-single
    python bench/model.py --iemocap            # + 16 dialogues with IEMOCAP-distributed lengths
    python bench/model.py --device cuda --isolate none --preset gpu-targets   # issue #8 target 3
    python bench/model.py --lengths --single 20000 --shift-win -1 --providers cpu   # whole-dialogue shift pairs
    python bench/model.py --device cuda --isolate none --preset gpu-targets --compile --no-single   # ours under torch.compile

Model: ``GraphSmile(GraphSmileConfig.preset("IEMOCAP"))`` -- hidden 512, three graph modules of
7 layers, win (17, 17), shift_win 19, dropout 0.2, loss ``emo_sen_sft`` with lambd (1, 1, 0.7),
AdamW (amsgrad, lr 1e-4, weight decay 1e-4: ours fused, as the trainer builds it; the original's
torch's default kernel), training mode. Batches: synthetic, IEMOCAP-shaped (text 1024, visual
342, audio 1582, padded time-major ``[T, B, D]``), ``B`` dialogues of ``L`` utterances, and one
dialogue of 20,000.

Providers:

- graphsmile's backends (``cpu``, ``reference``; ``cuda``, ``triton`` on a GPU), each with a
  per-edge weight vector large enough for the batch (``edge_capacity = max(500000, E)``);
- ``original``: the original's math in the same model -- each graph module's forward replaced
  by the original ``HeterGConv_Edge`` computation (Python-loop edges, dense ``[2N, 2N]``
  adjacency and diagonal products once per module and forward, ``spmm`` per layer; see
  bench/baselines.py) and the shift head's ``[P, 2H]`` pair embeddings; 500,000 edge weights;
- ``dense``: the model with ``config.backend="dense"`` -- the same dense math, but through the
  op API, which rebuilds the dense normalised adjacency in every layer (``window_spmm``), so it
  is slower than the original by about the number of layers. Not run by default.

A batch with more edges than the original's 500,000 is recorded as "edge-capacity exceeded" for
``original`` and ``dense``. Results: ``bench/results/model.jsonl``.

``--compile [BACKEND]``: our providers' model under ``torch.compile`` (inductor by default), as
``graphsmile train --compile`` runs it; the original stays eager, as it is. Each case's warm-up
compiles (a tiny batch, then the case's shapes); the timed steps reuse the compiled code. The
correctness check runs the models eagerly. Records carry ``compile_backend``.

Timing: each step is timed phase by phase (forward, backward, optimiser), with the device
synchronised between phases: ``time_s`` and the T3 verdicts. A training loop does not wait
between phases or steps, so while the GPU runs one step's kernels the host already issues the
next ones. ``pipelined_s`` is that: rounds of steps run back to back with one synchronisation per
round, per step (median of 3 rounds, each at least 0.1 s or 3 steps). Printed as "back-to-back";
the IEMOCAP batch gets a second T3 line from it, beside the phase-timed one, never instead.

``--tf32``: every provider's fp32 matrix products in TF32 on tensor cores
(``torch.set_float32_matmul_precision("high")``, as ``graphsmile train --tf32``), the original's
too, so that the ratios still compare the same arithmetic; records carry ``tf32`` and the verdict
lines say ``tf32``: they stand beside the fp32 lines, by which the T3 targets are judged.

Kernels (CUDA, ``--no-profile`` skips it): after a case's timed steps, one more back-to-back step
runs under ``torch.profiler``. The record's ``kernels`` holds that step's GPU busy time
(``kernel_time_s``: kernels, copies and memsets summed; no host time, no idle gaps), its
``launches``, the time by kind (``kinds``: graphsmile's graph ops, GEMM, aten's elementwise and
reduction kernels, the optimiser, inductor's kernels under ``--compile``, copies; see
``common.KERNEL_KINDS``) and the ``top_kernels``. They are printed under each case's table: what
bounds the step, for ours and the original alike.

Shift loss: our backends use the trainer's default, the fused ``shift_pair_nll`` (no ``[P, 2]``
logits); ``--shift-loss logits`` gives them the ``[P, 2]`` path the original uses (for A/B).
``--shift-win`` overrides the preset's 19 (``-1``: pairs over whole dialogues, P = L^2 each).

Cases: ``B`` dialogues of each ``L`` (``--lengths``), one dialogue of ``--single`` utterances, and
with ``--iemocap`` a real-shaped batch ``BxIEMOCAP``: ``B`` dialogue lengths drawn (seeded, without
replacement) from the IEMOCAP-6 train split's length distribution as graphsmile's synthetic
generator reproduces it (120 dialogues, 5,810 utterances, 8..110; :func:`iemocap_lengths`).

``--preset gpu-targets`` (issue #8 target 3; ``--quick`` scales it down): the ``16xIEMOCAP``
batch, ``16x1000`` and ``1x20000``, our GPU backends and ``original``; the verdicts (>= 5x the
original on the IEMOCAP batch, >= 100x or the original cannot run at L = 1000, no OOM at 1x20000)
are printed at the end and appended to ``model_targets.jsonl`` next to the results.
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import fmt_bytes, fmt_s  # noqa: E402

import torch  # noqa: E402

import baselines  # noqa: E402
import ops as opbench  # noqa: E402  (bench/ops.py: shared helpers)
import graphsmile.ops as gops  # noqa: E402

SCRIPT = Path(__file__).resolve()
PROVIDERS_EXTRA = ("original", "dense")

# issue #8 target 3 (on a GPU)
TARGET_IEMOCAP_SPEEDUP = 5.0     # training step on a real-shaped IEMOCAP batch: >= 5x the original
TARGET_L1000_SPEEDUP = 100.0     # at L = 1000: >= 100x, or the original cannot run at all
TARGET_SINGLE_L = 20000          # no OOM up to one dialogue of 20,000 utterances (D = 512, 7 layers)
CANNOT_RUN = ("edge-capacity exceeded", "oom", "skipped")  # skipped: only by the memory guard ("would need ...")

PRESETS = {
    "gpu-targets": {
        "full": dict(iemocap=True, lengths=[1000], batch=16, single=20000, reps=5, budget_s=60.0),
        "quick": dict(iemocap=True, lengths=[30], batch=2, single=150, reps=2, budget_s=30.0),
    },
}
# IEMOCAP-6 emotion -> sentiment (SPEC 7): {1,3,5} -> 0, {2} -> 1, {0,4} -> 2
SENTIMENT_OF_EMOTION = [2, 0, 1, 0, 2, 0]


def iemocap_lengths(batch: int = 16, seed: int = 0) -> List[int]:
    """``batch`` dialogue lengths drawn without replacement (seeded) from IEMOCAP-6's train split
    as graphsmile's synthetic generator reproduces it: 120 dialogues, 5,810 utterances, lengths
    8..110 around the real mean (gamma-distributed; ``graphsmile.data.synthetic``)."""
    import numpy as np
    from graphsmile.data import synthetic

    sizes = synthetic.REAL_SIZES["IEMOCAP"]
    train = sizes.splits[0]
    rng = np.random.default_rng(seed)
    pool = synthetic._fit_lengths(rng, train.dialogues, train.utterances, sizes.min_len, sizes.max_len, sizes.gamma_shape)
    pick = rng.choice(len(pool), size=min(batch, len(pool)), replace=False)
    return [int(v) for v in pool[pick]]


def default_providers(device: str) -> List[str]:
    return baselines.available_backends(device) + ["original"]


def all_providers(device: str) -> List[str]:
    return baselines.available_backends(device) + list(PROVIDERS_EXTRA)


# --- the original's graph module, patched into our model ----------------------------------


def _original_graph_forward(self, features, lengths):
    """The original ``HeterGConv_Edge.forward`` on this module's parameters (bench/baselines.py
    ``dense_prepare``: loops, dense adjacency, ``gcn_fact`` once per forward)."""
    from graphsmile.ops.index import lengths_to_list

    lens = lengths_to_list(lengths)
    x = features if isinstance(features, torch.Tensor) else torch.cat(list(features), dim=0)
    M = self.num_modal
    propagate = baselines.dense_prepare(lens, M, self.win_p, self.win_f, capacity=self.edge_weight.numel())(self.edge_weight)
    out = x
    h = x
    for layer, fc in zip(self.hetergcn_layers, self.fc_layers):
        h = layer(h, propagate)
        out = out + fc(h)
    return tuple(out.chunk(M, dim=0))


def preset(shift_win: Optional[int] = None):
    from graphsmile.config import GraphSmileConfig

    cfg = GraphSmileConfig.preset("IEMOCAP")
    return cfg if shift_win is None else cfg.replace(shift_win=shift_win)


def build_model(provider: str, lens: List[int], seed: int, device: str, dtype: torch.dtype, capacity: int,
                shift_win: Optional[int] = None):
    from graphsmile.model import GraphSmile

    backend = "dense" if provider in PROVIDERS_EXTRA else provider
    cfg = preset(shift_win)
    # the original's 500,000 per-edge weights for original/dense; ours: as many as the batch needs
    cap = capacity if provider in PROVIDERS_EXTRA else max(capacity, gops.num_edges(lens, 2, cfg.win_p, cfg.win_f))
    cfg = cfg.replace(backend=backend, edge_capacity=cap)
    torch.manual_seed(seed)
    model = GraphSmile(cfg)
    if provider == "original":
        for m in (model.hetergconv_tv, model.hetergconv_ta, model.hetergconv_va):
            m.forward = types.MethodType(_original_graph_forward, m)
    return model.to(device=device, dtype=dtype), cfg


def make_batch(lens: List[int], cfg, seed: int, device: str, dtype: torch.dtype, shift_labels: bool = True):
    """A synthetic IEMOCAP-shaped padded batch and its packed labels (the ``[P]`` shift-pair
    labels only with ``shift_labels``: the fused loss needs none, and at ``shift_win = -1`` they
    are quadratic in the lengths)."""
    g = torch.Generator().manual_seed(seed + 11)
    T, B = max(lens), len(lens)
    Dt, Dv, Da = cfg.feature_dims
    mask = (torch.arange(T)[:, None] < torch.tensor(lens)[None, :]).to(dtype)

    def feat(d):
        return (torch.randn(T, B, d, generator=g) * mask[:, :, None]).to(device=device, dtype=dtype)

    text = feat(Dt)
    visual, audio = feat(Dv), feat(Da)
    spk = torch.randint(0, 2, (T, B), generator=g)
    qmask = torch.nn.functional.one_hot(spk, 2).to(device=device, dtype=dtype)
    N = sum(lens)
    emotion = torch.randint(0, cfg.num_emotions, (N,), generator=g)
    sentiment = torch.tensor(SENTIMENT_OF_EMOTION[: cfg.num_emotions] + [0] * max(0, cfg.num_emotions - 6))[emotion]
    shift = gops.shift_pair_labels(sentiment, lens, cfg.shift_win).to(device) if shift_labels else None
    inputs = (text, text, text, text, visual, audio, mask.to(device), qmask)
    return inputs, emotion.to(device), sentiment.to(device), shift


def estimate_model_bytes(provider: str, lens: List[int], itemsize: int = 4, shift_win: int = 19, fused_shift: bool = False) -> int:
    """Rough peak of one training step (guard only): inputs and their BatchNorm/projection
    activations, three graph modules of 7 layers at H=512, the shift head (its ``[P, 2]``
    logits path unless ``fused_shift``), and for the dense providers their [2N, 2N] matrices
    (original: ~12 per module; dense: ~6 per layer)."""
    N, T, B, H, K = sum(lens), max(lens), len(lens), 512, 7
    inputs = T * B * (1024 + 342 + 1582) * itemsize * 2 + N * (1024 + 342 + 1582) * itemsize * 3
    graphs = 3 * (3.5 * K + 4) * 2 * N * H * itemsize
    P = gops.num_shift_pairs(lens, shift_win)
    shift = 0 if fused_shift else 10 * P * 4 * itemsize
    est = inputs + graphs + 12 * N * H * itemsize + shift + 400e6  # + parameters and AdamW state
    n = 2 * N
    if provider == "original":
        est += 3 * 12 * n * n * itemsize + 3 * P * 2 * H * itemsize
    elif provider == "dense":
        est += 3 * K * 6 * n * n * itemsize + 3 * P * 2 * H * itemsize
    return int(est)


def fused_step_loss(net, inputs, lengths, emo_y, sen_y, loss_fn, n_pairs: int) -> torch.Tensor:
    """The T3 step's loss as the trainer computes it with the fused shift loss: the model's
    emotion and sentiment NLL means and its shift NLL summed over the ``n_pairs`` pairs (given
    ``shift_sentiment``, the model returns that sum), combined by ``loss_fn``
    (:func:`graphsmile.train.trainer.combine_parts`). Shared by bench/host.py and
    bench/graphed.py, so that the three benchmarks time the same step."""
    from graphsmile.losses import nll_loss
    from graphsmile.train.trainer import combine_parts

    emo, sen, (sft_sum, _), _ = net(*inputs, lengths=lengths, shift_sentiment=sen_y)
    parts = {"emo": nll_loss(emo, emo_y), "sen": nll_loss(sen, sen_y), "sft": sft_sum / n_pairs}
    return combine_parts(loss_fn, parts, None)


# --- one measurement ----------------------------------------------------------------------


def run_measurement(spec: Dict[str, Any]) -> Dict[str, Any]:
    from graphsmile.losses import MultiTaskLoss
    from graphsmile.train.trainer import make_optimizer

    if spec.get("tf32"):  # every provider's products (a child process starts at torch's default)
        torch.set_float32_matmul_precision("high")

    dev = spec["device"]
    dt = common.parse_dtype(spec["dtype"])
    lens = spec["lengths"]
    model, cfg = build_model(spec["provider"], lens, spec["seed"], dev, dt, spec["dense_capacity"], spec.get("shift_win"))
    model.train()
    # --compile: ours under torch.compile (the parameters stay the model's; the original stays eager)
    net = model
    if spec.get("compile") and spec["provider"] not in PROVIDERS_EXTRA:
        net = torch.compile(model, backend=spec["compile"])
    # ours: the trainer's default shift loss (config.shift_loss="fused": head + NLL in one op,
    # no [P, 2] logits); original and dense: the [P, 2] logits, then log_softmax and NLL
    fused_shift = spec["provider"] not in PROVIDERS_EXTRA and spec.get("shift_loss", "fused") == "fused"
    inputs, emotion, sentiment, shift = make_batch(lens, cfg, spec["seed"], dev, dt, shift_labels=not fused_shift)
    loss_fn = MultiTaskLoss.from_config(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    if spec["provider"] in PROVIDERS_EXTRA:  # the original's optimiser: torch's default AdamW kernel
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.l2, amsgrad=True)
    else:  # as the trainer builds it: the fused kernel where the device has one
        opt = make_optimizer(params, cfg)
    holder: Dict[str, Any] = {}

    def make_loss(batch):
        inp, emo_y, sen_y, sft_y, lns = batch
        n_pairs = gops.num_shift_pairs(lns, cfg.shift_win)

        def loss_of_step() -> torch.Tensor:
            if fused_shift:
                return fused_step_loss(net, inp, lns, emo_y, sen_y, loss_fn, n_pairs)
            emo, sen, sft, _ = net(*inp, lengths=lns)
            return loss_fn(emo, sen, sft, emo_y, sen_y, sft_y)[0]

        return loss_of_step

    def make_step(loss_of_step):
        def step() -> Dict[str, float]:
            opt.zero_grad(set_to_none=True)
            common.sync(dev)
            t0 = time.perf_counter()
            loss = loss_of_step()
            common.sync(dev)
            t1 = time.perf_counter()
            loss.backward()
            common.sync(dev)
            t2 = time.perf_counter()
            opt.step()
            common.sync(dev)
            t3 = time.perf_counter()
            holder["loss"] = float(loss.detach())
            return {"fwd": t1 - t0, "bwd": t2 - t1, "opt": t3 - t2, "total": t3 - t0}

        return step

    notes: Dict[str, Any] = {}

    def prewarm():
        # two steps on a tiny batch: lazy initialisation and the AdamW state are in place before
        # the measurement, so the peak is that of a steady-state step
        torch.manual_seed(spec["seed"] + 5)
        tiny = [3, 2]
        ti, te, ts, tsh = make_batch(tiny, cfg, spec["seed"] + 1, dev, dt, shift_labels=not fused_shift)
        st = make_step(make_loss((ti, te, ts, tsh, tiny)))
        st()
        st()
        del ti, te, ts, tsh, st
        if dev.startswith("cuda") or net is not model:
            # one untimed step at this size (JIT, cuBLAS workspaces, Triton autotuning for this
            # size class: the kernels' tuning key has a node-count bucket; --compile: compiling
            # for these shapes, which is not part of the step's time or of its time budget)
            step()
            opt.zero_grad(set_to_none=True)

    loss_of_step = make_loss((inputs, emotion, sentiment, shift, lens))
    step = make_step(loss_of_step)
    fingerprint: List[Optional[List[float]]] = [None]

    def step_or_first():
        if fingerprint[0] is not None:
            return step()
        torch.manual_seed(spec["seed"] + 7)  # same dropout masks for every provider
        r = step()
        named = dict(model.named_parameters())
        fingerprint[0] = [holder["loss"]] + opbench._fingerprint([
            named["hetergconv_tv.hetergcn_layers.0.hetergconv.weight"].grad,
            named["dim_layer_t.0.weight"].grad, named["dim_layer_a.0.weight"].grad,
            named["senshift.shift_output_layer.0.weight"].grad, named["emo_output.weight"].grad,
        ])
        return r

    times, mem, primary, method = common.measure_with_memory(step_or_first, dev, spec, prewarm=prewarm)

    def bare_step() -> None:  # as a training loop runs it: no synchronisation, nothing read back
        opt.zero_grad(set_to_none=True)
        loss_of_step().backward()
        opt.step()

    notes["pipelined_s"] = back_to_back(bare_step, dev, times["total"]["median"], spec["budget_s"])
    if dev.startswith("cuda") and spec.get("profile", True):
        # after the timed steps (a profile can leave CUPTI attached): what one step's GPU time is made of
        try:
            notes["kernels"] = common.kernel_profile(bare_step)
        except Exception as exc:  # an explanation of the time, not the measurement: never fails the case
            notes["kernels"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    isz = torch.empty((), dtype=dt).element_size()
    mem["model_state_bytes"] = sum(p.numel() for p in params) * isz * 4  # weights + AdamW amsgrad state (3 buffers)
    fingerprint = fingerprint[0]
    return {
        "status": "ok",
        "time_s": times.pop("total"),
        "fwd_s": times.pop("fwd"),
        "bwd_s": times.pop("bwd"),
        "opt_s": times.pop("opt"),
        "warmup_first_s": times["warmup_first_s"],
        "budget_limited": times["budget_limited"],
        "peak_mem_bytes": primary,
        "mem_method": method,
        "mem": mem,
        "fingerprint": fingerprint,
        "E": gops.num_edges(lens, 2, cfg.win_p, cfg.win_f),
        "P": gops.num_shift_pairs(lens, cfg.shift_win),
        "edge_capacity": cfg.edge_capacity,
        "shift_loss": "fused" if fused_shift else "logits",
        **notes,
    }


def back_to_back(bare_step, dev: str, step_s: float, budget_s: float, rounds: int = 3,
                 min_round_s: float = 0.1) -> Dict[str, Any]:
    """Time per step of ``bare_step`` run back to back: ``rounds`` rounds of ``k`` steps (``k``:
    at least 3, enough for ``min_round_s``, at most 20), the device synchronised only before and
    after each round, so the host issues a step while the device still runs the previous one.
    ``step_s``: the phase-timed step (sizes the rounds; with a quarter of ``budget_s`` too little
    for 3 rounds of 3 steps, 1 round; too little for one, not measured)."""
    if 3 * step_s > budget_s / 4:
        return {"status": "skipped", "reason": f"3 steps of {fmt_s(step_s)} exceed a quarter of the {budget_s:g} s budget"}
    k = max(3, min(20, int(-(-min_round_s // max(step_s, 1e-9)))))
    if rounds * k * step_s > budget_s / 4:
        rounds, k = 1, 3
    per: List[float] = []
    for _ in range(rounds):
        common.sync(dev)
        t0 = time.perf_counter()
        for _ in range(k):
            bare_step()
        common.sync(dev)
        per.append((time.perf_counter() - t0) / k)
    return {"median": common.percentile(per, 50), "min": min(per), "all": per, "steps_per_round": k, "rounds": rounds}


def correctness_check(providers: List[str], args) -> Dict[str, Dict[str, Any]]:
    """Each provider's model, same seed, eval mode (no dropout), on a small batch: outputs and a
    few gradients compared with the ``reference`` backend's."""
    from graphsmile.losses import MultiTaskLoss

    dt = common.parse_dtype(args.dtype)
    tol = 1e-4 if dt in (torch.float32, torch.float64) else 3e-2
    lens = opbench.CHECK_LENGTHS
    got: Dict[str, List[torch.Tensor]] = {}
    errors: Dict[str, str] = {}
    for p in (["reference"] if "reference" not in providers else []) + providers:
        try:
            model, cfg = build_model(p, lens, args.seed, args.device, dt, args.dense_capacity, args.shift_win)
            model.eval()
            inputs, emotion, sentiment, shift = make_batch(lens, cfg, args.seed, args.device, dt)
            emo, sen, sft, fused = model(*inputs, lengths=lens)
            loss, _ = MultiTaskLoss.from_config(cfg)(emo, sen, sft, emotion, sentiment, shift)
            loss.backward()
            named = dict(model.named_parameters())
            got[p] = [t.detach().double().cpu() for t in (emo, sen, sft, fused, named["hetergconv_tv.hetergcn_layers.0.hetergconv.weight"].grad,
                                                          named["dim_layer_v.0.weight"].grad, named["hetergconv_va.edge_weight"].grad[: 1000])]
        except Exception as exc:
            errors[p] = f"{type(exc).__name__}: {exc}"[:300]
    ref = "reference" if "reference" in got else next(iter(got), None)
    out: Dict[str, Dict[str, Any]] = {}
    for p in providers:
        if p in errors:
            out[p] = {"ok": False, "error": errors[p]}
        elif p == ref:
            out[p] = {"ok": True, "against": "self (the reference)"}
        else:
            worst = 0.0
            for a, b in zip(got[p], got[ref]):
                worst = max(worst, float((a - b).abs().max()) / (float(b.abs().max()) or 1.0))
            out[p] = {"ok": worst <= tol, "max_rel_err": worst, "against": ref, "tol": tol}
        out[p]["lengths"] = lens
    return out


# --- driver -------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small end-to-end run: L 20 50, B 2, no single dialogue, 3 reps, budget 30 s; "
                    "with --preset: the preset scaled down to CPU size")
    ap.add_argument("--preset", choices=list(PRESETS), default=None,
                    help="gpu-targets: issue #8 target 3 -- 16xIEMOCAP, 16x1000 and 1x20000, our GPU backends + original "
                    "(options given explicitly win)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--lengths", type=int, nargs="*", default=None, help="dialogue lengths (default 50 110 250 500 1000 2000 5000)")
    ap.add_argument("--single", type=int, default=None, help="length of the single-dialogue case (default 20000)")
    ap.add_argument("--no-single", action="store_true", help="leave out the single-dialogue case")
    ap.add_argument("--iemocap", action="store_true", default=None,
                    help="add a batch of --batch dialogues with lengths drawn from IEMOCAP's distribution (case BxIEMOCAP)")
    ap.add_argument("--batch", type=int, default=None, help="dialogues per batch (default 16)")
    ap.add_argument("--providers", default=None, help=f"comma list (default: every available backend + original; also: dense)")
    ap.add_argument("--reps", type=int, default=None, help="timed steps after warm-up (default 5)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=None, help="time budget per measurement in s (default 120)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mem-safety", type=float, default=0.8)
    ap.add_argument("--dense-capacity", type=int, default=baselines.ORIGINAL_EDGE_CAPACITY)
    ap.add_argument("--isolate", choices=("subprocess", "none"), default="subprocess")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--tf32", action="store_true",
                    help="fp32 matrix products in TF32 on tensor cores for every provider, ours and the original "
                         "(torch.set_float32_matmul_precision('high'), as graphsmile train --tf32); records carry tf32")
    ap.add_argument("--no-profile", action="store_true",
                    help="CUDA: skip the profiled step after each case's timing (kernels: GPU time by kind, top kernels)")
    ap.add_argument("--time-limit-s", type=float, default=None,
                    help="no new measurement starts after this many seconds from the start (recorded as skipped); the "
                    "target verdicts are still printed")
    ap.add_argument("--shift-win", type=int, default=None, help="override the preset's shift_win 19 (-1: whole dialogues)")
    ap.add_argument("--shift-loss", choices=("fused", "logits"), default="fused",
                    help="our backends' shift loss: fused (default, as the trainer) or logits (the [P, 2] path)")
    ap.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                    help="our providers' model under torch.compile (default backend inductor); the original stays eager")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON-lines file (default bench/results/model.jsonl, or quick/model.jsonl)")
    args = ap.parse_args(argv)
    q = args.quick
    pv = PRESETS[args.preset]["quick" if q else "full"] if args.preset else {}
    for k in ("lengths", "batch", "single", "reps", "budget_s", "iemocap"):
        if getattr(args, k) is None and k in pv:
            setattr(args, k, pv[k])
    if args.lengths is None:
        args.lengths = [20, 50] if q else [50, 110, 250, 500, 1000, 2000, 5000]
    args.batch = args.batch or (2 if q else 16)
    args.single = None if (args.no_single or (q and args.single is None)) else (args.single or 20000)
    args.iemocap = bool(args.iemocap)
    args.reps = args.reps or (3 if q else 5)
    args.budget_s = args.budget_s or (30.0 if q else 120.0)
    if args.out is None:
        args.out = str(common.RESULTS / ("quick" if q else "") / "model.jsonl")
    avail = all_providers(args.device)
    if args.providers:
        args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
        bad = [p for p in args.providers if p not in baselines.OUR_BACKENDS + PROVIDERS_EXTRA]
        if bad:
            ap.error(f"unknown provider(s) {bad}; choose from {baselines.OUR_BACKENDS + PROVIDERS_EXTRA}")
        missing = [p for p in args.providers if p not in avail]
        if missing:
            print(f"note: {missing} not available on {args.device} here")
        args.providers = [p for p in args.providers if p in avail]
    elif args.preset:
        args.providers = opbench.fast_backends(args.device) + ["original"]
    else:
        args.providers = default_providers(args.device)
    return args


def build_cases(args) -> List[Dict[str, Any]]:
    cases = []
    if args.iemocap:
        lens = iemocap_lengths(args.batch, args.seed)
        cases.append({"label": f"{len(lens)}xIEMOCAP", "B": len(lens), "L": round(sum(lens) / len(lens)), "lengths": lens,
                      "varied": True})
    cases += [{"label": f"{args.batch}x{L}", "B": args.batch, "L": L, "lengths": [L] * args.batch} for L in sorted(args.lengths)]
    if args.single:
        cases.append({"label": f"1x{args.single}", "B": 1, "L": args.single, "lengths": [args.single]})
    return cases


# --- target verdicts (printed last) -------------------------------------------------------


def model_targets(recs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Target 3, per our provider: the IEMOCAP-shaped batch >= 5x faster than the original; at
    L = 1000 >= 100x or the original cannot run; one dialogue of >= 20,000 runs (no OOM) at
    D = 512 with 7 layers. PASS/MISS on a GPU, n/a (with the measured values) elsewhere."""
    out: List[Dict[str, Any]] = []
    by = {(r["case"], r["provider"]): r for r in recs}
    ours = [p for p in dict.fromkeys(r["provider"] for r in recs) if opbench.is_ours(p)]

    def verdict(r, passed: bool, applies: bool = True, orig=None) -> str:
        if r.get("device") != "cuda":
            return "n/a (not a GPU)"
        if not applies:
            return "n/a"
        wrong = opbench.failed_check(r, orig)   # a fast wrong result (or unlike maths) passes nothing
        return f"MISS ({wrong})" if wrong else "PASS" if passed else "MISS"

    for r in recs:
        p = r["provider"]
        if p not in ours:
            continue
        orig = by.get((r["case"], "original"))
        # the opt-in kernel variants (bench/common.py records them only when set), so that an A/B
        # stage's verdict lines say what they measured
        what = (f"{p}{' compiled' if r.get('compile_backend') else ''}{opbench.variant_label(r)} "
                f"{r['dtype']}{' tf32' if r.get('tf32') else ''} {r['case']} (N = {r['N']})")
        t = fmt_s(r["time_s"]["median"]) if r["status"] == "ok" else r["status"]
        if r.get("lengths_varied"):
            line = {"target": "T3 IEMOCAP batch speed-up", "case": what, "threshold": f">= {TARGET_IEMOCAP_SPEEDUP:g}x the original"}
            if r["status"] == "ok" and orig is not None and orig["status"] == "ok":
                sp = orig["time_s"]["median"] / r["time_s"]["median"]
                line.update(measured=f"ours {t}, original {fmt_s(orig['time_s']['median'])}: {sp:.1f}x", values={"speedup": sp},
                            verdict=verdict(r, sp >= TARGET_IEMOCAP_SPEEDUP, orig=orig))
            else:
                line.update(measured=f"ours {t}, original {orig['status'] if orig else 'not run'}",
                            verdict=opbench.failed_verdict(r) if r["status"] != "ok" else "n/a (original not measured)")
            out.append(line)
            # the same batch with the steps back to back, as a training loop runs them: a second
            # line beside the phase-timed one (records from before it have no pipelined_s)
            ours_bb, orig_bb = _pipelined(r), _pipelined(orig)
            if ours_bb is not None and orig_bb is not None:
                sp = orig_bb / ours_bb
                out.append({"target": "T3 IEMOCAP batch speed-up, back-to-back steps", "case": what,
                            "threshold": f">= {TARGET_IEMOCAP_SPEEDUP:g}x the original",
                            "measured": f"ours {fmt_s(ours_bb)}, original {fmt_s(orig_bb)} per step: {sp:.1f}x",
                            "values": {"speedup": sp}, "verdict": verdict(r, sp >= TARGET_IEMOCAP_SPEEDUP, orig=orig)})
        elif r["L"] == 1000 and r["B"] > 1:
            line = {"target": "T3 L=1000 speed-up", "case": what, "threshold": f">= {TARGET_L1000_SPEEDUP:g}x the original, or it cannot run"}
            if r["status"] != "ok":
                line.update(measured=f"ours {t}", verdict=opbench.failed_verdict(r))
            elif orig is not None and orig["status"] == "ok":
                sp = orig["time_s"]["median"] / r["time_s"]["median"]
                line.update(measured=f"ours {t}, original {fmt_s(orig['time_s']['median'])}: {sp:.1f}x", values={"speedup": sp},
                            verdict=verdict(r, sp >= TARGET_L1000_SPEEDUP, orig=orig))
            elif orig is not None and orig["status"] in CANNOT_RUN and (orig["status"] != "skipped" or "would need" in str(orig.get("reason"))):
                line.update(measured=f"ours {t}; original cannot run: {orig['status']} ({str(orig.get('reason', ''))[:80]})",
                            verdict=verdict(r, True))
            else:
                line.update(measured=f"ours {t}, original {orig['status'] if orig else 'not run'}", verdict="n/a (original not measured)")
            out.append(line)
        elif r["B"] == 1:
            line = {"target": "T3 one long dialogue, no OOM", "case": what,
                    "threshold": f"runs at N = {TARGET_SINGLE_L}, D = 512, 7 layers"}
            mem = r.get("peak_mem_bytes")
            line["measured"] = f"{t}" + (f", peak {fmt_bytes(mem)}" if r["status"] == "ok" else f" ({str(r.get('reason', ''))[:100]})")
            if r["status"] == "ok":
                line["values"] = {"time_s": r["time_s"]["median"], "peak_mem_bytes": mem}
            if r.get("device") == "cuda" and r["N"] < TARGET_SINGLE_L:
                line["verdict"] = f"n/a (N < {TARGET_SINGLE_L})"
            else:
                line["verdict"] = verdict(r, True) if r["status"] == "ok" else opbench.failed_verdict(r)
            out.append(line)
    return out


def print_kernels(group: List[Dict[str, Any]], top: int = 5) -> None:
    """Per provider with a profiled step (CUDA): its GPU time by kind and its largest kernels."""
    profiled = [r for r in group if isinstance(r.get("kernels"), dict)]
    if not profiled:
        return
    print("    GPU time of one step (torch.profiler, kernels alone, by kind):")
    for r in profiled:
        k = r["kernels"]
        if k.get("status") == "error":
            print(f"      {r['provider']:10} profile failed: {k.get('reason')}")
            continue
        print(f"      {r['provider']:10} {common.kernel_kinds_line(k)}")
        total = k.get("kernel_time_s") or 1.0
        for name, n, t in k.get("top_kernels", [])[:top]:
            print(f"      {'':10}   {fmt_s(t):>9} {100 * t / total:5.1f}% {n:5d}x  {name[:100]}")


def _pipelined(r: Optional[Dict[str, Any]]) -> Optional[float]:
    """A record's back-to-back time per step (median), if it has one."""
    pb = (r or {}).get("pipelined_s") or {}
    return pb.get("median") if r is not None and r.get("status") == "ok" else None


def main(argv=None) -> int:
    t_start = time.time()   # --time-limit-s counts from here: the correctness check's model builds and JIT too
    args = parse_args(argv)
    if not common.start(args):
        return 2
    env = common.env_info(args.device, args.dtype)
    run_id = common.new_run_id()
    cases = build_cases(args)
    out_path = Path(args.out)
    cfg0 = preset(args.shift_win)
    print(f"GraphSmile training-step benchmark (IEMOCAP preset), run {run_id}: {env['device_name']} ({args.device}, "
          f"{env['threads']} threads), torch {env['torch']}, {args.dtype}, git {str(env['git_commit'])[:10]}")
    print(f"  cases {[c['label'] for c in cases]}, providers {args.providers}, reps={args.reps}, budget {args.budget_s:.0f} s, "
          f"isolate={args.isolate}{', preset ' + args.preset if args.preset else ''}"
          f"{', ours under torch.compile (' + args.compile + ')' if args.compile else ''}"
          f"{', TF32 matrix products for every provider' if args.tf32 else ''} -> {out_path}")
    if any(c.get("varied") for c in cases):
        c = next(c for c in cases if c.get("varied"))
        print(f"  {c['label']}: lengths {c['lengths']} (N = {sum(c['lengths'])})")
    checks: Dict[str, Dict[str, Any]] = {}
    if not args.no_check:
        t0 = time.time()
        checks = correctness_check(args.providers, args)
        opbench.release_device_memory(args.device)
        bad = [f"{p} ({c.get('error') or 'max rel err %.2e' % c.get('max_rel_err', float('nan'))})" for p, c in checks.items() if c.get("ok") is False]
        print(f"correctness vs reference on lengths {opbench.CHECK_LENGTHS}: " + ("all ok" if not bad else "FAILED: " + ", ".join(bad))
              + f" ({time.time() - t0:.1f} s)")
    memo = common.FailureMemo()
    n_written = 0
    all_recs: List[Dict[str, Any]] = []
    isz = torch.empty((), dtype=common.parse_dtype(args.dtype)).element_size()
    for case in cases:
        lens = case["lengths"]
        E = gops.num_edges(lens, 2, cfg0.win_p, cfg0.win_f)
        group: List[Dict[str, Any]] = []
        ref_fp = None
        for provider in args.providers:
            base = dict(bench="model", run_id=run_id, quick=args.quick, bench_preset=args.preset, op="train_step", provider=provider,
                        case=case["label"], B=case["B"], L=case["L"], N=sum(lens), hidden_dim=cfg0.hidden_dim, graph_layers=list(cfg0.heter_n_layers),
                        preset="IEMOCAP", shift_win=cfg0.shift_win, isolate=args.isolate,
                        compile_backend=args.compile if provider not in PROVIDERS_EXTRA else None, tf32=args.tf32, **env)
            if case.get("varied"):
                base.update(lengths=lens, lengths_varied=True, L_max=max(lens))
            res = None
            skip = memo.reason(provider, base["N"])
            if not skip and args.time_limit_s is not None and time.time() - t_start > args.time_limit_s:
                skip = f"skipped: --time-limit-s {args.time_limit_s:g} reached"
            if skip:
                res = {"status": "skipped", "reason": skip}
            elif provider in PROVIDERS_EXTRA and E > args.dense_capacity:
                res = {"status": "edge-capacity exceeded", "reason": f"E = {E} edges > the original's per-edge capacity {args.dense_capacity}", "E": E}
            else:
                fused = provider not in PROVIDERS_EXTRA and args.shift_loss == "fused"
                need = estimate_model_bytes(provider, lens, isz, cfg0.shift_win, fused)
                avail = common.mem_available_bytes(args.device)
                if need > args.mem_safety * avail:
                    res = {"status": "skipped", "reason": f"skipped: would need ~{common.fmt_bytes(need)}, {common.fmt_bytes(avail)} available",
                           "estimated_bytes": need}
            if res is None:
                spec = dict(provider=provider, lengths=lens, device=args.device, dtype=args.dtype, reps=args.reps, warmup=args.warmup,
                            budget_s=args.budget_s, seed=args.seed, threads=args.threads or torch.get_num_threads(),
                            dense_capacity=args.dense_capacity, isolated=args.isolate == "subprocess",
                            shift_win=args.shift_win, shift_loss=args.shift_loss, compile=args.compile,
                            profile=not args.no_profile, tf32=args.tf32)
                t0 = time.time()
                print(f"  [train step {case['label']}] {provider} ...", end="", flush=True)
                if args.isolate == "subprocess":
                    res = common.run_child(SCRIPT, spec, timeout_s=2 * args.budget_s + 120)
                else:
                    try:
                        res = run_measurement(spec)
                    except Exception as exc:
                        res = common.classify_exception(exc)
                    opbench.release_device_memory(args.device)
                if res.get("status") == "error" and "edge" in res.get("reason", "") and "capacity" in res.get("reason", ""):
                    res["status"] = "edge-capacity exceeded"
                bb = _pipelined(res)
                print(f" {fmt_s(res['time_s']['median']) if res.get('status') == 'ok' else res.get('status')}"
                      f"{f', back-to-back {fmt_s(bb)}' if bb is not None else ''} ({time.time() - t0:.1f} s)", flush=True)
                memo.note(provider, base["N"], res.get("status", "error"))
            rec = {**base, **res}
            if provider in checks:
                rec["check"] = checks[provider]
            if rec["status"] == "ok":
                rec["utt_per_s"] = rec["N"] / rec["time_s"]["median"]
                fp = rec.pop("fingerprint", None)
                if fp is not None:
                    if ref_fp is None:
                        ref_fp = (provider, fp)
                    else:
                        tol = 1e-3 if args.dtype in ("float32", "float64", "fp32") else 5e-2
                        rec["fingerprint_check"] = {**opbench.fingerprint_check(fp, ref_fp[1], tol), "against": ref_fp[0]}
            group.append(rec)
        opbench.add_ratios(group)
        opbench.print_group("train step", case, group)
        print_kernels(group)
        common.append_jsonl(out_path, group)
        all_recs.extend(group)
        n_written += len(group)
        for ln in model_targets(group):  # verdicts as soon as they are known
            print(f"    -> [{ln['verdict']}] {ln['target']} | {ln['case']} | {ln['measured']}")
    print(f"\n{n_written} records appended to {out_path} in {time.time() - t_start:.0f} s. Draw: python bench/plot.py" + (" --quick" if args.quick else ""))
    lines = model_targets(all_recs)
    tpath = opbench.write_targets(lines, out_path, dict(bench="model", run_id=run_id, device_name=env["device_name"], date=env["date"],
                                                        git_commit=env["git_commit"], git_dirty=env["git_dirty"], env=env))
    opbench.print_targets(lines, f"targets, {env['device_name']}, run {run_id}" + (f" (also in {tpath})" if tpath else ""))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        common.child_main(sys.argv[2:], run_measurement)
    else:
        sys.exit(main())
