"""The CUDA kernels (backend="cuda", csrc/cuda/*.cu + kernels/*.cuh) against the pure-torch
reference and the dense original: forward and every gradient, in fp64, fp32, fp16 and bf16,
determinism, long dialogues, argument errors.

Everything here needs a GPU and an extension built with CUDA kernels; otherwise it skips (only
the registration test runs where the extension was built with CUDA on a GPU-less machine).
Low-precision results are judged against the error of plain torch in the same precision: ours
(vs the fp64 result) must be at most 2x that of the reference backend run in that dtype, plus
one ulp of the output's scale.
"""
import random

import pytest
import torch

import graphsmile.ops as ops
from graphsmile.ops import _ext

from conftest import random_lengths

OPS = (
    "window_norm",
    "window_norm_backward",
    "window_spmm",
    "window_spmm_backward",
    "shift_pair_sum",
    "shift_pair_sum_backward",
)


def _registered(op: str) -> bool:
    return _ext.HAS_EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{op}", "CUDA")


def _skip_reason():
    if not _ext.HAS_EXTENSION:
        return f"graphsmile._C not loaded ({_ext.LOAD_ERROR})"
    if not all(_registered(op) for op in OPS):
        return "graphsmile._C was built without the CUDA kernels"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


SKIP_REASON = _skip_reason()
needs_gpu = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@pytest.mark.skipif(not _ext.has_kernel("CUDA"), reason="graphsmile._C has no CUDA kernels")
def test_all_ops_registered_for_cuda():
    """If the extension has CUDA kernels at all, it has them for every op (runs without a GPU)."""
    missing = [op for op in OPS if not _registered(op)]
    assert not missing, f"no CUDA kernel for {missing}"


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DT_IDS = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
CUDA = "cuda"

# (lengths, M, win_p, win_f, D): window edges (0, unbounded, longer than the dialogue), D tails.
WINDOW_CASES = [
    ([1], 2, 0, 0, 1),
    ([1, 1, 1], 3, -1, -1, 3),
    ([5], 2, 0, 0, 4),
    ([5, 3], 2, -1, 0, 5),
    ([5, 3], 2, 0, -1, 64),
    ([4, 7, 2], 2, 10, 10, 65),  # windows longer than the dialogues
    ([6, 1, 9], 3, 2, 1, 70),
    ([12, 3], 3, -1, 2, 7),
    ([40, 33, 1, 60], 2, 17, 17, 130),
    ([60], 2, 70, 70, 33),
    ([33, 31, 2, 60], 3, 0, 35, 8),
]
_rng = random.Random(4321)
for _ in range(12):
    WINDOW_CASES.append(
        (
            random_lengths(_rng, 8, 60),
            _rng.choice([2, 3]),
            _rng.choice([-1, 0, 1, 3, 17, 70]),
            _rng.choice([-1, 0, 2, 17, 70]),
            _rng.choice([1, 5, 16, 32, 63, 64, 100, 129]),
        )
    )


def _wid(case):
    lens, M, wp, wf, D = case
    return f"B{len(lens)}-N{sum(lens)}-M{M}-w{wp},{wf}-D{D}"


def _window_inputs(lens, M, wp, wf, D, mode, extra=5):
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=torch.float64, device=CUDA)
    if mode == "per_edge":
        w = torch.rand(ops.num_edges(lens, M, wp, wf) + extra, dtype=torch.float64, device=CUDA) + 0.25
    else:
        w = torch.rand(M, M - 1, wp + wf + 1, dtype=torch.float64, device=CUDA) + 0.25
    g = torch.randn(M * N, D, dtype=torch.float64, device=CUDA)
    return x, w, g


def _propagate(backend, x, w, g, lens, M, wp, wf, mode):
    xx = x.detach().clone().requires_grad_()
    ww = w.detach().clone().requires_grad_()
    y = ops.window_propagate(xx, ww, lens, M, wp, wf, weight_mode=mode, backend=backend)
    y.backward(g)
    return y.detach(), xx.grad, ww.grad


def _assert_fp32(name, got, want):
    want = want.double()
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * max(1.0, scale), equal_nan=True,
                               msg=lambda m: f"{name}: {m}")


