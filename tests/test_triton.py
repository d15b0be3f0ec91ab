"""The Triton backend (graphsmile/ops/triton_ops.py, triton_kernels.py) against the reference
and dense backends: forward and every gradient of window_norm / window_spmm /
window_propagate and shift_pair_logits, torch.compile, and the custom-op contracts.

Where it runs:

- on a CUDA GPU with triton installed: everything, including the GPU-only cases (bigger shapes,
  fp16/bf16 tolerance against plain torch in that precision, fp64, Inductor);
- on the CPU under the Triton interpreter, in its own pytest process (``TRITON_INTERPRET`` is
  read when triton decorates the kernels, so it must be set before anything imports them)::

      TRITON_INTERPRET=1 python -m pytest tests/test_triton.py

  tiny shapes only (the interpreter runs each program in Python);
- otherwise everything skips with the reason, except the check that graphsmile works without
  triton installed.
"""
from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch

import graphsmile.ops as ops

from conftest import norm_gradient_rounded_once

HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAVE_CUDA = torch.cuda.is_available()
ON_GPU = HAVE_TRITON and HAVE_CUDA and not INTERPRET
DEVICE = "cuda" if ON_GPU else "cpu"

if not HAVE_TRITON:
    _why = "triton is not installed (pip install triton)"
elif not (ON_GPU or INTERPRET):
    _why = ("no CUDA GPU; to run the Triton kernels on the CPU, run this file in its own pytest "
            "process with TRITON_INTERPRET=1 set")
else:
    _why = ""
needs_triton = pytest.mark.skipif(bool(_why), reason=_why or "runs")
gpu_only = pytest.mark.skipif(not ON_GPU, reason="GPU-only case: needs a CUDA GPU and triton (not the interpreter)")

MODES = {"per_edge": 0, "relative": 1}


# --------------------------------------------------------------------------------------------
# helpers


def _weights(lens, M, wp, wf, mode, dtype=torch.float64, extra=5, lo=0.25):
    if mode == "per_edge":
        return torch.rand(ops.num_edges(lens, M, wp, wf) + extra, dtype=dtype) + lo
    return torch.rand(M, M - 1, wp + wf + 1, dtype=dtype) + lo


def _propagate(backend, x, w, lens, M, wp, wf, mode, g, dtype=None, device="cpu"):
    """y, grad_x, grad_w of window_propagate with upstream gradient g (inputs cast/moved first)."""
    dtype = dtype or x.dtype
    xx = x.detach().to(device, dtype).clone().requires_grad_()
    ww = w.detach().to(device, dtype).clone().requires_grad_()
    y = ops.window_propagate(xx, ww, lens, M, wp, wf, weight_mode=mode, backend=backend)
    (y * g.to(device, dtype)).sum().backward()
    return [t.detach().double().cpu() for t in (y, xx.grad, ww.grad)]


def _assert_close(got, want, tol, what):
    names = ("y", "grad_x", "grad_w") if len(got) == 3 else ("logits", "grad_u", "grad_v", "grad_W", "grad_bias")
    for name, a, b in zip(names, got, want):
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        err = float((a - b).abs().max()) if b.numel() else 0.0
        assert err <= tol * scale, f"{what}: {name} differs by {err:.3e} (scale {scale:.3e}, tol {tol:.1e})"


def _assert_within_torch_error(names, truth, tri, plain):
    """Each Triton result is at most 2x as far from the fp64 truth as plain torch computing in the
    same precision (plus 1e-3 of the result's scale)."""
    for name, t, a, b in zip(names, truth, tri, plain):
        err_tri = float((a - t).abs().max())
        err_plain = float((b - t).abs().max())
        scale = float(t.abs().max())
        assert err_tri <= 2 * err_plain + 1e-3 * scale, f"{name}: triton {err_tri:.3e} vs torch {err_plain:.3e}"


def _tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 2e-5}[dtype]


# (lengths, M, win_p, win_f, weight_mode, dtype, D): hand-picked edges of the window logic (one
# utterance, tiles straddling dialogues, windows 0 / unbounded / longer than the dialogue, a
# dialogue longer than a column chunk, several D tiles), then random batches.
CASES = [
    ([1], 2, 0, 0, "per_edge", torch.float32, 8),
    ([1, 1, 1], 3, -1, -1, "per_edge", torch.float64, 8),
    ([5, 3], 2, -1, 0, "per_edge", torch.float32, 20),
    ([4, 7, 2], 2, 10, 10, "per_edge", torch.float32, 8),
    ([6, 1, 9], 3, 2, 1, "relative", torch.float32, 8),
    ([12, 3, 11, 9], 3, -1, 2, "per_edge", torch.float64, 8),
    ([40], 2, -1, -1, "per_edge", torch.float32, 8),
    ([12, 12, 12, 12], 2, 2, 2, "relative", torch.float64, 40),
    ([9, 10], 2, 0, 3, "relative", torch.float32, 8),
]
_rng = random.Random(20240611)
for _ in range(7):
    _lens = [_rng.randint(1, 12) for _ in range(_rng.randint(1, 4))]
    _mode = _rng.choice(["per_edge", "relative"])
    _choices = [0, 2, 15] if _mode == "relative" else [-1, 0, 2, 15]
    CASES.append((_lens, _rng.choice([2, 3]), _rng.choice(_choices), _rng.choice(_choices), _mode,
                  _rng.choice([torch.float32, torch.float64]), _rng.choice([8, 16])))


def _ids(case):
    lens, M, wp, wf, mode, dtype, D = case
    return f"L{'-'.join(map(str, lens))}-M{M}-w{wp},{wf}-{mode}-{str(dtype)[6:]}-D{D}"


# --------------------------------------------------------------------------------------------
# window ops


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_propagate_matches_reference_and_dense(case):
    lens, M, wp, wf, mode, dtype, D = case
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=torch.float64)
    w = _weights(lens, M, wp, wf, mode)
    g = torch.randn(M * N, D, dtype=torch.float64)
    got = _propagate("triton", x, w, lens, M, wp, wf, mode, g, dtype=dtype, device=DEVICE)
    for backend in ("reference", "dense"):
        # references in fp64 on the CPU: the truth for the inputs rounded to `dtype`
        want = _propagate(backend, x.to(dtype), w.to(dtype), lens, M, wp, wf, mode, g.to(dtype), dtype=torch.float64)
        _assert_close(got, want, _tol(dtype), f"triton vs {backend}")


