"""shift_pair_nll (the shift head and its loss fused, O(N) memory) against the unfused
composition F.nll_loss(log_softmax(shift_pair_logits)) on the dense backend, and against the
reference backend: loss, confusion counts and every gradient."""
import random

import pytest
import torch
import torch.nn.functional as F

import graphsmile.ops as ops

from conftest import available_backends, random_lengths

BACKENDS = available_backends("cpu")
needs_ext = pytest.mark.skipif(not ops._ext.has_kernel("CPU"), reason="graphsmile._C not built")

_rng = random.Random(7)
CASES = [([1], -1), ([1], 1), ([5], 2), ([5], 9), ([3, 8, 1], -1), ([7, 2, 9], 3), ([70], -1), ([40, 33], 19)]
for _ in range(4):
    CASES.append((random_lengths(_rng, 6, 50), _rng.choice([-1, 1, 2, 19])))


def _ids(c):
    return f"B{len(c[0])}-N{sum(c[0])}-w{c[1]}"


def _params(N, D=6, dtype=torch.float64, scale=1.0, classes=3):
    u = torch.randn(N, D, dtype=dtype) * scale
    v = torch.randn(N, D, dtype=dtype) * scale
    W = torch.randn(2, 2 * D, dtype=dtype)
    b = torch.randn(2, dtype=dtype)
    sent = torch.randint(0, classes, (N,))
    return u, v, W, b, sent


def _fused(backend, u, v, W, b, sent, lens, sw, reduction="mean", scale=1.0):
    leaves = [t.clone().requires_grad_() for t in (u, v, W, b)]
    loss, conf = ops.shift_pair_nll(*leaves[:2], lens, sw, leaves[2], leaves[3], sent, reduction=reduction, backend=backend)
    (loss * scale).backward()
    return [loss.detach(), conf] + [t.grad for t in leaves]


def _unfused(u, v, W, b, sent, lens, sw, reduction="mean", scale=1.0):
    """The original's way: [P, 2] logits, log_softmax, NLL; argmax for the predictions."""
    leaves = [t.clone().requires_grad_() for t in (u, v, W, b)]
    z = ops.shift_pair_logits(*leaves[:2], lens, sw, leaves[2], leaves[3], backend="dense")
    y = ops.shift_pair_labels(sent, lens, sw)
    loss = F.nll_loss(F.log_softmax(z.float() if z.dtype != torch.float64 else z, -1), y, reduction=reduction)
    (loss * scale).backward()
    pred = z.detach().argmax(-1)
    conf = torch.zeros(2, 2, dtype=torch.long)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    return [loss.detach(), conf] + [t.grad for t in leaves]