def _assert_lowp(name, ours, theirs, exact, dtype):
    """Error of ours (vs the fp64 result) <= 2x the error of plain torch in `dtype` + 1 ulp."""
    exact = exact.double()
    if exact.numel() == 0:
        assert ours.numel() == 0
        return
    scale = exact.abs().max().item()
    e_ours = (ours.double() - exact).abs().max().item()
    e_theirs = (theirs.double() - exact).abs().max().item()
    atol = torch.finfo(dtype).eps * max(scale, 1e-3)
    assert e_ours <= 2 * e_theirs + atol, f"{name}: our error {e_ours:.3g} > 2 x torch's {e_theirs:.3g} + {atol:.3g}"


def _check_against_reference(names, run, dtype):
    """run(backend, dtype) -> tuple of tensors; compares backend='cuda' with the reference."""
    exact = run("reference", torch.float64)
    ours = run("cuda", dtype)
    for name, o in zip(names, ours):
        assert o.dtype == dtype, (name, o.dtype)
        assert o.device.type == "cuda"
    if dtype == torch.float64:
        for name, o, e in zip(names, ours, exact):
            torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-12, equal_nan=True, msg=lambda m: f"{name}: {m}")
    elif dtype == torch.float32:
        for name, o, e in zip(names, ours, exact):
            _assert_fp32(name, o, e)
    else:
        theirs = run("reference", dtype)
        for name, o, t, e in zip(names, ours, theirs, exact):
            _assert_lowp(name, o, t, e, dtype)
    return ours


# --- window_propagate -------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("case", WINDOW_CASES, ids=_wid)
def test_window_propagate_per_edge(case, dtype):
    lens, M, wp, wf, D = case
    x, w, g = _window_inputs(lens, M, wp, wf, D, "per_edge")

    def run(backend, dt):
        return _propagate(backend, x.to(dt), w.to(dt), g.to(dt), lens, M, wp, wf, "per_edge")

    ours = _check_against_reference(("y", "grad_x", "grad_edge_weight"), run, dtype)
    E = ops.num_edges(lens, M, wp, wf)
    assert torch.all(ours[2][E:] == 0), "entries past E must get a zero gradient"


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("case", [c for c in WINDOW_CASES if c[2] >= 0 and c[3] >= 0], ids=_wid)
def test_window_propagate_relative(case, dtype):
    lens, M, wp, wf, D = case
    x, w, g = _window_inputs(lens, M, wp, wf, D, "relative")

    def run(backend, dt):
        return _propagate(backend, x.to(dt), w.to(dt), g.to(dt), lens, M, wp, wf, "relative")

    ours = _check_against_reference(("y", "grad_x", "grad_edge_weight"), run, dtype)
    assert ours[2].shape == w.shape