@needs_triton
@pytest.mark.parametrize("need", ["x", "w", "norm", "all"])
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
def test_norm_and_spmm_separately(need, mode):
    """window_spmm with a free `norm` input (its own gradient) and every subset of requires_grad
    (the backward skips the passes and stores it does not need)."""
    lens, M, wp, wf, D = [7, 2, 11], 3, 1, 2, 8
    N = sum(lens)
    x0 = torch.randn(M * N, D, dtype=torch.float64)
    w0 = _weights(lens, M, wp, wf, mode)
    s0 = torch.rand(M * N, dtype=torch.float64) + 0.5
    g = torch.randn(M * N, D, dtype=torch.float64)
    gs = torch.randn(M * N, dtype=torch.float64)
    out = {}
    for backend, dev in (("triton", DEVICE), ("reference", "cpu")):
        x, w, s = (t.to(dev).clone().requires_grad_(need in (n, "all")) for t, n in ((x0, "x"), (w0, "w"), (s0, "norm")))
        y = ops.window_spmm(x, w, s, lens, M, wp, wf, weight_mode=mode, backend=backend)
        (y * g.to(dev)).sum().backward()
        wn = w0.to(dev).clone().requires_grad_()
        sn = ops.window_norm(wn, lens, M, wp, wf, weight_mode=mode, backend=backend)
        (sn * gs.to(dev)).sum().backward()
        grads = [t.grad.cpu() if t.grad is not None else torch.zeros(0) for t in (x, w, s)]
        out[backend] = [y.detach().cpu(), sn.detach().cpu(), wn.grad.cpu()] + grads
    for name, a, b in zip(("y", "norm", "grad_w(norm)", "grad_x", "grad_w", "grad_norm"), out["triton"], out["reference"]):
        assert a.shape == b.shape, name
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), f"{name}: {float((a - b).abs().max()):.3e}"


@needs_triton
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_zero_and_negative_degrees():
    """d_i == 0 gives s_i = 0 (gradient 0 there), d_i < 0 gives NaN, as the original."""
    lens, M, wp, wf = [6, 4], 2, 1, 1
    N = sum(lens)
    E = ops.num_edges(lens, M, wp, wf)
    ei = ops.window_edge_index(lens, M, wp, wf)
    w = torch.rand(E, dtype=torch.float64) + 0.5
    w[ei[0] == 3] = 0.0  # node 3 has no weighted edge
    x = torch.randn(M * N, 8, dtype=torch.float64)
    g = torch.randn(M * N, 8, dtype=torch.float64)
    got = _propagate("triton", x, w, lens, M, wp, wf, "per_edge", g, device=DEVICE)
    want = _propagate("reference", x, w, lens, M, wp, wf, "per_edge", g)
    _assert_close(got, want, 1e-10, "zero degree")
    assert float(ops.window_norm(w.to(DEVICE), lens, M, wp, wf, backend="triton")[3]) == 0.0

    w[ei[0] == 5] = -1.0  # node 5: negative degree -> NaN
    s_t = ops.window_norm(w.to(DEVICE), lens, M, wp, wf, backend="triton").cpu()
    s_r = ops.window_norm(w, lens, M, wp, wf, backend="reference")
    assert torch.equal(torch.isnan(s_t), torch.isnan(s_r)) and bool(torch.isnan(s_t[5]))
    y_t = ops.window_propagate(x.to(DEVICE), w.to(DEVICE), lens, M, wp, wf, backend="triton").cpu()
    y_r = ops.window_propagate(x, w, lens, M, wp, wf, backend="reference")
    # NaN exactly in row 5 and the rows with an edge into node 5 (like the CPU kernels; the dense
    # original smears it over every row through 0 * NaN in its matmuls)
    nan_rows = set(ei[0][ei[1] == 5].tolist()) | {5}
    assert set(torch.isnan(y_t).any(1).nonzero().flatten().tolist()) == nan_rows
    fin = ~torch.isnan(y_r) & ~torch.isnan(y_t)
    assert torch.allclose(y_t[fin], y_r[fin], rtol=1e-10, atol=1e-10)


@needs_triton
@pytest.mark.skipif(ON_GPU, reason="the GPU runs the autotuned tiles; this pins the interpreter's fixed tile")
def test_other_tile_shapes(monkeypatch):
    """Wider row / D tiles than the interpreter's default: BLOCK_D = 2 * BD_MIN exercises the
    zero-filled partial rows of the column pass, BLOCK_R = 32 tiles over several dialogues."""
    from graphsmile.ops import triton_kernels as K

    lens, M, wp, wf, mode, D = [9, 3, 12, 5], 3, 2, -1, "per_edge", 40
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=torch.float64)
    w = _weights(lens, M, wp, wf, mode)
    g = torch.randn(M * N, D, dtype=torch.float64)
    want = _propagate("reference", x, w, lens, M, wp, wf, mode, g)
    monkeypatch.setattr(K, "FIXED", dict(BLOCK_R=32, BLOCK_K=16, BLOCK_D=2 * K.BD_MIN))
    got = _propagate("triton", x, w, lens, M, wp, wf, mode, g, dtype=torch.float32)
    _assert_close(got, want, 2e-5, "BLOCK_R=32, BLOCK_D=2*BD_MIN")


@needs_triton
def test_deterministic():
    lens, M, wp, wf = [5, 9, 3], 3, -1, 2
    N = sum(lens)
    x = torch.randn(M * N, 24, device=DEVICE)
    w = _weights(lens, M, wp, wf, "per_edge", dtype=torch.float32).to(DEVICE)
    g = torch.randn(M * N, 24, device=DEVICE)
    a = _propagate("triton", x, w, lens, M, wp, wf, "per_edge", g, device=DEVICE)
    b = _propagate("triton", x, w, lens, M, wp, wf, "per_edge", g, device=DEVICE)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