NAMES = ("loss", "confusion", "u", "v", "weight", "bias")


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS + ["dense"])
def test_matches_unfused_loss(case, backend):
    lens, sw = case
    u, v, W, b, sent = _params(sum(lens))
    for reduction in ("mean", "sum"):
        got = _fused(backend, u, v, W, b, sent, lens, sw, reduction, scale=0.7)
        want = _unfused(u, v, W, b, sent, lens, sw, reduction, scale=0.7)
        assert got[0].dtype == torch.float64 and got[0].dim() == 0
        assert got[1].dtype == torch.long and got[1].shape == (2, 2)
        assert int(got[1].sum()) == ops.num_shift_pairs(lens, sw)
        assert torch.equal(got[1], want[1]), "confusion counts"
        for name, a, c in zip(NAMES, got, want):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name} ({reduction}): {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_low_precision_against_fp64(dtype, backend):
    """fp32 / bf16 / fp16 judged against the fp64 result, with the error of the unfused
    composition in that precision as the yardstick (the fused op rounds the logits to the
    input dtype as shift_pair_logits does, and accumulates in fp32 or better)."""
    lens, sw = [37, 5, 60], -1
    u, v, W, b, sent = _params(sum(lens))
    exact = _unfused(u, v, W, b, sent, lens, sw, "sum")
    low = [t.to(dtype) for t in (u, v, W, b)]
    got = _fused(backend, *low, sent, lens, sw, "sum")
    base = _unfused(*low, sent, lens, sw, "sum")
    assert got[0].dtype == torch.float32
    for name, g, e, bl in zip(NAMES, got, exact, base):
        if name == "confusion":
            # a pair whose logits tie or flip under rounding may move; the counts still add up
            assert int(g.sum()) == int(e.sum())
            assert (g - base[1]).abs().sum() <= 2 * max(1, int((bl - e).abs().sum()))
            continue
        err = (g.double() - e).abs().max().item()
        err_base = (bl.double() - e).abs().max().item()
        assert err <= 2 * err_base + 1e-6 * e.abs().max().item(), f"{name}: error {err:.3g} vs unfused {err_base:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    lens, sw = [4, 3], 3
    u, v, W, b, sent = _params(7, D=3)
    leaves = [t.requires_grad_() for t in (u, v, W, b)]
    assert torch.autograd.gradcheck(
        lambda u, v, W, b: ops.shift_pair_nll(u, v, lens, sw, W, b, sent, backend=backend)[0], leaves)


@pytest.mark.parametrize("backend", BACKENDS + ["shift_pair_logits"])
def test_double_backward(backend):
    """A gradient of a gradient: the kernel backends (the fused loss, and shift_pair_logits'
    pair-sum op) raise an error naming the op instead of a silently wrong (constant-residual)
    result; reference and dense are plain torch and give the true one."""
    lens, sw = [4, 3], 3
    u, v, W, b, sent = _params(7, D=3)
    u.requires_grad_()
    if backend == "shift_pair_logits":   # the [P, 2] path on the kernel backend, then the loss
        be = "cpu" if "cpu" in BACKENDS else "reference"
        logits = ops.shift_pair_logits(u, u, lens, sw, W, b, backend=be)
        labels = ops.shift_pair_labels(sent, lens, sw)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        op = "shift_pair_sum"
    else:
        be = backend
        loss = ops.shift_pair_nll(u, u, lens, sw, W, b, sent, backend=be)[0]
        op = "shift_pair_nll"
    (gu,) = torch.autograd.grad(loss, u, create_graph=True)
    if be in ("reference", "dense"):
        assert torch.autograd.grad(gu.pow(2).sum(), u)[0].abs().sum() > 0
        return
    with pytest.raises(RuntimeError, match=f"gradient of {op} cannot be differentiated again"):
        torch.autograd.grad(gu.pow(2).sum(), u)


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_logits_stay_finite(backend):
    """|z_1 - z_0| in the hundreds: softplus and sigmoid must not overflow (a naive
    log(1 + exp(x)) gives inf in fp32)."""
    lens, sw = [20, 9], -1
    u, v, W, b, sent = _params(29, dtype=torch.float32, scale=60.0)
    got = _fused(backend, u, v, W, b, sent, lens, sw, "sum")
    want = _fused("reference", u.double(), v.double(), W.double(), b.double(), sent, lens, sw, "sum")
    for name, g, e in zip(NAMES, got, want):
        assert torch.isfinite(g.double()).all(), name
        if name != "confusion":
            torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-3 * e.abs().max().item(), msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_dialogue_whole_window(backend):
    """One 600-utterance dialogue, shift_win=-1: 360,000 pairs, never stored."""
    lens, sw = [600], -1
    u, v, W, b, sent = _params(600, D=8, dtype=torch.float32)
    got = _fused(backend, u, v, W, b, sent, lens, sw)
    want = _fused("reference", u.double(), v.double(), W.double(), b.double(), sent, lens, sw)
    assert torch.equal(got[1], want[1])
    for name, g, e in zip(NAMES, got, want):
        if name != "confusion":
            torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-5, msg=name)


@needs_ext
def test_deterministic_across_runs_and_thread_counts():
    lens, sw = [300, 41, 77], -1
    u, v, W, b, sent = _params(sum(lens), dtype=torch.float32)
    n = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 2, 3):
            torch.set_num_threads(threads)
            runs.append(_fused("cpu", u, v, W, b, sent, lens, sw))
    finally:
        torch.set_num_threads(n)
    for r in runs[1:]:
        for name, a, c in zip(NAMES, runs[0], r):
            assert torch.equal(a, c), name