@needs_gpu
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
@pytest.mark.parametrize("case", WINDOW_CASES[:8], ids=_wid)
def test_window_propagate_matches_dense_fp64(case, mode):
    lens, M, wp, wf, D = case
    if mode == "relative":
        wp, wf = max(wp, 0), max(wf, 0)
    x, w, g = _window_inputs(lens, M, wp, wf, D, mode)
    got = _propagate("cuda", x, w, g, lens, M, wp, wf, mode)
    want = _propagate("dense", x, w, g, lens, M, wp, wf, mode)
    for name, a, b in zip(("y", "grad_x", "grad_edge_weight"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")


# (requires_grad of x, edge_weight, norm): every output_mask of window_spmm_backward.
MASKS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True), (True, False, True),
         (False, True, True), (True, True, False)]


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "".join("xws"[i] if m[i] else "-" for i in range(3)))
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
@pytest.mark.parametrize("case", [WINDOW_CASES[6], WINDOW_CASES[8], WINDOW_CASES[-1]], ids=_wid)
def test_window_spmm_every_output_mask(case, mode, mask, dtype):
    lens, M, wp, wf, D = case
    if mode == "relative":
        wp, wf = max(wp, 0), max(wf, 0)
    x, w, g = _window_inputs(lens, M, wp, wf, D, mode)
    s = ops.window_norm(w, lens, M, wp, wf, mode, backend="reference")

    def run(backend, dt):
        leaves = [t.detach().to(dt).clone().requires_grad_(r) for t, r in zip((x, w, s), mask)]
        y = ops.window_spmm(*leaves[:2], leaves[2], lens, M, wp, wf, weight_mode=mode, backend=backend)
        y.backward(g.to(dt))
        return (y.detach(),) + tuple(t.grad for t, r in zip(leaves, mask) if r)

    names = ("y",) + tuple(n for n, r in zip(("grad_x", "grad_edge_weight", "grad_norm"), mask) if r)
    _check_against_reference(names, run, dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
@pytest.mark.parametrize("case", WINDOW_CASES, ids=_wid)
def test_window_norm_and_backward(case, mode, dtype):
    lens, M, wp, wf, D = case
    if mode == "relative":
        wp, wf = max(wp, 0), max(wf, 0)
    _, w, _ = _window_inputs(lens, M, wp, wf, D, mode)
    gs = torch.randn(M * sum(lens), dtype=torch.float64, device=CUDA)

    def run(backend, dt):
        ww = w.detach().to(dt).clone().requires_grad_()
        s = ops.window_norm(ww, lens, M, wp, wf, mode, backend=backend)
        s.backward(gs.to(dt))
        return s.detach(), ww.grad

    _check_against_reference(("norm", "grad_edge_weight"), run, dtype)


@needs_gpu
def test_zero_and_negative_degrees():
    """d == 0 gives s = 0 (no gradient through the degree); d < 0 gives NaN, as the original."""
    lens, M, wp, wf = [3], 2, 0, 0
    E = ops.num_edges(lens, M, wp, wf)
    w = torch.ones(E, dtype=torch.float64, device=CUDA)
    w[1] = 0.0
    w[4] = -1.0
    s = ops.window_norm(w, lens, M, wp, wf, backend="cuda")
    assert s[1] == 0 and torch.isnan(s[4]) and s[0] == 1
    w2 = w.clone()
    w2[4] = 1.0
    x, _, g = _window_inputs(lens, M, wp, wf, 4, "per_edge")
    got = _propagate("cuda", x, w2, g, lens, M, wp, wf, "per_edge")
    want = _propagate("dense", x, w2, g, lens, M, wp, wf, "per_edge")
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@needs_gpu
def test_noncontiguous_inputs_and_side_stream():
    lens, M, wp, wf = [9, 4, 13], 2, 3, 2
    N = sum(lens)
    base = torch.randn(70, M * N, dtype=torch.float32, device=CUDA)
    x = base.t()  # non-contiguous [M*N, 70]
    w_full = torch.rand(2 * (ops.num_edges(lens, M, wp, wf) + 3), dtype=torch.float32, device=CUDA) + 0.5
    w = w_full[::2]
    want = ops.window_propagate(x.double().contiguous(), w.double().contiguous(), lens, M, wp, wf, backend="reference")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = ops.window_propagate(x, w, lens, M, wp, wf, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    _assert_fp32("y", y, want)


@needs_gpu
def test_zero_feature_columns():
    lens, M, wp, wf = [4, 2], 2, 1, 1
    x = torch.zeros(M * 6, 0, device=CUDA, requires_grad=True)
    w = (torch.rand(ops.num_edges(lens, M, wp, wf), device=CUDA) + 0.5).requires_grad_()
    y = ops.window_propagate(x, w, lens, M, wp, wf, backend="cuda")
    assert y.shape == (M * 6, 0)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.all(w.grad == 0)


# --- shift pairs ------------------------------------------------------------------------------

_srng = random.Random(77)
SHIFT_CASES = [([1], -1, 2), ([1], 1, 2), ([5], 1, 2), ([5], 2, 3), ([5], 5, 2), ([5], 9, 2), ([3, 8, 1], -1, 2),
               ([7, 2, 9], 3, 1), ([40, 33, 60], 19, 40), ([60, 2], -1, 33)]
for _ in range(6):
    SHIFT_CASES.append((random_lengths(_srng, 8, 60), _srng.choice([-1, 1, 2, 19, 100]), _srng.choice([1, 2, 3])))


def _sid(c):
    return f"B{len(c[0])}-N{sum(c[0])}-w{c[1]}-C{c[2]}"


def _shift_inputs(N, C, D=6):
    u = torch.randn(N, D, dtype=torch.float64, device=CUDA)
    v = torch.randn(N, D, dtype=torch.float64, device=CUDA)
    W = torch.randn(C, 2 * D, dtype=torch.float64, device=CUDA)
    b = torch.randn(C, dtype=torch.float64, device=CUDA)
    return u, v, W, b


def _shift_run(backend, u, v, W, b, lens, sw, g):
    leaves = [t.detach().clone().requires_grad_() for t in (u, v, W, b)]
    out = ops.shift_pair_logits(leaves[0], leaves[1], lens, sw, leaves[2], leaves[3], backend=backend)
    out.backward(g)
    return (out.detach(),) + tuple(t.grad for t in leaves)


SHIFT_NAMES = ("logits", "grad_u", "grad_v", "grad_weight", "grad_bias")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("case", SHIFT_CASES, ids=_sid)
def test_shift_pair_logits(case, dtype):
    lens, sw, C = case
    u, v, W, b = _shift_inputs(sum(lens), C)
    g = torch.randn(ops.num_shift_pairs(lens, sw), C, dtype=torch.float64, device=CUDA)

    def run(backend, dt):
        return _shift_run(backend, u.to(dt), v.to(dt), W.to(dt), b.to(dt), lens, sw, g.to(dt))

    _check_against_reference(SHIFT_NAMES, run, dtype)


@needs_gpu
@pytest.mark.parametrize("case", SHIFT_CASES[:10], ids=_sid)
def test_shift_pair_logits_match_dense_fp64(case):
    lens, sw, C = case
    u, v, W, b = _shift_inputs(sum(lens), C)
    g = torch.randn(ops.num_shift_pairs(lens, sw), C, dtype=torch.float64, device=CUDA)
    got = _shift_run("cuda", u, v, W, b, lens, sw, g)
    want = _shift_run("dense", u, v, W, b, lens, sw, g)
    for name, a, c in zip(SHIFT_NAMES, got, want):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: DT_IDS[d])
def test_shift_pair_sum_bitwise(dtype):
    """out = a_i + b_j rounded once, exactly as the CPU kernel and plain torch."""
    lens, sw = [7, 30, 2], 4
    N = sum(lens)
    a = torch.randn(N, 3, device=CUDA).to(dtype)
    b = torch.randn(N, 3, device=CUDA).to(dtype)
    L = torch.tensor(lens)
    out = torch.ops.graphsmile.shift_pair_sum(a, b, L, ops.num_shift_pairs(lens, sw), sw)
    idx = ops.shift_pair_index(lens, sw, device=CUDA)
    assert torch.equal(out, a[idx[0]] + b[idx[1]])
    cpu = torch.ops.graphsmile.shift_pair_sum(a.cpu(), b.cpu(), L, ops.num_shift_pairs(lens, sw), sw)
    assert torch.equal(out.cpu(), cpu)


# --- determinism ------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("mode,wp,wf", [("per_edge", 17, 17), ("per_edge", -1, -1), ("relative", 5, 3)])
def test_window_backward_deterministic(mode, wp, wf, dtype):
    lens, M, D = [300, 57, 1, 180], 3, 96
    x, w, g = _window_inputs(lens, M, wp, wf, D, mode)
    x, w, g = x.to(dtype), w.to(dtype), g.to(dtype)
    runs = [_propagate("cuda", x, w, g, lens, M, wp, wf, mode) for _ in range(3)]
    for other in runs[1:]:
        for name, a, b in zip(("y", "grad_x", "grad_edge_weight"), runs[0], other):
            assert torch.equal(a, b), f"{name} differs between runs"


@needs_gpu
def test_shift_backward_deterministic():
    lens, sw, C = [700, 3, 260], -1, 2
    u, v, W, b = _shift_inputs(sum(lens), C)
    u, v, W, b = (t.float() for t in (u, v, W, b))
    g = torch.randn(ops.num_shift_pairs(lens, sw), C, device=CUDA)
    runs = [_shift_run("cuda", u, v, W, b, lens, sw, g) for _ in range(3)]
    for other in runs[1:]:
        for name, a, c in zip(SHIFT_NAMES, runs[0], other):
            assert torch.equal(a, c), f"{name} differs between runs"


# --- long dialogues ---------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
def test_long_dialogue_window_17(mode):
    """One 20,000-utterance dialogue (plus a short one) with the IEMOCAP windows."""
    lens, M, wp, wf, D = [20000, 13], 2, 17, 17, 64
    x, w, g = _window_inputs(lens, M, wp, wf, D, mode)
    x, w, g = x.float(), w.float(), g.float()
    got = _propagate("cuda", x, w, g, lens, M, wp, wf, mode)
    want = _propagate("reference", x.double(), w.double(), g.double(), lens, M, wp, wf, mode)
    for name, a, b in zip(("y", "grad_x", "grad_edge_weight"), got, want):
        _assert_fp32(name, a, b)


@needs_gpu
def test_long_dialogue_unbounded_window():
    """Unbounded windows: the band is the whole dialogue (chunked through shared memory)."""
    lens, M, wp, wf, D = [1000, 7], 2, -1, -1, 24
    x, w, g = _window_inputs(lens, M, wp, wf, D, "per_edge", extra=0)
    x, w, g = x.float(), w.float(), g.float()
    got = _propagate("cuda", x, w, g, lens, M, wp, wf, "per_edge")
    want = _propagate("reference", x.double(), w.double(), g.double(), lens, M, wp, wf, "per_edge")
    for name, a, b in zip(("y", "grad_x", "grad_edge_weight"), got, want):
        _assert_fp32(name, a, b)


@needs_gpu
def test_long_dialogue_shift_whole():
    """shift_win = -1 on a 3,000-utterance dialogue: 9M pairs."""
    lens, sw, C = [3000, 5], -1, 2
    u, v, W, b = _shift_inputs(sum(lens), C, D=16)
    u, v, W, b = (t.float() for t in (u, v, W, b))
    g = torch.randn(ops.num_shift_pairs(lens, sw), C, device=CUDA)
    got = _shift_run("cuda", u, v, W, b, lens, sw, g)
    want = _shift_run("reference", u.double(), v.double(), W.double(), b.double(), lens, sw, g.double())
    for name, a, c in zip(SHIFT_NAMES, got, want):
        _assert_fp32(name, a, c)


# --- argument errors --------------------------------------------------------------------------


def _small_window():
    lens, M, wp, wf = [4, 3], 2, 1, 1
    N = sum(lens)
    x = torch.randn(M * N, 5, device=CUDA)
    w = torch.rand(ops.num_edges(lens, M, wp, wf), device=CUDA) + 0.5
    s = ops.window_norm(w, lens, M, wp, wf, backend="cuda")
    return lens, M, wp, wf, x, w, s


@needs_gpu
def test_cpu_tensor_mixed_with_cuda_names_the_argument():
    lens, M, wp, wf, x, w, s = _small_window()
    L = torch.tensor(lens)
    op = torch.ops.graphsmile
    with pytest.raises((RuntimeError, ValueError), match="edge_weight"):
        op.window_spmm(x, w.cpu(), s, L, M, wp, wf, 0)
    with pytest.raises((RuntimeError, ValueError), match="norm"):
        op.window_spmm(x, w, s.cpu(), L, M, wp, wf, 0)
    with pytest.raises((RuntimeError, ValueError), match="x"):
        op.window_spmm(x.cpu(), w, s, L, M, wp, wf, 0)
    with pytest.raises((RuntimeError, ValueError), match="grad_y"):
        op.window_spmm_backward(x.cpu(), x, w, s, L, M, wp, wf, 0, [True, True, True])
    with pytest.raises((RuntimeError, ValueError), match="grad_norm"):
        op.window_norm_backward(s.cpu(), s, w, L, M, wp, wf, 0)
    a = torch.randn(sum(lens), 2, device=CUDA)
    with pytest.raises((RuntimeError, ValueError), match="b"):
        op.shift_pair_sum(a, a.cpu(), L, ops.num_shift_pairs(lens, 2), 2)
    # the public wrappers say it too
    with pytest.raises(ValueError, match="edge_weight"):
        ops.window_spmm(x, w.cpu(), s, lens, M, wp, wf, backend="cuda")


@needs_gpu
def test_bad_arguments_match_cpu_messages():
    lens, M, wp, wf, x, w, s = _small_window()
    L = torch.tensor(lens)
    op = torch.ops.graphsmile
    with pytest.raises(ValueError, match="win_p must be -1"):
        op.window_spmm(x, w, s, L, M, -2, wf, 0)
    with pytest.raises(ValueError, match="E = "):
        op.window_spmm(x, w[:5], s, L, M, wp, wf, 0)
    with pytest.raises(ValueError, match="rows"):
        op.window_spmm(x[:-1], w, s, L, M, wp, wf, 0)
    with pytest.raises(TypeError, match="dtype"):
        op.window_spmm(x.double(), w, s, L, M, wp, wf, 0)
    with pytest.raises(ValueError, match="num_pairs"):
        op.shift_pair_sum(x[:7], x[:7], L, 3, 2)
    with pytest.raises(ValueError, match="shift_win"):
        op.shift_pair_sum(x[:7], x[:7], L, 3, 0)


@needs_gpu
def test_lengths_on_the_gpu_accepted():
    lens, M, wp, wf, x, w, s = _small_window()
    L = torch.tensor(lens)
    a = torch.ops.graphsmile.window_spmm(x, w, s, L, M, wp, wf, 0)
    b = torch.ops.graphsmile.window_spmm(x, w, s, L.to(CUDA), M, wp, wf, 0)
    assert torch.equal(a, b)


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_different_devices():
    lens, M, wp, wf, x, w, s = _small_window()
    L = torch.tensor(lens)
    with pytest.raises(ValueError, match="edge_weight"):
        torch.ops.graphsmile.window_spmm(x, w.to("cuda:1"), s, L, M, wp, wf, 0)
    # everything on the second device, while the first is current: the device guard
    x1, w1, s1 = x.to("cuda:1"), w.to("cuda:1"), s.to("cuda:1")
    with torch.cuda.device(0):
        y1 = torch.ops.graphsmile.window_spmm(x1, w1, s1, L, M, wp, wf, 0)
    assert y1.device == torch.device("cuda:1")
    torch.testing.assert_close(y1.cpu(), torch.ops.graphsmile.window_spmm(x, w, s, L, M, wp, wf, 0).cpu())


@needs_gpu
def test_opcheck():
    lens, M, wp, wf, x, w, s = _small_window()
    L = torch.tensor(lens)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.graphsmile.window_spmm.default,
                          (x.requires_grad_(), w.requires_grad_(), s, L, M, wp, wf, 0), test_utils=utils)
    torch.library.opcheck(torch.ops.graphsmile.window_norm.default, (w, L, sum(lens), M, wp, wf, 0), test_utils=utils)
    a = torch.randn(sum(lens), 2, device=CUDA, requires_grad=True)
    torch.library.opcheck(torch.ops.graphsmile.shift_pair_sum.default, (a, a.detach().clone(), L, ops.num_shift_pairs(lens, 3), 3),
                          test_utils=utils)


