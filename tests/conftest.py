import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import graphsmile.ops as ops  # noqa: E402


def available_backends(device="cpu"):
    """Backends that can run on `device` here (the ones compared against dense/loops)."""
    out = ["reference"]
    if device == "cpu" and ops._ext.has_kernel("CPU"):
        out.append("cpu")
    if device == "cuda" and ops._ext.has_kernel("CUDA"):
        out.append("cuda")
    return out


def random_lengths(rng: random.Random, max_dialogues=8, max_len=60):
    return [rng.randint(1, max_len) for _ in range(rng.randint(1, max_dialogues))]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def assert_rounded_once(name, got, exact, dtype, rel=1e-5, ulps=0.5):
    """`got` (in fp16/bf16) is the fp64 `exact` rounded once, give or take the fp32 arithmetic
    before the rounding: |got - exact| <= ulps * ulp(exact) + rel * |exact| (ulps = 0.5: rounded
    to nearest; 1: truncated). A result that went through an intermediate rounding to `dtype`
    misses this (by up to an ulp or more)."""
    exact = exact.double()
    got = got.double().to(exact.device)
    ok = torch.isfinite(exact)
    exact, got = exact[ok], got[ok]
    # ulp of |exact| in dtype (normal range): eps * 2^floor(log2 |exact|)
    ulp = torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(torch.finfo(dtype).tiny))))
    excess = (got - exact).abs() - (ulps * ulp + rel * exact.abs())
    worst = int(excess.argmax()) if excess.numel() else 0
    assert excess.numel() == 0 or excess.max() <= 0, (
        f"{name}: {got[worst].item():.6g} for {exact[worst].item():.6g}: "
        f"{((got[worst] - exact[worst]).abs() / ulp[worst]).item():.2f} ulp off (rounded once: <= {ulps})"
    )


def norm_gradient_rounded_once(backend, dtype, mode, device="cpu", ulps=0.5):
    """window_norm's weight gradient in fp16/bf16 on `backend`: the exact gradient rounded once
    (its s^3 from the weights in fp32, not from the stored, rounded norm, which would triple the
    norm's rounding error)."""
    import graphsmile.ops as ops

    lens, M, wp, wf = [37, 5, 61, 12], 3, 3, 2
    N = sum(lens)
    gen = torch.Generator().manual_seed(11)
    if mode == "per_edge":
        w = torch.rand(ops.num_edges(lens, M, wp, wf), generator=gen, dtype=torch.float64) + 0.25
    else:
        w = torch.rand(M, M - 1, wp + wf + 1, generator=gen, dtype=torch.float64) + 0.25
    gs = torch.randn(M * N, generator=gen, dtype=torch.float64)
    w, gs = w.to(dtype).double(), gs.to(dtype).double()  # representable inputs

    def grad(be, dt):
        ww = w.to(device=device, dtype=dt).clone().requires_grad_()
        ops.window_norm(ww, lens, M, wp, wf, mode, backend=be).backward(gs.to(device=device, dtype=dt))
        return ww.grad

    exact = grad("reference", torch.float64)
    ours = grad(backend, dtype)
    assert ours.dtype == dtype
    assert_rounded_once(f"{backend} window_norm grad ({mode}, {dtype})", ours, exact, dtype, ulps=ulps)