@needs_ext
def test_op_outputs_and_no_grad_path():
    """The raw op: residual sums are the gradient of the summed loss; without with_grad they
    are empty, and a backward through such a call says why it cannot."""
    lens, sw = [6, 9], 4
    a = torch.randn(15, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(15, 2, dtype=torch.float64, requires_grad=True)
    sent = torch.randint(0, 3, (15,))
    L = torch.tensor(lens)
    loss, conf, row_r, col_r = torch.ops.graphsmile.shift_pair_nll(a, b, sent, L, sw, True)
    ref_loss, ref_conf = ops.reference.shift_pair_nll(a, b, sent, lens, sw)
    ga, gb = torch.autograd.grad(ref_loss, (a, b))
    torch.testing.assert_close(loss, ref_loss)
    assert torch.equal(conf, ref_conf)
    torch.testing.assert_close(row_r, ga[:, 1])
    torch.testing.assert_close(-row_r, ga[:, 0])
    torch.testing.assert_close(col_r, gb[:, 1])
    loss2, conf2, r2, c2 = torch.ops.graphsmile.shift_pair_nll(a, b, sent, L, sw, False)
    assert r2.shape == (0,) and c2.shape == (0,)
    assert torch.equal(loss2, loss) and torch.equal(conf2, conf)
    with pytest.raises(RuntimeError, match="with_grad=False"):
        loss2.backward()
    with torch.no_grad():
        l3, c3 = ops.shift_pair_nll(torch.randn(15, 4), torch.randn(15, 4), lens, sw, torch.randn(2, 8), None, sent)
    assert l3.dim() == 0 and c3.sum() == ops.num_shift_pairs(lens, sw)


BAD = [
    (dict(weight=torch.randn(3, 8, dtype=torch.float64)), ValueError, r"weight must be \[2, 2D\]"),
    (dict(bias=torch.randn(3, dtype=torch.float64)), ValueError, "bias must be"),
    (dict(sentiment=torch.zeros(5)), ValueError, "sentiment must be a 1-D integer tensor"),
    (dict(sentiment=torch.zeros(4, dtype=torch.long)), ValueError, r"sentiment must be \[sum\(lengths\)\] = \[5\]"),
    (dict(sentiment=torch.zeros(5, 1, dtype=torch.long)), ValueError, "sentiment must be a 1-D"),
    (dict(reduction="none"), ValueError, "reduction must be one of"),
    (dict(shift_win=0), ValueError, "shift_win must be -1"),
    (dict(lengths=[2, 2]), ValueError, r"u must be \[sum\(lengths\), D\]"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("override,exc,pattern", BAD, ids=[b[2][:25] for b in BAD])
def test_bad_inputs(override, exc, pattern):
    args = dict(u=torch.randn(5, 4, dtype=torch.float64), v=torch.randn(5, 4, dtype=torch.float64), lengths=[2, 3],
                shift_win=2, weight=torch.randn(2, 8, dtype=torch.float64), bias=torch.randn(2, dtype=torch.float64),
                sentiment=torch.zeros(5, dtype=torch.long), backend="auto")
    args.update(override)
    with pytest.raises(exc, match=pattern):
        ops.shift_pair_nll(**args)


@needs_ext
@pytest.mark.parametrize("bad,pattern", [
    (dict(a=torch.randn(5, 3)), r"a must be \[sum\(lengths\), 2\] = \[5, 2\]"),
    (dict(b=torch.randn(4, 2)), r"b must be \[sum\(lengths\), 2\]"),
    (dict(b=torch.randn(5, 2, dtype=torch.float64)), "a has dtype Float but b has dtype Double"),
    (dict(sentiment=torch.zeros(5, dtype=torch.int32)), "sentiment must be an int64 tensor"),
    (dict(sentiment=torch.zeros(6, dtype=torch.long)), r"sentiment must be \[sum\(lengths\)\] = \[5\]"),
    (dict(a=torch.zeros(5, 2, dtype=torch.long)), "a must be a floating-point tensor"),
    (dict(shift_win=-3), "shift_win must be -1"),
])
def test_op_bad_inputs(bad, pattern):
    args = dict(a=torch.randn(5, 2), b=torch.randn(5, 2), sentiment=torch.zeros(5, dtype=torch.long),
                lengths=torch.tensor([2, 3]), shift_win=2, with_grad=True)
    args.update(bad)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=pattern):
        torch.ops.graphsmile.shift_pair_nll(args["a"], args["b"], args["sentiment"], args["lengths"],
                                            args["shift_win"], args["with_grad"])


@needs_ext
def test_opcheck_and_compile():
    lens = torch.tensor([4, 3])
    a = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    sent = torch.randint(0, 3, (7,))
    for with_grad in (True, False):
        # the loss's gradient is checked by test_gradcheck; opcheck checks schema, fake and autograd registration
        torch.library.opcheck(torch.ops.graphsmile.shift_pair_nll.default, (a, b, sent, lens, 3, with_grad),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))

    W = torch.randn(2, 12, requires_grad=True)
    bias = torch.randn(2, requires_grad=True)
    f = torch.randn(7, 6, requires_grad=True)

    def fn(f, W, bias):
        loss, conf = ops.shift_pair_nll(f, f, [4, 3], 3, W, bias, sent)
        return loss * 2 + conf.sum()

    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(f, W, bias)
    torch.testing.assert_close(out, fn(f, W, bias))
    g1 = torch.autograd.grad(out, (f, W, bias))
    g2 = torch.autograd.grad(fn(f, W, bias), (f, W, bias))
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y)