_FFMA_SCRIPT = r"""
import sys, torch
import graphsmile.ops as ops
d = torch.load(sys.argv[1])
xx = d["x"].detach().clone().requires_grad_()
ww = d["w"].detach().clone().requires_grad_()
y = ops.window_propagate(xx, ww, d["lens"], d["M"], d["wp"], d["wf"], weight_mode=d["mode"], backend="cuda")
y.backward(d["g"])
torch.save([y.detach().cpu(), xx.grad.cpu(), ww.grad.cpu()], sys.argv[2])
"""


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=lambda d: DT_IDS[d])
def test_ffma_kernels_with_tensor_cores_off(tmp_path, dtype):
    """fp16/bf16 run on tensor cores by default (sm_80+); GRAPHSMILE_CUDA_TENSOR_CORES=0 (read
    once per process, hence the subprocess) gives the FFMA kernels. Both must meet the same
    low-precision bar against the fp64 reference."""
    import os
    import subprocess
    import sys

    lens, M, wp, wf, D = [37, 1, 18, 5, 70], 3, 17, 17, 70
    x, w, g = _window_inputs(lens, M, wp, wf, D, "per_edge")
    exact = _propagate("reference", x, w, g, lens, M, wp, wf, "per_edge")
    theirs = _propagate("reference", x.to(dtype), w.to(dtype), g.to(dtype), lens, M, wp, wf, "per_edge")
    tc = _propagate("cuda", x.to(dtype), w.to(dtype), g.to(dtype), lens, M, wp, wf, "per_edge")
    inp, outp = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save(dict(x=x.to(dtype), w=w.to(dtype), g=g.to(dtype), lens=lens, M=M, wp=wp, wf=wf, mode="per_edge"), inp)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, GRAPHSMILE_CUDA_TENSOR_CORES="0",
               PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p))
    r = subprocess.run([sys.executable, "-c", _FFMA_SCRIPT, str(inp), str(outp)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ffma = torch.load(outp)
    for name, t, f, th, ex in zip(("y", "grad_x", "grad_w"), tc, ffma, theirs, exact):
        _assert_lowp(f"{name} (tensor cores)", t, th, ex, dtype)
        _assert_lowp(f"{name} (FFMA)", f.to(t.device), th, ex, dtype)