def test_half_precision_within_torch_error(dtype, mode):
    """fp16/bf16 (fp32 accumulation) are at least as close to the fp64 truth as plain torch
    (the reference backend) computing in that precision, up to a factor of 2. Under the
    interpreter (whose bf16 tl.dot is wrong in Triton 3.6) the bf16 products are formed in fp32
    (triton_kernels._mm, EMU_BF16), which is what a GPU's bf16 tl.dot computes."""
    rng = random.Random(3)
    if ON_GPU:
        lens, D = [rng.randint(5, 60) for _ in range(12)], 256
    else:
        lens, D = [rng.randint(2, 20) for _ in range(3)], 40
    M, wp, wf = 2, 5, 5
    torch.manual_seed(0)
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=torch.float64)
    w = _weights(lens, M, wp, wf, mode)
    g = torch.randn(M * N, D, dtype=torch.float64)
    x, w, g = x.to(dtype).double(), w.to(dtype).double(), g.to(dtype).double()  # representable inputs
    truth = _propagate("reference", x, w, lens, M, wp, wf, mode, g, dtype=torch.float64, device=DEVICE)
    tri = _propagate("triton", x, w, lens, M, wp, wf, mode, g, dtype=dtype, device=DEVICE)
    plain = _propagate("reference", x, w, lens, M, wp, wf, mode, g, dtype=dtype, device=DEVICE)
    _assert_within_torch_error(("y", "grad_x", "grad_w"), truth, tri, plain)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
def test_half_precision_norm_gradient_rounded_once(dtype, mode):
    """window_norm's fp16/bf16 weight gradient: the exact one rounded once (s recomputed in fp32).
    Triton 3.6's interpreter truncates fp32 -> bf16 in ``.to`` (fp_downcast_rounding too), where a
    GPU rounds to nearest: up to 1 ulp there (the stored norm's s^3 gave up to 1.5 more)."""
    truncates = INTERPRET and dtype == torch.bfloat16 and mode == "per_edge"
    norm_gradient_rounded_once("triton", dtype, mode, device=DEVICE, ulps=1.0 if truncates else 0.5)


@needs_triton
def test_pinned_tiles_switch(monkeypatch):
    """Tiles are pinned under torch.use_deterministic_algorithms(True) or
    GRAPHSMILE_TRITON_AUTOTUNE=0; any other value of the variable is an error naming it."""
    from graphsmile.ops import triton_ops as T

    monkeypatch.delenv("GRAPHSMILE_TRITON_AUTOTUNE", raising=False)
    assert not T.pinned_tiles()
    monkeypatch.setenv("GRAPHSMILE_TRITON_AUTOTUNE", "0")
    assert T.pinned_tiles()
    monkeypatch.setenv("GRAPHSMILE_TRITON_AUTOTUNE", "1")
    assert not T.pinned_tiles()
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert T.pinned_tiles()
    finally:
        torch.use_deterministic_algorithms(was)
    monkeypatch.setenv("GRAPHSMILE_TRITON_AUTOTUNE", "off")
    with pytest.raises(ValueError, match="GRAPHSMILE_TRITON_AUTOTUNE must be 0 or 1, got 'off'"):
        T.pinned_tiles()


@needs_triton
@pytest.mark.skipif(ON_GPU, reason="replaces the autotuned kernels by a stand-in; the GPU case is "
                    "test_gpu_pinned_tiles_same_bits_in_another_process")
def test_pinned_tiles_bypass_the_autotuner(monkeypatch):
    """With tiles pinned, the three window kernels run their PINNED tile and never the autotuned
    kernel (here a stand-in that fails when launched), and give the reference result."""
    from graphsmile.ops import triton_kernels as K

    class NotToBeLaunched:
        def __getitem__(self, grid):
            raise AssertionError("the autotuned kernel was launched although tiles are pinned")

    for name in ("spmm_fwd_tuned", "spmm_bwd_cols_tuned", "spmm_bwd_rows_tuned"):
        monkeypatch.setattr(K, name, NotToBeLaunched())
    # the interpreter's tile sizes, but one per kernel, so a mix-up of kernels shows
    monkeypatch.setattr(K, "PINNED", {
        "fwd": dict(BLOCK_R=16, BLOCK_K=16, BLOCK_D=16),
        "cols": dict(BLOCK_R=32, BLOCK_K=16, BLOCK_D=2 * K.BD_MIN),
        "rows": dict(BLOCK_R=16, BLOCK_K=16, BLOCK_D=32),
    })
    monkeypatch.setenv("GRAPHSMILE_TRITON_AUTOTUNE", "0")
    lens, M, wp, wf, D = [9, 3, 12], 2, 2, -1, 40
    for mode in ("per_edge", "relative"):
        wf_mode = 3 if mode == "relative" else wf
        N = sum(lens)
        x = torch.randn(M * N, D, dtype=torch.float64)
        w = _weights(lens, M, wp, wf_mode, mode)
        g = torch.randn(M * N, D, dtype=torch.float64)
        want = _propagate("reference", x, w, lens, M, wp, wf_mode, mode, g)
        got = _propagate("triton", x, w, lens, M, wp, wf_mode, mode, g, dtype=torch.float32)
        _assert_close(got, want, 2e-5, f"pinned tiles, {mode}")


# --------------------------------------------------------------------------------------------
# shift pairs

SHIFT_CASES = [
    ([1], -1, 2, torch.float32),
    ([5, 3], 1, 2, torch.float64),
    ([5, 3, 12], 3, 2, torch.float32),
    ([40, 3], -1, 3, torch.float32),  # a chunk larger than a line of the kernel
    ([7, 2], 100, 2, torch.float64),  # shift_win larger than the dialogues
    ([12, 1, 7, 9], 5, 1, torch.float32),
    ([33, 17], 16, 20, torch.float64),  # C wider than one C tile
]


