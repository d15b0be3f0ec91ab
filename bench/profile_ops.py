"""A small driver for profilers (Nsight Compute, torch.profiler): runs window_norm, window_spmm
forward and backward (gradients to x, the per-edge weights and the norm), shift_pair_logits and
the fused shift loss shift_pair_nll (forward and backward) a few times on one large batch, so a
profiler sees each kernel on a size that fills the GPU.

    python bench/profile_ops.py --device cuda --backend cuda --dim 512 --dtype bfloat16
    ncu --clock-control none -k regex:window_spmm -c 4 --section SpeedOfLight \\
        python bench/profile_ops.py --backend cuda --iters 1
    python bench/profile_ops.py --torch-profiler out/trace.json   # kernel table + Chrome trace

It checks nothing and stores nothing: numbers belong in bench/ops.py's records. The kernel
table (``--torch-profiler``) lists the CUDA time per kernel, which says where a step's time goes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repo on sys.path)

import torch  # noqa: E402

import graphsmile.ops as gops  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="cuda", help="cuda, triton, cpu, reference")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--lengths", type=int, nargs="+", default=[3200] * 16, help="dialogue lengths (default 16 x 3200: 102,400 nodes with M=2)")
    ap.add_argument("--num-modal", type=int, default=2)
    ap.add_argument("--win", type=int, nargs=2, default=[17, 17])
    ap.add_argument("--shift-win", type=int, default=-1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--torch-profiler", default=None, metavar="TRACE_JSON", help="profile with torch.profiler, print the kernel table, write a Chrome trace")
    args = ap.parse_args(argv)
    if not common.start(args):
        return 2
    dt = common.parse_dtype(args.dtype)
    dev, be, lens, M = args.device, args.backend, args.lengths, args.num_modal
    wp, wf = args.win
    n, D = M * sum(lens), args.dim
    E = gops.num_edges(lens, M, wp, wf)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n, D, generator=g).to(dev, dt).requires_grad_()
    w = (torch.rand(E, generator=g) + 0.5).to(dev, dt).requires_grad_()
    gy = torch.randn(n, D, generator=g).to(dev, dt)
    u = torch.randn(sum(lens), D, generator=g).to(dev, dt).requires_grad_()
    sw = (torch.randn(2, 2 * D, generator=g) / (2 * D) ** 0.5).to(dev, dt).requires_grad_()
    sb = torch.zeros(2, device=dev, dtype=dt, requires_grad=True)
    sentiment = torch.randint(0, 3, (lens[0],), generator=g).to(dev)
    print(f"{be} on {dev}: {len(lens)} dialogues, {n} nodes, D={D}, E={E}, {args.dtype}")

    def step():
        s = gops.window_norm(w, lens, M, wp, wf, "per_edge", be)
        y = gops.window_spmm(x, w, s, lens, M, wp, wf, "per_edge", be)
        y.backward(gy)
        # one dialogue's worth of shift pairs (the shift op is O(L^2) with shift_win = -1)
        logits = gops.shift_pair_logits(u[: lens[0]], u[: lens[0]], lens[:1], args.shift_win, sw, sb, backend=be)
        logits.sum().backward()
        # the fused shift loss on the same pairs, as the trainer runs it (kernels shift_pair_nll_*)
        loss, _ = gops.shift_pair_nll(u[: lens[0]], u[: lens[0]], lens[:1], args.shift_win, sw, sb, sentiment,
                                      backend=be)
        loss.backward()

    step()  # compile / autotune / allocate outside the profiled region
    common.sync(dev)
    if args.torch_profiler:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
        with profile(activities=acts) as prof:
            for _ in range(args.iters):
                step()
            common.sync(dev)
        key = "cuda_time_total" if dev.startswith("cuda") else "cpu_time_total"
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=25))
        except Exception:  # the column was renamed in newer torch
            print(prof.key_averages().table(sort_by="device_time_total", row_limit=25))
        prof.export_chrome_trace(args.torch_profiler)
        print(f"trace: {args.torch_profiler}")
    else:
        for _ in range(args.iters):
            step()
        common.sync(dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
