"""window_propagate / window_norm / window_spmm against the dense original and a plain-loop
implementation, forward and every gradient, on every backend available here."""
import random

import pytest
import torch

import graphsmile.ops as ops
from graphsmile.ops import dense as dense_mod

import loops
from conftest import available_backends, norm_gradient_rounded_once, random_lengths

BACKENDS = available_backends("cpu")

# (lengths, M, win_p, win_f): hand-picked edges of the window logic, then random batches.
CASES = [
    ([1], 2, 0, 0),
    ([1, 1, 1], 3, -1, -1),
    ([5], 2, 0, 0),
    ([5, 3], 2, -1, 0),
    ([5, 3], 2, 0, -1),
    ([4, 7, 2], 2, 10, 10),  # windows longer than the dialogues
    ([6, 1, 9], 3, 2, 1),
    ([12, 3], 3, -1, 2),
]
_rng = random.Random(1234)
for _ in range(10):
    CASES.append((random_lengths(_rng, 8, 60), _rng.choice([2, 3]), _rng.choice([-1, 0, 1, 3, 17, 70]), _rng.choice([-1, 0, 2, 17, 70])))


def _ids(case):
    lens, M, wp, wf = case
    return f"B{len(lens)}-N{sum(lens)}-M{M}-w{wp},{wf}"


def _inputs(lens, M, wp, wf, mode, dtype=torch.float64, D=5, extra=7):
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=dtype)
    if mode == "per_edge":
        w = torch.rand(ops.num_edges(lens, M, wp, wf) + extra, dtype=dtype) + 0.25
    else:
        w = torch.rand(M, M - 1, wp + wf + 1, dtype=dtype) + 0.25
    return x, w


