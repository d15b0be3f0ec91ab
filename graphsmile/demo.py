"""Op demo on a synthetic IEMOCAP-shaped batch: ``python -m graphsmile.demo``.

Builds one batch of 16 dialogues with IEMOCAP-like lengths (8-110 utterances), runs the
GraphSmile propagation (7 layers of one graph module, hidden 512, window 17/17) and the
sentiment-shift head (shift_win 19) forward and backward with the fastest backend here, checks
them against the pure-torch reference, and prints what it did.
"""
from __future__ import annotations

import argparse
import time

import torch

from . import ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    g = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(8, 111, (args.dialogues,), generator=g).tolist()
    N, M, D, wp, wf, sw = sum(lengths), 2, args.hidden, 17, 17, 19
    E = ops.num_edges(lengths, M, wp, wf)
    backend = ops._backend.resolve("auto", torch.device("cpu"))
    print(f"synthetic IEMOCAP-shaped batch: {len(lengths)} dialogues, {N} utterances (lengths {min(lengths)}-{max(lengths)}), "
          f"2 modalities -> {M * N} nodes, window {wp}/{wf} -> {E} edges; backend '{backend}'")

    x = torch.randn(M * N, D, generator=g)
    w = torch.ones(500_000, requires_grad=True)
    Ws = [torch.randn(D, D, generator=g) / D**0.5 for _ in range(args.layers)]

    def stack(backend):
        s = ops.window_norm(w, lengths, M, wp, wf, backend=backend)
        h, outs = x, []
        for W in Ws:
            h = ops.window_spmm(h @ W, w, s, lengths, M, wp, wf, backend=backend)
            outs.append(h)
        fused = sum(outs).reshape(M, N, D).mean(0)
        head_w = torch.randn(2, 2 * D, generator=torch.Generator().manual_seed(1)) / D
        logits = ops.shift_pair_logits(fused, fused, lengths, sw, head_w, torch.zeros(2), backend=backend)
        return sum(o.square().mean() for o in outs) + logits.logsumexp(-1).mean(), logits.shape[0]

    t0 = time.perf_counter()
    loss, P = stack(backend)
    loss.backward()
    t_ours = time.perf_counter() - t0
    g_ours = w.grad[:E].clone()
    w.grad = None
    t0 = time.perf_counter()
    loss_ref, _ = stack("reference")
    loss_ref.backward()
    t_ref = time.perf_counter() - t0
    err = (g_ours - w.grad[:E]).abs().max().item() / max(w.grad[:E].abs().max().item(), 1e-30)
    print(f"{args.layers} propagation layers (hidden {D}) + shift head over {P} pairs, forward+backward: "
          f"{t_ours:.3f} s with '{backend}', {t_ref:.3f} s with the pure-torch reference")
    print(f"loss {loss.item():.6f} (reference {loss_ref.item():.6f}); edge-weight gradient max rel. diff {err:.2e}")
    ok = abs(loss.item() - loss_ref.item()) <= 1e-4 * max(1.0, abs(loss_ref.item())) and err < 1e-3
    print("result: OK" if ok else "result: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