# --- the CPU kernel's vectorised float32 rows (chunks of >= 64 columns) ---------------------


@needs_ext
@pytest.mark.parametrize("lens,sw", [([64], -1), ([65, 127], -1), ([130, 7, 200], -1), ([300], 150), ([90, 64], 70)])
def test_cpu_float32_vector_rows_against_fp64(lens, sw):
    """Chunks with 64-column vector steps and scalar tails: the polynomial exp/log1p of the
    float32 rows must stay within float rounding of the fp64 result."""
    u, v, W, b, sent = _params(sum(lens), D=8, scale=2.0)
    exact = _fused("cpu", u, v, W, b, sent, lens, sw, "sum")
    got = _fused("cpu", *(t.float() for t in (u, v, W, b)), sent, lens, sw, "sum")
    base = _unfused(*(t.float() for t in (u, v, W, b)), sent, lens, sw, "sum")
    for name, g, e, bl in zip(NAMES, got, exact, base):
        if name == "confusion":
            assert (g - e).abs().sum() <= 2 * max(1, int((bl - e).abs().sum()))
            continue
        err = (g.double() - e).abs().max().item()
        err_base = (bl.double() - e).abs().max().item()
        assert err <= 2 * err_base + 1e-6 * e.abs().max().item(), f"{name}: error {err:.3g} vs unfused {err_base:.3g}"


@needs_ext
def test_cpu_float32_vector_rows_nan_inf_and_extremes():
    L = 150  # two vector steps and a tail
    a = torch.randn(L, 2) * 40
    b = torch.randn(L, 2) * 40
    sent = torch.randint(0, 3, (L,))
    lens = torch.tensor([L])
    loss, conf, row_r, col_r = torch.ops.graphsmile.shift_pair_nll(a, b, sent, lens, -1, True)
    ref_loss, ref_conf, ref_row, ref_col = torch.ops.graphsmile.shift_pair_nll(a.double(), b.double(), sent, lens, -1, True)
    assert torch.equal(conf, ref_conf)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(row_r.double(), ref_row, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(col_r.double(), ref_col, rtol=1e-5, atol=1e-4)
    # a NaN logit makes the loss and the residuals it touches NaN (never silently finite)
    a_nan = a.clone()
    a_nan[3, 1] = float("nan")
    loss, _, row_r, col_r = torch.ops.graphsmile.shift_pair_nll(a_nan, b, sent, lens, -1, True)
    assert torch.isnan(loss) and torch.isnan(row_r[3]) and torch.isnan(col_r).all()
    assert torch.isfinite(row_r[torch.arange(L) != 3]).all()
    # an infinite margin: loss inf (wrong class) or exactly 0 (right class), residual +-1 or 0
    a_inf = torch.zeros(L, 2)
    b_inf = torch.zeros(L, 2)
    a_inf[:, 1] = float("inf")   # every pair predicts 1 with infinite confidence
    same = torch.zeros(L, dtype=torch.long)  # y = 0 everywhere: every pair is wrong
    loss, conf, row_r, _ = torch.ops.graphsmile.shift_pair_nll(a_inf, b_inf, same, lens, -1, True)
    assert loss.item() == float("inf") and conf.tolist() == [[0, L * L], [0, 0]]
    assert torch.equal(row_r, torch.full((L,), float(L)))
    a_inf[:, 1] = float("-inf")  # every pair predicts 0: right, loss 0
    loss, conf, row_r, _ = torch.ops.graphsmile.shift_pair_nll(a_inf, b_inf, same, lens, -1, True)
    assert loss.item() == 0.0 and conf.tolist() == [[L * L, 0], [0, 0]] and torch.equal(row_r, torch.zeros(L))


@needs_ext
def test_cpu_sentiment_beyond_int32_takes_the_exact_path():
    """The float32 rows compare sentiments as int32; values outside that range fall back to the
    scalar rows, with the same pair labels."""
    L = 130
    a, b = torch.randn(L, 2), torch.randn(L, 2)
    small = torch.randint(0, 3, (L,))
    big = small + (1 << 40)   # the same classes, shifted past int32
    r_small = torch.ops.graphsmile.shift_pair_nll(a, b, small, torch.tensor([L]), -1, True)
    r_big = torch.ops.graphsmile.shift_pair_nll(a, b, big, torch.tensor([L]), -1, True)
    assert torch.equal(r_small[1], r_big[1])
    for x, y in zip(r_small, r_big):
        torch.testing.assert_close(x.double(), y.double(), rtol=1e-5, atol=1e-4)
