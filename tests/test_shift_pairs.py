"""shift_pair_logits / shift_pair_embeddings / shift_pair_labels against the original's chunk
loop (dense backend) and plain loops."""
import random

import pytest
import torch

import graphsmile.ops as ops

import loops
from conftest import available_backends, random_lengths

BACKENDS = available_backends("cpu")

_rng = random.Random(99)
CASES = [([1], -1), ([1], 1), ([5], 1), ([5], 2), ([5], 5), ([5], 9), ([3, 8, 1], -1), ([7, 2, 9], 3)]
for _ in range(6):
    CASES.append((random_lengths(_rng, 8, 60), _rng.choice([-1, 1, 2, 19, 100])))


def _ids(c):
    return f"B{len(c[0])}-N{sum(c[0])}-w{c[1]}"


def _params(N, D=6, C=2, dtype=torch.float64):
    u = torch.randn(N, D, dtype=dtype)
    v = torch.randn(N, D, dtype=dtype)
    W = torch.randn(C, 2 * D, dtype=dtype)
    b = torch.randn(C, dtype=dtype)
    return u, v, W, b


def _run(backend, u, v, W, b, lens, sw, g):
    leaves = [t.clone().requires_grad_() for t in (u, v, W, b)]
    out = ops.shift_pair_logits(*leaves[:2], lens, sw, leaves[2], leaves[3], backend=backend)
    (out * g).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_match_original(case, backend):
    lens, sw = case
    u, v, W, b = _params(sum(lens))
    P = ops.num_shift_pairs(lens, sw)
    g = torch.randn(P, 2, dtype=torch.float64)
    got = _run(backend, u, v, W, b, lens, sw, g)
    want = _run("dense", u, v, W, b, lens, sw, g)
    assert got[0].shape == (P, 2)
    for name, a, c in zip(("logits", "u", "v", "weight", "bias"), got, want):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case", CASES[:8], ids=_ids)