def _run(backend, x, w, lens, M, wp, wf, mode, grad):
    xx = x.clone().requires_grad_()
    ww = w.clone().requires_grad_()
    y = ops.window_propagate(xx, ww, lens, M, wp, wf, weight_mode=mode, backend=backend)
    (y * grad).sum().backward()
    return y.detach(), xx.grad, ww.grad


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_dense(case, backend):
    lens, M, wp, wf = case
    if M * sum(lens) > 900:
        lens = lens[:2]  # keep the O(N^3) dense original affordable
    x, w = _inputs(lens, M, wp, wf, "per_edge")
    g = torch.randn(x.shape, dtype=x.dtype)
    got = _run(backend, x, w, lens, M, wp, wf, "per_edge", g)
    want = _run("dense", x, w, lens, M, wp, wf, "per_edge", g)
    for name, a, b in zip(("y", "grad_x", "grad_edge_weight"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")
    # entries past E are unused: zero gradient
    E = ops.num_edges(lens, M, wp, wf)
    assert torch.all(got[2][E:] == 0)


LOOP_CASES = [([3], 2, 1, 0), ([2, 4], 2, -1, -1), ([3, 1, 2], 3, 0, 1), ([5, 2], 2, 2, -1)]


LOOP_PARAMS = [(c, m) for c in LOOP_CASES for m in ("per_edge", "relative") if m == "per_edge" or min(c[2], c[3]) >= 0]


@pytest.mark.parametrize("case,mode", LOOP_PARAMS, ids=[f"{_ids(c)}-{m}" for c, m in LOOP_PARAMS])
@pytest.mark.parametrize("backend", BACKENDS + ["dense"])
def test_matches_plain_loops(case, mode, backend):
    lens, M, wp, wf = case
    x, w = _inputs(lens, M, wp, wf, mode)
    g = torch.randn(x.shape, dtype=x.dtype)
    got = _run(backend, x, w, lens, M, wp, wf, mode, g)
    xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = loops.propagate(xx, ww, lens, M, wp, wf, mode)
    (y * g).sum().backward()
    for name, a, b in zip(("y", "grad_x", "grad_edge_weight"), got, (y.detach(), xx.grad, ww.grad)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_edge_index_canonical_order():
    rng = random.Random(7)
    for _ in range(6):
        lens = random_lengths(rng, 5, 20)
        M = rng.choice([2, 3])
        wp, wf = rng.choice([-1, 0, 2, 30]), rng.choice([-1, 0, 3, 30])
        ei = ops.window_edge_index(lens, M, wp, wf)
        want = torch.tensor(loops.edges(lens, M, wp, wf), dtype=torch.long).t().reshape(2, -1)
        assert torch.equal(ei, want)
        assert torch.equal(ei, dense_mod.original_edge_index(lens, M, wp, wf))
        assert ei.shape[1] == ops.num_edges(lens, M, wp, wf)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES[:8], ids=_ids)
def test_relative_mode_matches_dense(case, backend):
    lens, M, wp, wf = case
    wp, wf = max(wp, 0), max(wf, 1)
    x, w = _inputs(lens, M, wp, wf, "relative")
    g = torch.randn(x.shape, dtype=x.dtype)
    got = _run(backend, x, w, lens, M, wp, wf, "relative", g)
    want = _run("dense", x, w, lens, M, wp, wf, "relative", g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert got[2].shape == w.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_relative_weights_independent_of_batch_position(backend):
    """Relative weights: a dialogue's output does not depend on what else is in the batch."""
    M, wp, wf = 2, 2, 1
    w = torch.rand(M, M - 1, wp + wf + 1, dtype=torch.float64) + 0.5
    a = torch.randn(M, 6, 4, dtype=torch.float64)
    b = torch.randn(M, 3, 4, dtype=torch.float64)
    alone = ops.window_propagate(a.reshape(-1, 4), w, [6], M, wp, wf, "relative", backend)
    both = ops.window_propagate(torch.cat([b, a], 1).reshape(-1, 4), w, [3, 6], M, wp, wf, "relative", backend)
    torch.testing.assert_close(both.reshape(M, 9, 4)[:, 3:], alone.reshape(M, 6, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_fp64(backend):
    lens, M, wp, wf = [3, 4], 2, 1, 2
    for mode in ("per_edge", "relative"):
        x, w = _inputs(lens, M, wp, wf, mode, D=3, extra=0)
        x.requires_grad_()
        w.requires_grad_()
        assert torch.autograd.gradcheck(
            lambda x, w: ops.window_propagate(x, w, lens, M, wp, wf, weight_mode=mode, backend=backend), (x, w)
        )
        s = ops.window_norm(w, lens, M, wp, wf, mode, backend).detach().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda x, w, s: ops.window_spmm(x, w, s, lens, M, wp, wf, weight_mode=mode, backend=backend), (x, w, s)
        )


# (requires_grad of x, edge_weight, norm): every output_mask of window_spmm_backward. The C++
# kernel runs its two passes per tile for the requested outputs only (grad_norm alone still needs
# both), so each mask is its own code path.
SPMM_MASKS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True),
              (True, False, True), (False, True, True), (True, True, False)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
@pytest.mark.parametrize("mask", SPMM_MASKS, ids=lambda m: "".join("xws"[i] if m[i] else "-" for i in range(3)))
def test_window_spmm_every_output_mask(mask, mode, backend):
    # D = 37: two full 16-lane chunks of the row dot product and a tail
    for lens, M, wp, wf in (CASES[6], CASES[9], ([40, 17, 33], 3, 5, 7)):
        if mode == "relative":
            wp, wf = max(wp, 0), max(wf, 0)
        x, w = _inputs(lens, M, wp, wf, mode, D=37)
        s = ops.window_norm(w, lens, M, wp, wf, mode, backend="reference")
        g = torch.randn(x.shape, dtype=x.dtype)

        def run(be):
            leaves = [t.detach().clone().requires_grad_(r) for t, r in zip((x, w, s), mask)]
            y = ops.window_spmm(*leaves, lens, M, wp, wf, weight_mode=mode, backend=be)
            y.backward(g)
            assert all((t.grad is not None) == r for t, r in zip(leaves, mask))
            return [y.detach()] + [t.grad for t, r in zip(leaves, mask) if r]

        names = ["y"] + [n for n, r in zip(("grad_x", "grad_edge_weight", "grad_norm"), mask) if r]
        for name, a, b in zip(names, run(backend), run("dense")):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{lens} {mode} {name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward(backend):
    """A gradient of a gradient (create_graph=True): plain torch (reference, dense) gives the
    true one; the kernel backends, whose backward autograd cannot see through, raise an error
    naming the op instead of returning zeros. First-order gradients under create_graph=True
    are unchanged."""
    lens, M, wp, wf = [5, 3], 2, 1, 1
    x, w = _inputs(lens, M, wp, wf, "per_edge")
    want = _run("reference", x, w, lens, M, wp, wf, "per_edge", torch.ones(M * sum(lens), 5))
    xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = ops.window_propagate(xx, ww, lens, M, wp, wf, backend=backend)
    gx, gw = torch.autograd.grad(y.pow(2).sum(), (xx, ww), create_graph=True)
    y_ref = ops.window_propagate(x, w, lens, M, wp, wf, backend="reference")
    assert torch.allclose(y, y_ref) and want[0].shape == y.shape
    if backend in ("reference", "dense"):
        hvp = torch.autograd.grad(gx.sum(), ww)[0]
        assert hvp.abs().sum() > 0
        return
    for g, wrt in ((gx, ww), (gw, xx), (gx, xx)):
        with pytest.raises(RuntimeError, match="gradient of window_(spmm|norm) cannot be differentiated again"):
            torch.autograd.grad(g.sum(), wrt)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_degree_rows_and_negative_degrees(backend):
    """d_i == 0 gives s_i = 0 and zero gradient through the degree (the original's masked
    assignment); d_i < 0 gives NaN, as the original."""
    lens, M, wp, wf = [3], 2, 0, 0  # each row has one edge per pair: d_i = a_e
    E = ops.num_edges(lens, M, wp, wf)
    w = torch.ones(E, dtype=torch.float64)
    w[1] = 0.0
    w[4] = -1.0
    s = ops.window_norm(w, lens, M, wp, wf, backend=backend)
    assert s[1] == 0 and torch.isnan(s[4]) and s[0] == 1
    w2 = w.clone()
    w2[4] = 1.0
    w2.requires_grad_()
    x = torch.randn(M * 3, 2, dtype=torch.float64)
    y = ops.window_propagate(x, w2, lens, M, wp, wf, backend=backend)
    y.sum().backward()
    assert torch.isfinite(w2.grad).all()
    want = _run("dense", x, w2.detach(), lens, M, wp, wf, "per_edge", torch.ones_like(x))
    torch.testing.assert_close(w2.grad, want[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_and_noncontiguous(backend):
    lens, M, wp, wf = [9, 4, 13], 2, 3, 2
    N = sum(lens)
    base = torch.randn(8, M * N, dtype=torch.float32)
    x = base.t()  # non-contiguous [M*N, 8]
    assert not x.is_contiguous()
    w_full = torch.rand(2 * (ops.num_edges(lens, M, wp, wf) + 3), dtype=torch.float32) + 0.5
    w = w_full[::2]  # non-contiguous edge weights
    y = ops.window_propagate(x, w, lens, M, wp, wf, backend=backend)
    ref = ops.window_propagate(x.double().contiguous(), w.double().contiguous(), lens, M, wp, wf, backend="dense")
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_within_plain_torch(backend, dtype):
    """Our error vs the fp64 result is at most 2x that of the dense math done by torch in the
    same precision (plus a small floor)."""
    lens, M, wp, wf = [20, 7], 2, 4, 4
    x, w = _inputs(lens, M, wp, wf, "per_edge", D=16)
    ref = ops.window_propagate(x, w, lens, M, wp, wf, backend="dense")
    ours = ops.window_propagate(x.to(dtype), w.to(dtype), lens, M, wp, wf, backend=backend).double()
    # plain torch in `dtype`: the original's dense math run by torch in that precision
    theirs = ops.window_propagate(x.to(dtype), w.to(dtype), lens, M, wp, wf, backend="dense").double()
    err_ours = (ours - ref).abs().max().item()
    err_theirs = (theirs - ref).abs().max().item()
    assert err_ours <= 2 * err_theirs + 1e-3, (err_ours, err_theirs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_degrees_beyond_fp16_range(backend):
    """Degrees are summed in fp32 on every backend: an fp16 sum overflows above 65504, and
    inf^(-1/2) = 0 would silently zero those rows (the reference backend did)."""
    lens, M, wp, wf = [40], 2, 17, 17
    E = ops.num_edges(lens, M, wp, wf)
    w = torch.full((E,), 3000.0, dtype=torch.float16)              # degree up to 35 * 3000
    s = ops.window_norm(w, lens, M, wp, wf, backend=backend)
    s32 = ops.window_norm(w.float(), lens, M, wp, wf, backend=backend)
    assert s.dtype == torch.float16 and (s > 0).all()
    torch.testing.assert_close(s.float(), s32, rtol=1e-3, atol=0)


def test_edge_count_cache_is_exact_and_bounded(monkeypatch):
    """The memoised edge count equals the edges the loops enumerate, for every key, also after
    the bounded cache was cleared; a changed lengths list is a new key."""
    from graphsmile.ops import index

    monkeypatch.setattr(index, "_EDGE_COUNTS_MAX", 3)
    index._EDGE_COUNTS.clear()
    rng = random.Random(77)
    cases = [(random_lengths(rng, 4, 12), rng.choice([2, 3]), rng.choice([-1, 0, 2]), rng.choice([-1, 1, 5]))
             for _ in range(6)]
    for _ in range(2):  # the second round hits the cache (or recomputes after a clear)
        for lens, M, wp, wf in cases:
            want = len(loops.edges(lens, M, wp, wf))
            assert index.edge_count(lens, M, wp, wf) == want == ops.num_edges(lens, M, wp, wf)
            assert len(index._EDGE_COUNTS) <= 3
    lens = [4, 5]
    e1 = index.edge_count(lens, 2, 1, 1)
    lens.append(6)  # the key is a snapshot of the list, not the list
    assert index.edge_count(lens, 2, 1, 1) == len(loops.edges(lens, 2, 1, 1)) > e1


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["per_edge", "relative"])
def test_low_precision_norm_gradient_rounded_once(backend, dtype, mode):
    """The kernels' fp16/bf16 window_norm gradient is rounded once (plain torch's is not: the
    reference backend is left out)."""
    norm_gradient_rounded_once(backend, dtype, mode)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    lens, M, wp, wf = [40, 17, 33], 3, 5, 7
    x, w = _inputs(lens, M, wp, wf, "per_edge", dtype=torch.float32, D=33)
    g = torch.randn(x.shape)
    r1 = _run(backend, x, w, lens, M, wp, wf, "per_edge", g)
    r2 = _run(backend, x, w, lens, M, wp, wf, "per_edge", g)
    for a, b in zip(r1, r2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_as_tensor_and_list_agree(backend):
    lens = [5, 2, 8]
    x, w = _inputs(lens, 2, 1, 1, "per_edge")
    a = ops.window_propagate(x, w, lens, 2, 1, 1, backend=backend)
    b = ops.window_propagate(x, w, torch.tensor(lens, dtype=torch.int32), 2, 1, 1, backend=backend)
    assert torch.equal(a, b)


def test_lengths_iterator_read_once():
    """An iterator of lengths is read once, although window_propagate runs two steps."""
    lens, M = [3, 4], 2
    x, w = _inputs(lens, M, 1, 1, "per_edge")
    want = ops.window_propagate(x, w, lens, M, 1, 1)
    torch.testing.assert_close(ops.window_propagate(x, w, iter(lens), M, 1, 1), want)


def test_norm_computed_once_matches_propagate():
    lens, M, wp, wf = [6, 9], 2, 2, 2
    x, w = _inputs(lens, M, wp, wf, "per_edge")
    s = ops.window_norm(w, lens, M, wp, wf)
    torch.testing.assert_close(ops.window_spmm(x, w, s, lens, M, wp, wf), ops.window_propagate(x, w, lens, M, wp, wf))


# ---- bad input ------------------------------------------------------------------------------

BAD = [
    (dict(lengths=[]), ValueError, "lengths is empty"),
    (dict(lengths=[3, 0]), ValueError, r"lengths\[1\] = 0"),
    (dict(lengths=[3, -2]), ValueError, r"lengths\[1\] = -2"),
    (dict(lengths=torch.tensor([2.0, 3.0])), TypeError, "integers"),
    (dict(lengths=[3, 2, 1]), ValueError, "num_modal \\* sum\\(lengths\\)"),
    (dict(win_p=-2), ValueError, "win_p must be -1"),
    (dict(win_f=-5), ValueError, "win_f must be -1"),
    (dict(weight_mode="relative", win_p=-1), ValueError, "relative.*finite windows"),
    (dict(weight_mode="relative", win_p=-2), ValueError, "win_p must be -1"),
    (dict(x=None), TypeError, "x must be a floating-point tensor"),
    (dict(weight_mode="bogus"), ValueError, "weight_mode"),
    (dict(edge_weight=torch.ones(10, dtype=torch.float64)), ValueError, r"edge_weight has 10 entries but this batch has E = \d+"),
    (dict(edge_weight=torch.ones(500, dtype=torch.int64)), TypeError, "edge_weight must be a floating-point"),
    (dict(edge_weight=torch.ones(500, dtype=torch.float32)), TypeError, "dtype"),
    (dict(x=torch.ones(10, 3, dtype=torch.int32)), TypeError, "x must be a floating-point"),
    (dict(x=torch.ones(10, dtype=torch.float64)), ValueError, "x must be 2-D"),
    (dict(backend="nope"), ValueError, "backend must be one of"),
    (dict(backend="cuda"), (RuntimeError, ValueError), "cuda"),
    (dict(num_modal=1), ValueError, "num_modal"),
    (dict(num_modal=2000), ValueError, "num_modal must be an int from 2 to 1024"),
    (dict(win_p=2**31), ValueError, "win_p must be -1 \\(unbounded\\) or from 0 to 2147483647"),
    (dict(win_f=2**63 - 1), ValueError, "win_f must be -1 \\(unbounded\\) or from 0 to 2147483647"),
    (dict(lengths=[3, 2**31]), ValueError, r"lengths\[1\] = 2147483648: a dialogue may have at most"),
    (dict(lengths=[3, torch.tensor(True)]), TypeError, r"lengths\[1\] = tensor\(True\) is not an integer"),
    (dict(lengths=torch.tensor([3, 2], device="meta")), ValueError, "lengths is a meta tensor"),
]


@pytest.mark.parametrize("override,exc,pattern", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_inputs(override, exc, pattern):
    args = dict(x=torch.randn(10, 3, dtype=torch.float64), edge_weight=torch.ones(500, dtype=torch.float64), lengths=[3, 2], num_modal=2, win_p=1, win_f=1, weight_mode="per_edge", backend="auto")
    args.update(override)
    with pytest.raises(exc, match=pattern):
        ops.window_propagate(**args)


def test_bad_inputs_reach_cpp_kernels_with_clear_errors():
    """Direct calls of torch.ops.graphsmile.* are checked in C++ as well (no crash)."""
    if not ops._ext.has_kernel("CPU"):
        pytest.skip("extension not built")
    x = torch.randn(10, 3)
    w = torch.ones(5)
    s = torch.ones(10)
    L = torch.tensor([3, 2])
    with pytest.raises(ValueError, match="edge_weight has 5 entries but this batch has E = "):
        torch.ops.graphsmile.window_spmm(x, w, s, L, 2, 1, 1, 0)
    with pytest.raises(ValueError, match="lengths\\[1\\] = 0"):
        torch.ops.graphsmile.window_spmm(x, torch.ones(100), s, torch.tensor([3, 0]), 2, 1, 1, 0)
    with pytest.raises(ValueError, match="x has 9 rows"):
        torch.ops.graphsmile.window_spmm(torch.randn(9, 3), torch.ones(100), s, L, 2, 1, 1, 0)
    with pytest.raises(ValueError, match="win_p must be -1"):
        torch.ops.graphsmile.window_norm(torch.ones(100), L, 5, 2, -3, 1, 0)
    with pytest.raises(ValueError, match="num_nodes = 6 but sum"):
        torch.ops.graphsmile.window_norm(torch.ones(100), L, 6, 2, 1, 1, 0)
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.graphsmile.window_spmm(x.double(), torch.ones(100), s, L, 2, 1, 1, 0)
    # sizes whose index products would wrap around int64: refused, not garbage
    with pytest.raises(ValueError, match="win_p must be -1 \\(unbounded\\) or from 0 to"):
        torch.ops.graphsmile.window_norm(torch.ones(2), L, 5, 2, 2**62, 2**62, 1)
    with pytest.raises(ValueError, match="every dialogue needs from 1 to 2147483647 utterances"):
        torch.ops.graphsmile.window_norm(torch.ones(100), torch.tensor([2**62] * 4), 2**64 // 4 - 1, 2, 1, 1, 0)
    with pytest.raises(ValueError, match="the edge count does not fit in int64"):
        torch.ops.graphsmile.window_norm(torch.ones(100), torch.tensor([2**31 - 1] * 3), 3 * (2**31 - 1), 1024, -1, -1, 0)
    with pytest.raises(ValueError, match="num_modal must be from 2 to 1024"):
        torch.ops.graphsmile.window_norm(torch.ones(100), L, 5, 5000, 1, 1, 0)
    with pytest.raises(ValueError, match="relative"):
        torch.ops.graphsmile.window_spmm(x, torch.ones(100), s, L, 2, -1, 1, 1)


def test_edge_capacity_error_names_everything():
    lens = [100] * 4
    with pytest.raises(ValueError) as info:
        ops.window_propagate(torch.randn(800, 2), torch.ones(1000), lens, 2, 17, 17)
    msg = str(info.value)
    E = ops.num_edges(lens, 2, 17, 17)
    assert f"E = {E}" in msg and "1000 entries" in msg and "win_p=17" in msg and "edge_capacity" in msg


# ---- torch.library integration ---------------------------------------------------------------

needs_ext = pytest.mark.skipif(not ops._ext.has_kernel("CPU"), reason="graphsmile._C not built")


@needs_ext
def test_opcheck():
    lens = torch.tensor([4, 3])
    M, wp, wf = 2, 1, 2
    E = ops.num_edges([4, 3], M, wp, wf)
    x = torch.randn(M * 7, 5, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(E + 2, dtype=torch.float64) + 0.5).requires_grad_()
    s = ops.window_norm(w, [4, 3], M, wp, wf).detach().requires_grad_()
    torch.library.opcheck(torch.ops.graphsmile.window_norm.default, (w, lens, 7, M, wp, wf, 0))
    torch.library.opcheck(torch.ops.graphsmile.window_spmm.default, (x, w, s, lens, M, wp, wf, 0))
    wr = (torch.rand(M, M - 1, wp + wf + 1, dtype=torch.float64) + 0.5).requires_grad_()
    torch.library.opcheck(torch.ops.graphsmile.window_spmm.default, (x, wr, s, lens, M, wp, wf, 1))
    g = torch.randn(M * 7, 5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.graphsmile.window_spmm_backward.default, (g, x.detach(), w.detach(), s.detach(), lens, M, wp, wf, 0, [True, True, True]))
    torch.library.opcheck(torch.ops.graphsmile.window_norm_backward.default, (torch.randn(14, dtype=torch.float64), s.detach(), w.detach(), lens, M, wp, wf, 0))


@needs_ext
def test_torch_compile_fullgraph():
    lens = [5, 3, 8]
    M, wp, wf = 2, 2, 1
    x = torch.randn(M * 16, 6, requires_grad=True)
    w = (torch.rand(ops.num_edges(lens, M, wp, wf) + 4) + 0.5).requires_grad_()

    def f(x, w):
        s = ops.window_norm(w, lens, M, wp, wf)
        h = ops.window_spmm(x, w, s, lens, M, wp, wf)
        return ops.window_spmm(torch.relu(h), w, s, lens, M, wp, wf).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x, w)
    gx, gw = torch.autograd.grad(out, (x, w))
    ref = f(x, w)
    rgx, rgw = torch.autograd.grad(ref, (x, w))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rgx)
    torch.testing.assert_close(gw, rgw)


# --- WindowGraph (the graph's arguments checked once) and the C++ autograd kernels ----------


@pytest.mark.parametrize("mode", ["per_edge", "relative"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_window_graph_equals_free_functions(backend, mode):
    """WindowGraph.norm / .spmm give the free functions' values and gradients bit for bit; its
    attributes are the graph's N and E."""
    lens, M, wp, wf = [5, 1, 7], 3, 2, 1
    x, w = _inputs(lens, M, wp, wf, mode)
    graph = ops.WindowGraph(torch.tensor(lens), M, wp, wf, mode, backend)
    assert graph.lengths == lens and graph.num_nodes == 13 and graph.num_edges == ops.num_edges(lens, M, wp, wf)
    assert "N=13" in repr(graph) and f"backend={backend!r}" in repr(graph)
    g = torch.randn(x.shape, dtype=x.dtype)
    outs = []
    for use_graph in (True, False):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        if use_graph:
            s = graph.norm(ww)
            y = graph.spmm(xx, ww, s)
        else:
            s = ops.window_norm(ww, lens, M, wp, wf, mode, backend)
            y = ops.window_spmm(xx, ww, s, lens, M, wp, wf, mode, backend)
        (y * g).sum().backward()
        outs.append((s.detach(), y.detach(), xx.grad, ww.grad))
    for name, a, b in zip(("norm", "y", "grad_x", "grad_w"), *outs):
        assert torch.equal(a, b), name


def test_window_graph_errors_name_the_argument():
    lens, M, wp, wf = [4, 2], 2, 1, 1
    x, w = _inputs(lens, M, wp, wf, "per_edge")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.WindowGraph(lens, M, wp, wf, backend="gpu")
    with pytest.raises(ValueError, match="relative.*finite windows"):
        ops.WindowGraph(lens, M, -1, 1, weight_mode="relative")
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        ops.WindowGraph([4, 0], M, wp, wf)
    graph = ops.WindowGraph(lens, M, wp, wf)
    s = graph.norm(w)
    with pytest.raises(ValueError, match="x has 10 rows but num_modal \\* sum\\(lengths\\) = 2 \\* 6 = 12"):
        graph.spmm(x[:10], w, s)
    with pytest.raises(ValueError, match="edge_weight has 3 entries but this batch has E = "):
        graph.spmm(x, w[:3], s)
    with pytest.raises(ValueError, match="norm must be a 1-D tensor with 12 entries"):
        graph.spmm(x, w, s[:5])
    with pytest.raises(TypeError, match="x has dtype torch.float64 but edge_weight has dtype torch.float32"):
        graph.spmm(x, w.float(), s)


@pytest.mark.skipif(not ops.HAS_EXTENSION, reason="needs the compiled extension")
@pytest.mark.parametrize("needs", ["x", "w", "s", "xw", "xws"])
def test_cpp_autograd_partial_inputs_and_create_graph(needs):
    """The window ops' autograd is registered in C++ (csrc/autograd.cpp) for every device. With
    only some inputs requiring grad, the others get none and the ones asked for equal the
    reference's; under create_graph=True they are the same, and differentiating them again
    raises the op's error."""
    for op in ("window_norm", "window_norm_backward", "window_spmm", "window_spmm_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{op}", "Autograd"), op
    lens, M, wp, wf = [6, 3], 2, 2, 0
    x, w = _inputs(lens, M, wp, wf, "per_edge")
    s = ops.window_norm(w, lens, M, wp, wf, backend="reference")
    g = torch.randn(x.shape, dtype=x.dtype)

    def grads(backend, create_graph):
        ins = {"x": x.clone(), "w": w.clone(), "s": s.clone()}
        for k in needs:
            ins[k].requires_grad_()
        y = ops.window_spmm(ins["x"], ins["w"], ins["s"], lens, M, wp, wf, backend=backend)
        return torch.autograd.grad((y * g).sum(), [ins[k] for k in needs], create_graph=create_graph), ins

    want, _ = grads("reference", False)
    for create_graph in (False, True):
        got, ins = grads("cpu", create_graph)
        for k, a, b in zip(needs, got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"grad_{k}: {m}")
            assert a.shape == ins[k].shape
        if create_graph:
            with pytest.raises(RuntimeError, match="gradient of window_spmm cannot be differentiated again"):
                torch.autograd.grad(sum(t.sum() for t in got), [ins[k] for k in needs], allow_unused=True)
        else:
            assert all(t.grad_fn is None for t in got)
    # window_norm: its gradient through the C++ kernel, and its refusal
    ww = w.clone().requires_grad_()
    (gw,) = torch.autograd.grad(ops.window_norm(ww, lens, M, wp, wf, backend="cpu").pow(2).sum(), ww, create_graph=True)
    wr = w.clone().requires_grad_()
    (gw_ref,) = torch.autograd.grad(ops.window_norm(wr, lens, M, wp, wf, backend="reference").pow(2).sum(), wr)
    torch.testing.assert_close(gw.detach(), gw_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="gradient of window_norm cannot be differentiated again"):
        torch.autograd.grad(gw.sum(), ww)


@pytest.mark.skipif(not ops.HAS_EXTENSION, reason="needs the compiled extension")
def test_extension_without_autograd_kernels_is_refused():
    """An extension built from sources older than csrc/autograd.cpp would leave the window ops
    without gradients: graphsmile refuses it as it does one that does not load (reference
    backend, one warning saying why)."""
    import subprocess
    import sys

    code = (
        "import warnings, torch\n"
        "real = torch._C._dispatch_has_kernel_for_dispatch_key\n"
        "torch._C._dispatch_has_kernel_for_dispatch_key = lambda op, key: key != 'Autograd' and real(op, key)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import graphsmile.ops as ops\n"
        "assert not ops.HAS_EXTENSION\n"
        "assert any('older sources' in str(w.message) for w in caught), [str(w.message) for w in caught]\n"
        "x = torch.randn(4, 3, requires_grad=True)\n"
        "w = torch.ones(ops.num_edges([2], 2, 1, 1), requires_grad=True)\n"
        "ops.window_propagate(x, w, [2], 2, 1, 1).sum().backward()\n"
        "assert x.grad is not None and w.grad is not None\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