@needs_triton
@pytest.mark.parametrize("case", SHIFT_CASES, ids=lambda c: f"L{'-'.join(map(str, c[0]))}-sw{c[1]}-C{c[2]}-{str(c[3])[6:]}")
def test_shift_pair_logits_matches_reference_and_dense(case):
    lens, shift_win, C, dtype = case
    N, D = sum(lens), 6
    base = [torch.randn(N, D, dtype=torch.float64), torch.randn(N, D, dtype=torch.float64),
            torch.randn(C, 2 * D, dtype=torch.float64), torch.randn(C, dtype=torch.float64)]
    P = ops.num_shift_pairs(lens, shift_win)
    g = torch.randn(P, C, dtype=torch.float64)

    def run(backend, inputs, grad, dev):
        u, v, W, b = (t.to(dev).clone().requires_grad_() for t in inputs)
        y = ops.shift_pair_logits(u, v, lens, shift_win, W, b, backend=backend)
        (y * grad.to(dev)).sum().backward()
        return [t.detach().double().cpu() for t in (y, u.grad, v.grad, W.grad, b.grad)]

    got = run("triton", [t.to(dtype) for t in base], g.to(dtype), DEVICE)
    assert got[0].shape == (P, C)
    for backend in ("reference", "dense"):
        # fp64 on the CPU: the truth for the inputs rounded to `dtype`
        want = run(backend, [t.to(dtype).double() for t in base], g.to(dtype).double(), "cpu")
        _assert_close(got, want, _tol(dtype), f"triton vs {backend}")


@needs_triton
def test_shift_pair_sum_only_one_input_needs_grad():
    from graphsmile.ops import triton_ops

    lens, sw = [4, 6], 3
    N = sum(lens)
    a = torch.randn(N, 2, device=DEVICE, requires_grad=True)
    b = torch.randn(N, 2, device=DEVICE)
    out = triton_ops.shift_pair_sum(a, b, lens, sw)
    out.sum().backward()
    idx = ops.shift_pair_index(lens, sw)
    want = torch.zeros(N).index_add_(0, idx[0], torch.ones(idx.shape[1]))
    assert torch.allclose(a.grad.cpu(), want[:, None].expand(N, 2))


# --------------------------------------------------------------------------------------------
# fused shift-pair NLL (ops.shift_pair_nll; triton_ops.shift_pair_nll)

# (lengths, shift_win, dtype, reduction): one utterance; chunks of 1; shift_win 3 with a
# remainder chunk; chunks longer than a line (the interpreter's tiles are 16 rows x 16 columns,
# the GPU's 32 x 32, 32 x 16 in fp64) so that rows, columns and column partials span several tiles.
NLL_CASES = [
    ([1], -1, torch.float32, "mean"),
    ([5, 3, 1], 1, torch.float64, "sum"),
    ([40, 1, 7], -1, torch.float32, "sum"),
    ([12, 1, 7, 9], 3, torch.float64, "mean"),
    ([20, 1, 3], 3, torch.float32, "mean"),
    ([35, 2, 1], -1, torch.float64, "mean"),
    ([70, 1], -1, torch.float32, "mean"),
]