def test_pairs_and_labels_match_loops(case):
    lens, sw = case
    pairs = loops.shift_pairs(lens, sw)
    idx = ops.shift_pair_index(lens, sw)
    assert idx.t().tolist() == [list(p) for p in pairs]
    sent = torch.randint(0, 3, (sum(lens),))
    labels = ops.shift_pair_labels(sent, lens, sw)
    assert labels.tolist() == [int(sent[i] != sent[j]) for i, j in pairs]
    u, v, W, b = _params(sum(lens))
    emb = ops.shift_pair_embeddings(u, v, lens, sw)
    want = torch.stack([torch.cat([u[i], v[j]]) for i, j in pairs])
    torch.testing.assert_close(emb, want)
    torch.testing.assert_close(ops.shift_pair_embeddings(u, v, lens, sw, backend="dense"), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    lens, sw = [4, 3], 3
    u, v, W, b = (t.requires_grad_() for t in _params(7, D=3))
    assert torch.autograd.gradcheck(lambda u, v, W, b: ops.shift_pair_logits(u, v, lens, sw, W, b, backend=backend), (u, v, W, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_tensor_twice_and_no_bias(backend):
    """GraphSmile passes the fused features as both u and v."""
    lens, sw = [6, 2], 4
    f = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    W = torch.randn(2, 10, dtype=torch.float64)
    out = ops.shift_pair_logits(f, f, lens, sw, W, None, backend=backend)
    out.pow(2).sum().backward()
    f2 = f.detach().clone().requires_grad_()
    ref = ops.shift_pair_logits(f2, f2, lens, sw, W, None, backend="dense")
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(f.grad, f2.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_dialogue_whole_window(backend):
    """shift_win = -1 on a long dialogue: [P, 2] only (P = L^2), checked against index math."""
    L = 1500
    u, v, W, b = _params(L, D=8, dtype=torch.float32)
    out = ops.shift_pair_logits(u, v, [L], -1, W, b, backend=backend)
    assert out.shape == (L * L, 2)
    a = u @ W[:, :8].t() + b
    c = v @ W[:, 8:].t()
    i, j = 1234, 77
    torch.testing.assert_close(out[i * L + j], a[i] + c[j])
    torch.testing.assert_close(out.view(L, L, 2), a[:, None] + c[None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    lens, sw = [30, 11, 52], 7
    u, v, W, b = _params(sum(lens), dtype=torch.float32)
    g = torch.randn(ops.num_shift_pairs(lens, sw), 2)
    r1 = _run(backend, u, v, W, b, lens, sw, g)
    r2 = _run(backend, u, v, W, b, lens, sw, g)
    for a, c in zip(r1, r2):
        assert torch.equal(a, c)


BAD = [
    (dict(shift_win=0), ValueError, "shift_win must be -1"),
    (dict(shift_win=-2), ValueError, "shift_win must be -1"),
    (dict(lengths=[3, 3]), ValueError, r"u must be \[sum\(lengths\), D\]"),
    (dict(lengths=[5, 0]), ValueError, r"lengths\[1\] = 0"),
    (dict(weight=torch.randn(2, 7, dtype=torch.float64)), ValueError, r"weight must be \[C, 2D\]"),
    (dict(bias=torch.randn(3, dtype=torch.float64)), ValueError, "bias must be"),
    (dict(v=torch.randn(5, 3, dtype=torch.float64)), ValueError, "same shape"),
    (dict(u=torch.randn(5, 4, dtype=torch.float32), v=torch.randn(5, 4, dtype=torch.float32)), ValueError, "weight is torch.float64"),
    (dict(backend="dense2"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("override,exc,pattern", BAD, ids=[b[2][:25] for b in BAD])
def test_bad_inputs(override, exc, pattern):
    args = dict(u=torch.randn(5, 4, dtype=torch.float64), v=torch.randn(5, 4, dtype=torch.float64), lengths=[2, 3], shift_win=2, weight=torch.randn(2, 8, dtype=torch.float64), bias=torch.randn(2, dtype=torch.float64), backend="auto")
    args.update(override)
    with pytest.raises(exc, match=pattern):
        ops.shift_pair_logits(**args)


def test_labels_bad_inputs():
    with pytest.raises(ValueError, match="sentiment has 4 entries but sum"):
        ops.shift_pair_labels(torch.zeros(4, dtype=torch.long), [2, 3], 2)
    with pytest.raises(ValueError, match="shift_win"):
        ops.shift_pair_labels(torch.zeros(5, dtype=torch.long), [2, 3], 0)
    with pytest.raises(ValueError, match="shift_win must be -1 .* from 1 to 2147483647"):
        ops.shift_pair_labels(torch.zeros(5, dtype=torch.long), [2, 3], 2**63)
    for bad in (torch.zeros(5), torch.zeros(5, dtype=torch.bool), torch.zeros(5, 1, dtype=torch.long)):
        with pytest.raises(ValueError, match="sentiment must be a 1-D integer tensor"):
            ops.shift_pair_labels(bad, [2, 3], 2)


needs_ext = pytest.mark.skipif(not ops._ext.has_kernel("CPU"), reason="graphsmile._C not built")


@needs_ext
def test_opcheck_and_compile():
    lens = torch.tensor([4, 3])
    a = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    P = ops.num_shift_pairs([4, 3], 3)
    torch.library.opcheck(torch.ops.graphsmile.shift_pair_sum.default, (a, b, lens, P, 3))
    torch.library.opcheck(torch.ops.graphsmile.shift_pair_sum_backward.default, (torch.randn(P, 2, dtype=torch.float64), lens, 7, 3, [True, True]))

    W = torch.randn(2, 12, requires_grad=True)
    bias = torch.randn(2, requires_grad=True)
    f = torch.randn(7, 6, requires_grad=True)

    def fn(f, W, bias):
        return ops.shift_pair_logits(f, f, [4, 3], 3, W, bias).logsumexp(-1).sum()

    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(f, W, bias)
    torch.testing.assert_close(out, fn(f, W, bias))
    g1 = torch.autograd.grad(out, (f, W, bias))
    g2 = torch.autograd.grad(fn(f, W, bias), (f, W, bias))
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y)