def _nll_inputs(lens, D=6):
    N = sum(lens)
    base = [torch.randn(N, D, dtype=torch.float64), torch.randn(N, D, dtype=torch.float64),
            torch.randn(2, 2 * D, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    return base, torch.randint(0, 3, (N,))


def _nll_run(backend, inputs, sentiment, lens, shift_win, reduction, dtype, device, scale=0.75):
    """[loss, grad_u, grad_v, grad_W, grad_bias] (fp64, CPU) and the confusion of shift_pair_nll
    on `inputs` cast to `dtype` on `device`, backpropagating `scale`."""
    u, v, W, b = (t.to(device, dtype).clone().requires_grad_() for t in inputs)
    loss, conf = ops.shift_pair_nll(u, v, lens, shift_win, W, b, sentiment.to(device), reduction=reduction,
                                    backend=backend)
    assert loss.dim() == 0 and loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert conf.shape == (2, 2) and conf.dtype == torch.int64
    (loss * scale).backward()
    return [loss.detach().double().cpu()] + [t.grad.double().cpu() for t in (u, v, W, b)], conf.cpu()


def _nll_ids(c):
    return f"L{'-'.join(map(str, c[0]))}-sw{c[1]}-{str(c[2])[6:]}-{c[3]}"


@needs_triton
@pytest.mark.parametrize("case", NLL_CASES, ids=_nll_ids)
def test_shift_nll_matches_reference_and_dense(case):
    lens, shift_win, dtype, reduction = case
    base, sent = _nll_inputs(lens)
    P = ops.num_shift_pairs(lens, shift_win)
    got, conf = _nll_run("triton", base, sent, lens, shift_win, reduction, dtype, DEVICE)
    assert int(conf.sum()) == P
    # the same-dtype reference computes the same rounded logits: the same predictions
    _, conf_same = _nll_run("reference", base, sent, lens, shift_win, reduction, dtype, DEVICE)
    assert torch.equal(conf, conf_same)
    for backend in ("reference", "dense"):
        # fp64 on the CPU: the truth for the inputs rounded to `dtype`
        want, conf_want = _nll_run(backend, [t.to(dtype) for t in base], sent, lens, shift_win, reduction,
                                   torch.float64, "cpu")
        names = ("loss", "grad_u", "grad_v", "grad_W", "grad_bias")
        for name, a, b in zip(names, got, want):
            scale = max(1.0, float(b.abs().max()))
            err = float((a - b).abs().max())
            assert err <= _tol(dtype) * scale, f"triton vs {backend}: {name} differs by {err:.3e} (scale {scale:.3e})"
        # an fp32 logit may round a near-tie the other way than fp64
        slack = 0 if dtype == torch.float64 else 2
        assert int((conf - conf_want).abs().sum()) <= slack, \
            f"triton vs {backend}: {conf.tolist()} != {conf_want.tolist()}"


@needs_triton
@pytest.mark.parametrize("shift_win", [-1, 3])
def test_shift_nll_bf16_within_torch_error(shift_win):
    """bf16 inputs (fp32 loss and residual sums) are at least as close to the fp64 truth as plain
    torch in bf16 (the reference backend), up to a factor of 2, with the same predictions."""
    lens = [40, 1, 7]
    base, sent = _nll_inputs(lens)
    base = [t.to(torch.bfloat16).double() for t in base]  # representable inputs
    truth, _ = _nll_run("reference", base, sent, lens, shift_win, "mean", torch.float64, "cpu")
    tri, conf_tri = _nll_run("triton", base, sent, lens, shift_win, "mean", torch.bfloat16, DEVICE)
    plain, conf_plain = _nll_run("reference", base, sent, lens, shift_win, "mean", torch.bfloat16, DEVICE)
    assert torch.equal(conf_tri, conf_plain)
    _assert_within_torch_error(("loss", "grad_u", "grad_v", "grad_W", "grad_bias"), truth, tri, plain)


@needs_triton
def test_shift_nll_no_grad_skips_residuals(monkeypatch):
    """Under torch.no_grad, or when neither a nor b requires grad, the op runs without the
    residual sums (with_grad=False: no column partials, no second kernel), with the same loss
    and confusion bits; backpropagating through such a call is refused."""
    from graphsmile.ops import triton_ops as T

    lens, sw = [40, 1, 7], -1
    base, sent = _nll_inputs(lens)
    u, v, W, b = (t.float().to(DEVICE).requires_grad_() for t in base)
    sent = sent.to(DEVICE)
    seen = []
    op = T._shift_pair_nll_op

    def spy(*args):
        seen.append(args[-1])
        out = op(*args)
        if not args[-1]:
            assert out[2].numel() == 0 and out[3].numel() == 0
        return out

    monkeypatch.setattr(T, "_shift_pair_nll_op", spy)
    loss_g, conf_g = ops.shift_pair_nll(u, v, lens, sw, W, b, sent, backend="triton")
    with torch.no_grad():
        loss_n, conf_n = ops.shift_pair_nll(u, v, lens, sw, W, b, sent, backend="triton")
    loss_d, conf_d = ops.shift_pair_nll(u.detach(), v.detach(), lens, sw, W.detach(), b.detach(), sent,
                                        backend="triton")
    assert seen == [True, False, False]
    assert loss_g.requires_grad and not loss_n.requires_grad and not loss_d.requires_grad
    for loss, conf in ((loss_n, conf_n), (loss_d, conf_d)):
        assert torch.equal(loss, loss_g.detach()) and torch.equal(conf, conf_g)

    ltab, parts = T.pair_lines(lens, sw, DEVICE, parts=True)
    a = torch.randn(sum(lens), 2, device=DEVICE, requires_grad=True)
    total, _, _, _ = op(a, a.detach(), sent, ltab, parts, False)
    with pytest.raises(RuntimeError, match="with_grad=False"):
        total.backward()


@needs_triton
def test_shift_nll_one_input_needs_grad():
    """Only b requires grad (and then only a): its gradient alone, equal to the reference's."""
    from graphsmile.ops import reference as R
    from graphsmile.ops import triton_ops as T

    lens, sw = [20, 1, 3], 3
    N = sum(lens)
    a0, b0 = torch.randn(N, 2, dtype=torch.float64), torch.randn(N, 2, dtype=torch.float64)
    sent = torch.randint(0, 2, (N,))
    for which in (0, 1):
        grads = []
        for fn, dev in ((T.shift_pair_nll, DEVICE), (R.shift_pair_nll, "cpu")):
            a, b = a0.to(dev).clone(), b0.to(dev).clone()
            (a, b)[which].requires_grad_()
            loss, _ = fn(a, b, sent.to(dev), lens, sw)
            loss.backward()
            assert (a, b)[1 - which].grad is None
            grads.append((a, b)[which].grad.cpu())
        assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-10)


@needs_triton
def test_shift_nll_deterministic():
    lens = [40, 1, 7]
    base, sent = _nll_inputs(lens)
    for sw in (-1, 3):
        runs = [_nll_run("triton", base, sent, lens, sw, "mean", torch.float32, DEVICE) for _ in range(2)]
        assert torch.equal(runs[0][1], runs[1][1])
        for a, b in zip(runs[0][0], runs[1][0]):
            assert torch.equal(a, b)


@needs_triton
def test_shift_nll_empty_batch():
    from graphsmile.ops import triton_ops as T

    a = torch.zeros(0, 2, device=DEVICE, requires_grad=True)
    loss, conf = T.shift_pair_nll(a, a, torch.zeros(0, dtype=torch.long, device=DEVICE), [], -1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(conf.cpu(), torch.zeros(2, 2, dtype=torch.long))
    assert a.grad.shape == (0, 2)


# --------------------------------------------------------------------------------------------
# custom-op contracts, torch.compile, dtypes, optional triton


@needs_triton
def test_opcheck():
    from graphsmile.ops import triton_ops as T

    lens, M, wp, wf = [3, 5], 2, 1, 0
    N = sum(lens)
    x = torch.randn(M * N, 4, device=DEVICE)
    w = _weights(lens, M, wp, wf, "per_edge", dtype=torch.float32).to(DEVICE)
    dia, dtab = T.window_meta(lens, M, wp, wf, DEVICE)
    s = T._window_norm_op(w, dia, dtab, M, wp, wf, 0)
    ltab, P = T.pair_lines(lens, 2, DEVICE)
    a = torch.randn(N, 2, device=DEVICE)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for op, args in (
        (T._window_norm_op, (w.clone().requires_grad_(), dia, dtab, M, wp, wf, 0)),
        (T._window_spmm_op, (x.clone().requires_grad_(), w.clone().requires_grad_(), s.clone().requires_grad_(), dia, dtab, M, wp, wf, 0)),
        (T._shift_pair_sum_op, (a.clone().requires_grad_(), a.clone().requires_grad_(), ltab, P)),
    ):
        torch.library.opcheck(op, args, test_utils=tests)


@needs_triton
def test_table_cache_bypassed_while_capturing(monkeypatch):
    """The per-structure tables are cached, except while a CUDA graph is being captured: a table
    built then is written only at replay (it must not serve eager calls), and the graph must
    not depend on a cache entry that an eviction may free."""
    from graphsmile.ops import triton_ops as T

    lens = [4, 9, 2]
    first = T.window_meta(lens, 2, 1, 1, DEVICE)
    assert T.window_meta(lens, 2, 1, 1, DEVICE)[0] is first[0]  # cached
    monkeypatch.setattr(T, "capturing", lambda device: True)
    size = len(T._CACHE)
    built = T.window_meta(lens, 2, 1, 1, DEVICE)
    assert built[0] is not first[0] and torch.equal(built[0].cpu(), first[0].cpu())
    assert torch.equal(built[1].cpu(), first[1].cpu())
    ltab, total = T.pair_lines([7, 3], 2, DEVICE)
    assert T.pair_lines([7, 3], 2, DEVICE)[0] is not ltab and len(T._CACHE) == size


@needs_triton
def test_table_cache_one_entry_per_stream(monkeypatch):
    """A cached table serves only the stream it was built (uploaded, allocated) on: another
    stream could read it before its upload lands, or after an eviction freed it."""
    from graphsmile.ops import triton_ops as T

    lens = [5, 8, 3]
    if ON_GPU:   # real streams
        first = T.window_meta(lens, 2, 2, 2, DEVICE)
        side = torch.cuda.Stream(device=DEVICE)
        with torch.cuda.stream(side):
            on_side = T.window_meta(lens, 2, 2, 2, DEVICE)
            assert T.window_meta(lens, 2, 2, 2, DEVICE)[0] is on_side[0]
        side.synchronize()
        assert on_side[0] is not first[0] and torch.equal(on_side[1], first[1])
        assert T.window_meta(lens, 2, 2, 2, DEVICE)[0] is first[0]
    token = {"value": 11}
    monkeypatch.setattr(T, "_stream_token", lambda device: token["value"])
    a = T.window_meta(lens, 2, 3, 1, DEVICE)
    assert T.window_meta(lens, 2, 3, 1, DEVICE)[0] is a[0]
    pa = T.pair_lines(lens, 3, DEVICE)
    token["value"] = 12
    b = T.window_meta(lens, 2, 3, 1, DEVICE)
    pb = T.pair_lines(lens, 3, DEVICE)
    assert b[0] is not a[0] and pb[0] is not pa[0]
    assert torch.equal(b[1].cpu(), a[1].cpu()) and torch.equal(pb[0].cpu(), pa[0].cpu())
    token["value"] = 11
    assert T.window_meta(lens, 2, 3, 1, DEVICE)[0] is a[0]


@needs_triton
def test_torch_compile():
    """fullgraph compile of the three ops with autograd: Inductor on a GPU; on the CPU under the
    interpreter, aot_eager (Inductor cannot compile the interpreted kernels)."""
    lens, M, wp, wf, sw = [5, 7, 2], 2, 2, 1, 3
    N, D = sum(lens), 16
    backend = "inductor" if ON_GPU else "aot_eager"

    def f(x, w, u, W, b):
        y = ops.window_propagate(x, w, lens, M, wp, wf, backend="triton")
        z = ops.shift_pair_logits(u, u, lens, sw, W, b, backend="triton")
        return y, z

    torch._dynamo.reset()
    cf = torch.compile(f, backend=backend, fullgraph=True)
    base = [torch.randn(M * N, D, device=DEVICE), _weights(lens, M, wp, wf, "per_edge", dtype=torch.float32).to(DEVICE),
            torch.randn(N, D, device=DEVICE), torch.randn(2, 2 * D, device=DEVICE), torch.randn(2, device=DEVICE)]
    res = []
    for fn in (f, cf):
        args = [t.clone().requires_grad_() for t in base]
        y, z = fn(*args)
        (y.square().sum() + z.square().sum()).backward()
        res.append([y.detach(), z.detach()] + [t.grad for t in args])
    for a, b in zip(*res):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@needs_triton
def test_shift_nll_opcheck():
    from graphsmile.ops import triton_ops as T

    lens, sw = [5, 1, 3], 2
    N = sum(lens)
    ltab, parts = T.pair_lines(lens, sw, DEVICE, parts=True)
    a, b = torch.randn(N, 2, device=DEVICE), torch.randn(N, 2, device=DEVICE)
    sent = torch.randint(0, 3, (N,), device=DEVICE)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for with_grad in (True, False):
        args = (a.clone().requires_grad_(with_grad), b.clone().requires_grad_(with_grad), sent, ltab, parts, with_grad)
        torch.library.opcheck(T._shift_pair_nll_op, args, test_utils=tests)


@needs_triton
def test_shift_nll_torch_compile():
    """fullgraph compile of the fused NLL (mean) with autograd, as test_torch_compile."""
    lens, sw = [20, 1, 3], -1
    N, D = sum(lens), 8
    backend = "inductor" if ON_GPU else "aot_eager"
    sent = torch.randint(0, 3, (N,), device=DEVICE)

    def f(u, v, W, b):
        return ops.shift_pair_nll(u, v, lens, sw, W, b, sent, backend="triton")

    torch._dynamo.reset()
    cf = torch.compile(f, backend=backend, fullgraph=True)
    base = [torch.randn(N, D, device=DEVICE), torch.randn(N, D, device=DEVICE), torch.randn(2, 2 * D, device=DEVICE),
            torch.randn(2, device=DEVICE)]
    res = []
    for fn in (f, cf):
        args = [t.clone().requires_grad_() for t in base]
        loss, conf = fn(*args)
        (3.0 * loss).backward()
        res.append([loss.detach(), conf] + [t.grad for t in args])
    for a, b in zip(*res):
        assert a.dtype == b.dtype and torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the other specialisation (with_grad=False), recompiled
        loss, conf = cf(*base)
    assert torch.allclose(loss, res[0][0], rtol=1e-5, atol=1e-5) and torch.equal(conf, res[0][1])


@needs_triton
def test_rejects_unsupported_dtype():
    from graphsmile.ops import triton_ops

    w = torch.ones(10, dtype=torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="float16, bfloat16, float32 and float64"):
        triton_ops.window_norm(w, [2], 2, 0, 0, 0)


_COMPILE_CHECK = textwrap.dedent(
    """
    import sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from graphsmile.ops import triton_kernels as K

    target = GPUTarget("cuda", 90, 32)  # H100

    def comp(fn, sig, consts, num_warps=4):
        sig = dict(sig, **{k: "constexpr" for k in consts})
        try:
            src = ASTSource(fn=fn, signature=sig, constexprs=consts)
        except TypeError as e:  # another Triton's ASTSource signature
            print("SKIP ASTSource API:", e)
            sys.exit(0)
        triton.compile(src, target=target, options=dict(num_warps=num_warps, num_stages=2))

    meta = {"dia_ptr": "*i32", "dtab_ptr": "*i64", "N": "i32", "B": "i32"}
    for dt, acc64, ieee, (M, WP, WF, MODE), tile in (
        ("fp32", False, True, (3, -1, 2, 0), (32, 32, 64, 4)),
        ("bf16", False, False, (2, 1, -1, 1), (64, 32, 64, 8)),
        ("fp64", True, False, (2, 17, 17, 0), (16, 16, 32, 4)),
    ):
        p = "*" + dt
        c = dict(M=M, WP=WP, WF=WF, MODE=MODE, ACC64=acc64, EMU_BF16=False, NB=2)  # NB: the autotuning key's size class
        b = dict(BLOCK_R=tile[0], BLOCK_K=tile[1], BLOCK_D=tile[2])
        comp(K._spmm_fwd_kernel, dict(x_ptr=p, w_ptr=p, s_ptr=p, y_ptr=p, **meta, D="i32"), dict(c, IEEE=ieee, **b), tile[3])
        if dt == "fp64":
            continue
        comp(K._spmm_bwd_cols_kernel, dict(g_ptr=p, x_ptr=p, w_ptr=p, s_ptr=p, gx_ptr=p, gsp_ptr="*fp32", **meta, D="i32", DT="i32"),
             dict(c, IEEE=ieee, NEED_GX=True, BD_MIN=32, **b), tile[3])
        comp(K._spmm_bwd_rows_kernel, dict(g_ptr=p, x_ptr=p, w_ptr=p, s_ptr=p, gw_ptr=p, rel_ptr="*fp32", gsp_ptr="*fp32", **meta, D="i32"),
             dict(c, IEEE=ieee, NEED_GW=True, **b), tile[3])
    c = dict(M=3, WP=2, WF=0, MODE=1, ACC64=False, BLOCK_R=32, BLOCK_K=32)
    comp(K._norm_fwd_kernel, dict(w_ptr="*fp32", s_ptr="*fp32", **meta), c)
    comp(K._norm_bwd_kernel, dict(gs_ptr="*fp32", s_ptr="*fp32", w_ptr="*fp32", gw_ptr="*fp32", rel_ptr="*fp32", **meta),
         dict(c, RECOMPUTE=False))
    comp(K._norm_bwd_kernel, dict(gs_ptr="*bf16", s_ptr="*bf16", w_ptr="*bf16", gw_ptr="*bf16", rel_ptr="*fp32", **meta),
         dict(c, MODE=0, RECOMPUTE=True))
    comp(K._pair_sum_fwd_kernel, dict(a_ptr="*fp16", b_ptr="*fp16", out_ptr="*fp16", ltab_ptr="*i64", C="i32"),
         dict(ACC64=False, BLOCK_S=32, BLOCK_C=2))
    comp(K._pair_sum_bwd_kernel, dict(g_ptr="*fp32", out_ptr="*fp32", ltab_ptr="*i64", C="i32"),
         dict(AXIS=1, ACC64=False, BLOCK_S=32, BLOCK_C=2))
    for dt, acc, acc64 in (("bf16", "fp32", False), ("fp32", "fp32", False), ("fp64", "fp64", True)):
        comp(K._pair_nll_fwd_kernel, dict(a_ptr="*" + dt, b_ptr="*" + dt, s_ptr="*i64", ltab_ptr="*i64",
                                          loss_ptr="*" + acc, cnt_ptr="*i64", rowr_ptr="*" + acc, colp_ptr="*" + acc),
             dict(ACC64=acc64, WITH_GRAD=True, EMU_BF16=False, BLOCK_S=32, BLOCK_J=16 if acc64 else 32))
    comp(K._pair_nll_cols_kernel, dict(colp_ptr="*fp32", colr_ptr="*fp32", ltab_ptr="*i64"),
         dict(BLOCK_S=32, BLOCK_K=8))
    print("COMPILED")
    """
)


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
@pytest.mark.skipif(ON_GPU, reason="a GPU is here: the other tests compile and run the kernels")
def test_kernels_compile_for_h100_without_a_gpu():
    """Compiles the kernels (not interpreted) down to an sm_90 cubin with Triton's bundled ptxas:
    catches what the interpreter accepts but the GPU compiler rejects, on machines without a GPU."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", _COMPILE_CHECK], capture_output=True, text=True, env=env, timeout=600)
    if "SKIP" in r.stdout:
        pytest.skip(r.stdout.strip())
    if r.returncode != 0 and ("ptxas" in r.stderr and "not found" in r.stderr.lower()):
        pytest.skip("this triton install has no ptxas")
    assert r.returncode == 0 and "COMPILED" in r.stdout, r.stdout + r.stderr[-4000:]


def test_graphsmile_works_without_triton():
    """With triton unimportable, graphsmile imports and runs, and backend='triton' says why."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` fail and find_spec return None
        import torch
        import graphsmile.ops as ops
        x = torch.randn(2 * 3, 4)
        w = torch.ones(ops.num_edges([3], 2, 1, 1))
        ops.window_propagate(x, w, [3], 2, 1, 1, backend="reference")
        try:
            ops.window_propagate(x, w, [3], 2, 1, 1, backend="triton")
        except RuntimeError as e:
            assert "triton" in str(e), e
            print("OK")
        """
    )
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# GPU-only cases


def _gpu_case(lens, M, wp, wf, mode, D, dtype, seed=0):
    torch.manual_seed(seed)
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=torch.float64, device="cuda")
    w = _weights(lens, M, wp, wf, mode).cuda()
    g = torch.randn(M * N, D, dtype=torch.float64, device="cuda")
    return x, w, g


@gpu_only
@pytest.mark.parametrize(
    "lens,M,wp,wf,mode,D",
    [
        ([random.Random(1).randint(8, 110) for _ in range(16)], 2, 17, 17, "per_edge", 512),
        ([random.Random(2).randint(1, 33) for _ in range(32)], 3, 3, 3, "relative", 384),
        ([700, 3, 150], 2, -1, -1, "per_edge", 64),  # unbounded windows, long dialogue: chunked band
        ([300, 7], 2, -1, 5, "per_edge", 200),
        ([50] * 16, 2, 5, 5, "relative", 256),
    ],
)
def test_gpu_fp32_bigger_shapes(lens, M, wp, wf, mode, D):
    x, w, g = _gpu_case(lens, M, wp, wf, mode, D, torch.float32)
    got = _propagate("triton", x, w, lens, M, wp, wf, mode, g, dtype=torch.float32, device="cuda")
    want = _propagate("reference", x, w, lens, M, wp, wf, mode, g, dtype=torch.float64, device="cuda")
    _assert_close(got, want, 1e-4, "fp32 vs fp64 reference")
    if ops._ext.has_kernel("CUDA"):
        cu = _propagate("cuda", x, w, lens, M, wp, wf, mode, g, dtype=torch.float32, device="cuda")
        _assert_close(got, cu, 1e-4, "triton vs cuda backend")


@gpu_only
def test_gpu_fp64_path():
    lens, M, wp, wf, mode, D = [37, 90, 5], 3, 4, 2, "per_edge", 70
    x, w, g = _gpu_case(lens, M, wp, wf, mode, D, torch.float64)
    got = _propagate("triton", x, w, lens, M, wp, wf, mode, g, device="cuda")
    want = _propagate("reference", x, w, lens, M, wp, wf, mode, g, device="cuda")
    _assert_close(got, want, 1e-10, "fp64")


@gpu_only
def test_gpu_pinned_tiles_same_bits_in_another_process():
    """Pinned tiles (torch.use_deterministic_algorithms(True) here, GRAPHSMILE_TRITON_AUTOTUNE=0
    in a fresh process) give the same bits in both: the tile fixes the order of every sum."""
    code = textwrap.dedent("""
        import sys, torch, graphsmile.ops as ops
        torch.manual_seed(5)
        lens, M = [40, 7, 90, 33], 2
        N = sum(lens)
        x = torch.randn(M * N, 96, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = (torch.rand(ops.num_edges(lens, M, 17, 17), device="cuda") + 0.25).to(torch.bfloat16).requires_grad_()
        g = torch.randn(M * N, 96, device="cuda", dtype=torch.bfloat16)
        y = ops.window_propagate(x, w, lens, M, 17, 17, backend="triton")
        y.backward(g)
        torch.save([t.detach().cpu() for t in (y, x.grad, w.grad)], sys.argv[1])
    """)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        here, there = os.path.join(tmp, "here.pt"), os.path.join(tmp, "there.pt")
        env = dict(os.environ, GRAPHSMILE_TRITON_AUTOTUNE="0")
        subprocess.run([sys.executable, "-c", code, there], env=env, check=True, timeout=600)
        was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            exec(compile(code.replace("sys.argv[1]", repr(here)), "<pinned>", "exec"), {})
        finally:
            torch.use_deterministic_algorithms(was)
        for name, a, b in zip(("y", "grad_x", "grad_w"), torch.load(here), torch.load(there)):
            assert torch.equal(a, b), f"{name}: pinned tiles gave different bits in another process"


@gpu_only
def test_gpu_shift_pairs_long_dialogue():
    lens, sw, C = [2000, 17, 33], -1, 2
    N, D = sum(lens), 64
    u = torch.randn(N, D, device="cuda", requires_grad=True)
    W = torch.randn(C, 2 * D, device="cuda", requires_grad=True)
    b = torch.randn(C, device="cuda", requires_grad=True)
    res = []
    for backend in ("triton", "reference"):
        for t in (u, W, b):
            t.grad = None
        y = ops.shift_pair_logits(u, u, lens, sw, W, b, backend=backend)
        y.square().mean().backward()
        res.append([y.detach(), u.grad.clone(), W.grad.clone(), b.grad.clone()])
    for a, c in zip(*res):
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-4)


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_shift_nll_long_dialogue(dtype):
    """A 2,000-utterance chunk (63 lines of 32 rows) and short ones: loss, confusion and gradients
    of the fused NLL against the reference backend (which builds the 4M-pair logits)."""
    lens, sw, D = [2000, 17, 33], -1, 64
    N = sum(lens)
    base = [torch.randn(N, D, dtype=torch.float64, device="cuda"),
            torch.randn(2, 2 * D, dtype=torch.float64, device="cuda"), torch.randn(2, dtype=torch.float64, device="cuda")]
    sent = torch.randint(0, 3, (N,), device="cuda")
    res = []
    for backend in ("triton", "reference"):
        u, W, b = (t.to(dtype).clone().requires_grad_() for t in base)
        loss, conf = ops.shift_pair_nll(u, u, lens, sw, W, b, sent, backend=backend)
        loss.backward()
        res.append([loss.detach(), u.grad, W.grad, b.grad, conf])
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for a, c in zip(res[0][:4], res[1][:4]):
        assert torch.allclose(a, c, rtol=tol, atol=tol)
    assert torch.equal(res[0][4], res[1][4])


@gpu_only
def test_gpu_torch_compile_model_like_stack():
    """A GraphSmile-like stack (norm once, K layers) under Inductor, fwd + bwd, vs eager."""
    lens, M, wp, wf, D, K = [random.Random(4).randint(8, 110) for _ in range(8)], 2, 17, 17, 128, 3
    N = sum(lens)
    lin = [torch.nn.Linear(D, D).cuda() for _ in range(K)]

    def stack(x, w):
        s = ops.window_norm(w, lens, M, wp, wf, backend="triton")
        h = x
        for layer in lin:
            h = ops.window_spmm(layer(h), w, s, lens, M, wp, wf, backend="triton")
        return h

    x0 = torch.randn(M * N, D, device="cuda")
    w0 = _weights(lens, M, wp, wf, "per_edge", dtype=torch.float32).cuda()
    torch._dynamo.reset()
    outs = []
    for fn in (stack, torch.compile(stack, fullgraph=True)):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = fn(x, w)
        y.square().mean().backward()
        outs.append([y.detach(), x.grad, w.grad])
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
