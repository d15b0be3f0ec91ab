"""GraphSmile model, config and losses (graphsmile/model.py, config.py, losses.py).

The reference for parity is ``original_forward`` below: a plain re-implementation of the
original model's forward from SPEC 6 (BatchNorm on the padded tensor, Python-loop packing and
edge construction, dense adjacency, products with dense diagonal matrices, Python-loop shift
pairs), driven by a state dict under the original's parameter names.
"""
from __future__ import annotations

import itertools
import json
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphsmile import ops
from graphsmile.config import DATASET_DIMS, DATASET_EMOTIONS, LOSS_TYPES, PRESETS, TEXTF_MODES, GraphSmileConfig
from graphsmile.losses import AutomaticWeightedLoss, MultiTaskLoss, nll_loss
from graphsmile.model import GraphSmile, HeterGConvEdge, lengths_from_umask, pack_padded, packed_index


SMALL = dict(hidden_dim=16, dim_t=8, dim_v=6, dim_a=5)
HAS_CPU = ops._ext.has_kernel("CPU")
BACKENDS = (["cpu"] if HAS_CPU else []) + ["reference", "dense"]


# --- helpers ------------------------------------------------------------------------------


def make_inputs(cfg, lengths, dtype=torch.float32, seed=0, pad_value=0.0):
    """Padded [T, B, D] features (padding = pad_value), umask [T, B], qmask [T, B, 2]."""
    g = torch.Generator().manual_seed(seed)
    T, B = max(lengths), len(lengths)
    mask = (torch.arange(T)[:, None] < torch.tensor(lengths)[None, :])

    def feat(d):
        x = torch.randn(T, B, d, generator=g, dtype=dtype)
        return torch.where(mask[..., None], x, torch.full_like(x, pad_value))

    texts = [feat(cfg.text_dim) for _ in range(4)]
    umask = mask.to(dtype)
    qmask = torch.zeros(T, B, 2, dtype=dtype)
    return (*texts, feat(cfg.visual_dim), feat(cfg.audio_dim), umask, qmask, list(lengths))


def original_state_dict(cfg, seed=0, capacity=500_000, dtype=torch.float64):
    """A random state dict under the original's names and shapes (SPEC 6). Values are
    representable in float32, so loading them into a float32 model and then calling
    ``.double()`` is exact."""
    g = torch.Generator().manual_seed(seed)
    Dt, Dv, Da = cfg.feature_dims
    H = cfg.hidden_dim

    def r(*shape, scale=0.3):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    sd = {}
    for i in range(4):
        sd[f"batchnorms_t.{i}.weight"] = 1 + r(Dt, scale=0.1)
        sd[f"batchnorms_t.{i}.bias"] = r(Dt, scale=0.1)
        sd[f"batchnorms_t.{i}.running_mean"] = r(Dt)
        sd[f"batchnorms_t.{i}.running_var"] = 0.5 + torch.rand(Dt, generator=g).to(dtype)
        sd[f"batchnorms_t.{i}.num_batches_tracked"] = torch.tensor(7)
    in_t = {"concat4": 4 * Dt, "concat2": 2 * Dt}.get(cfg.textf_mode, Dt)
    for name, d in (("t", in_t), ("v", Dv), ("a", Da)):
        sd[f"dim_layer_{name}.0.weight"] = r(H, d)
        sd[f"dim_layer_{name}.0.bias"] = r(H)
    for gi, gname in enumerate(("tv", "ta", "va")):
        p = f"hetergconv_{gname}."
        sd[p + "edge_weight"] = (0.5 + torch.rand(capacity, generator=g)).to(dtype)
        for l in range(cfg.heter_n_layers[gi]):
            sd[p + f"hetergcn_layers.{l}.hetergconv.weight"] = r(H, H)
            sd[p + f"hetergcn_layers.{l}.hetergconv.bias"] = r(H)
        sd[p + "fc_layer.0.weight"] = r(H, H)
        sd[p + "fc_layer.0.bias"] = r(H)
        for l in range(cfg.heter_n_layers[gi]):
            sd[p + f"fc_layers.{l}.0.weight"] = r(H, H)
            sd[p + f"fc_layers.{l}.0.bias"] = r(H)
    sd["modal_fusion.0.weight"] = r(H, H)
    sd["modal_fusion.0.bias"] = r(H)
    sd["emo_output.weight"] = r(cfg.num_emotions, H)
    sd["emo_output.bias"] = r(cfg.num_emotions)
    sd["sen_output.weight"] = r(3, H)
    sd["sen_output.bias"] = r(3)
    sd["senshift.shift_output_layer.0.weight"] = r(2, 2 * H)
    sd["senshift.shift_output_layer.0.bias"] = r(2)
    return {k: v.float().to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def original_forward(P, cfg, t0, t1, t2, t3, visual, audio, lengths, training=False):
    """The original GraphSmile forward, written plainly from SPEC 6 (dropout off)."""
    T, B, Dt = t0.shape
    lin = lambda x, n: torch.matmul(x, P[n + ".weight"].t()) + P[n + ".bias"]  # noqa: E731
    lrelu = lambda x: F.leaky_relu(x, 0.01)  # noqa: E731

    def bn(x, i):  # over the padded [B*T, Dt], as the original
        x2 = x.transpose(0, 1).reshape(-1, Dt)
        if training:
            mean, var = x2.mean(0), x2.var(0, unbiased=False)
        else:
            mean, var = P[f"batchnorms_t.{i}.running_mean"], P[f"batchnorms_t.{i}.running_var"]
        y = (x2 - mean) / torch.sqrt(var + 1e-5) * P[f"batchnorms_t.{i}.weight"] + P[f"batchnorms_t.{i}.bias"]
        return y.reshape(B, T, Dt).transpose(0, 1)

    ts = [bn(x, i) for i, x in enumerate((t0, t1, t2, t3))]
    dl = lambda x, m: lrelu(lin(x, f"dim_layer_{m}.0"))  # noqa: E731
    mode = cfg.textf_mode
    if mode == "concat4":
        ft = dl(torch.cat(ts, -1), "t")
    elif mode == "concat2":
        ft = dl(torch.cat(ts[:2], -1), "t")
    elif mode == "sum4":
        ft = (dl(ts[0], "t") + dl(ts[1], "t") + dl(ts[2], "t") + dl(ts[3], "t")) / 4
    elif mode == "sum2":
        ft = (dl(ts[0], "t") + dl(ts[1], "t")) / 2
    else:
        ft = dl(ts[int(mode[-1])], "t")
    fv, fa = dl(visual, "v"), dl(audio, "a")

    def batch_to_all(x):
        return torch.cat([x[: lengths[j], j, :] for j in range(B)], 0)

    et, ev, ea = batch_to_all(ft), batch_to_all(fv), batch_to_all(fa)
    win_p, win_f = cfg.win

    def edges(n_modal):
        N = sum(lengths)
        nodes = [list(range(m * N, (m + 1) * N)) for m in range(n_modal)]
        out, start = [], 0
        for L in lengths:
            for m, n in itertools.permutations(range(n_modal), 2):
                for j, node_m in enumerate(nodes[m][start : start + L]):
                    lo = start if win_p == -1 else max(start, start + j - win_p)
                    hi = start + L if win_f == -1 else min(start + L, start + j + win_f + 1)
                    out.extend(itertools.product([node_m], nodes[n][lo:hi]))
            start += L
        return torch.tensor(out).t()

    def heter(name, xs, K):
        x = torch.cat(xs, 0)
        ei = edges(len(xs))
        w = P[f"hetergconv_{name}.edge_weight"][: ei.shape[1]]
        n = x.shape[0]
        A = torch.zeros(n, n, dtype=x.dtype).index_put((ei[0], ei[1]), w, accumulate=True)
        d = A.sum(1)
        dis = torch.pow(d, -0.5)
        dis = dis.masked_fill(torch.isinf(dis), 0.0)
        Dm = torch.diag_embed(dis)
        G = torch.matmul(Dm, torch.matmul(A, Dm))
        h, out = x, x
        for l in range(K):
            pre = f"hetergconv_{name}.hetergcn_layers.{l}.hetergconv."
            h = torch.matmul(G, torch.mm(h, P[pre + "weight"])) + P[pre + "bias"]
            out = out + lrelu(lin(h, f"hetergconv_{name}.fc_layers.{l}.0"))
        return out.chunk(len(xs), 0)

    K = cfg.heter_n_layers
    tv, ta, va = heter("tv", (et, ev), K[0]), heter("ta", (et, ea), K[1]), heter("va", (ev, ea), K[2])
    f = lambda x: lrelu(lin(x, "modal_fusion.0"))  # noqa: E731
    fused = (f(tv[0]) + f(ta[0]) + f(tv[1]) + f(va[0]) + f(ta[1]) + f(va[1])) / 6
    emo, sen = lin(fused, "emo_output"), lin(fused, "sen_output")

    pairs, start = [], 0
    for L in lengths:
        win = L if cfg.shift_win == -1 else cfg.shift_win
        for c in range(math.ceil(L / win)):
            w = L % win if (c == math.ceil(L / win) - 1 and L % win != 0) else win
            s = start + c * win
            pairs.append(torch.cat([fused[s : s + w, None, :].repeat(1, w, 1), fused[None, s : s + w, :].repeat(w, 1, 1)], -1).view(-1, 2 * fused.shape[1]))
        start += L
    sft = lin(torch.cat(pairs, 0), "senshift.shift_output_layer.0")
    return emo, sen, sft, fused


def tiny_config(**kw):
    base = dict(dataset="IEMOCAP", hidden_dim=8, dim_t=6, dim_v=5, dim_a=4, win=(2, 1), heter_n_layers=(2, 1, 3), drop=0.0, shift_win=3)
    base.update(kw)
    return GraphSmileConfig(**base)


def weighted_sum(outs, seed=1):
    g = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)


# --- config -------------------------------------------------------------------------------


def test_presets_match_the_paper():
    table = {  # lr, batch, dropout, layers, window, shift window, l_sen, l_shift, hidden, epochs
        "IEMOCAP": (1e-4, 16, 0.2, 7, 17, 19, 1.0, 0.7, 512, 120),
        "IEMOCAP4": (3e-4, 16, 0.2, 4, 5, 10, 0.6, 0.6, 256, 120),
        "MELD": (7e-5, 16, 0.2, 5, 3, 3, 0.5, 0.2, 384, 50),
        "CMUMOSEI7": (8e-5, 32, 0.4, 2, 5, 2, 0.8, 1.0, 256, 60),
    }
    assert set(PRESETS) == set(table)
    for name, (lr, bs, drop, K, w, sw, ls, lf, H, E) in table.items():
        c = GraphSmileConfig.preset(name)
        assert (c.dataset, c.lr, c.batch_size, c.drop, c.heter_n_layers, c.win, c.shift_win) == (name, lr, bs, drop, (K,) * 3, (w, w), sw)
        assert (c.lambd, c.hidden_dim, c.epochs, c.textf_mode, c.loss_type, c.l2) == ((1.0, ls, lf), H, E, "textf0", "emo_sen_sft", 1e-4)
        assert c.feature_dims == DATASET_DIMS[name] and c.num_emotions == DATASET_EMOTIONS[name]
        assert c.edge_weights == "per_edge" and c.edge_capacity == 500_000 and c.backend == "auto"
    assert GraphSmileConfig.preset("MELD", hidden_dim=16, dim_v=3).feature_dims == (1024, 3, 300)
    with pytest.raises(ValueError, match="unknown preset"):
        GraphSmileConfig.preset("MOSI")
    with pytest.raises(ValueError, match="unknown GraphSmileConfig field"):
        GraphSmileConfig.preset("MELD", hiden_dim=3)


def test_config_roundtrip_and_derivation():
    c = GraphSmileConfig.preset("IEMOCAP4", dim_v=7, n_emotions=5, edge_weights="relative")
    d = json.loads(json.dumps(c.to_dict()))
    c2 = GraphSmileConfig.from_dict(d)
    assert c2 == c and isinstance(c2.win, tuple) and isinstance(c2.lambd, tuple)
    assert c2.feature_dims == (1024, 7, 100) and c2.num_emotions == 5
    # None = derive from the dataset, also after replace()
    c3 = GraphSmileConfig(dataset="IEMOCAP").replace(dataset="CMUMOSEI7")
    assert c3.feature_dims == (1024, 35, 384) and c3.num_emotions == 7
    with pytest.raises(ValueError, match="unknown GraphSmileConfig field"):
        GraphSmileConfig.from_dict({**d, "bogus": 1})
    assert GraphSmileConfig.from_dict({**d, "bogus": 1}, strict=False) == c
    assert GraphSmileConfig(win=[3, 4], heter_n_layers=[1, 2, 3]).win == (3, 4)
    # numpy scalars (a sweep's grid) are taken as plain ints and floats: valid, equal, serialisable
    import numpy as np
    cn = GraphSmileConfig.preset("IEMOCAP", hidden_dim=np.int64(64), win=(np.int32(3), 3), lr=np.float32(0.5),
                                 heter_n_layers=[np.int64(1), 2, 3], lambd=tuple(np.array([1.0, 0.5, 0.25])))
    assert cn == GraphSmileConfig.preset("IEMOCAP", hidden_dim=64, win=(3, 3), lr=0.5, heter_n_layers=(1, 2, 3),
                                         lambd=(1.0, 0.5, 0.25))
    assert type(cn.hidden_dim) is int and type(cn.win[0]) is int and type(cn.lr) is float
    assert GraphSmileConfig.from_dict(json.loads(json.dumps(cn.to_dict()))) == cn


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dataset="IEMOCAP5"), "unknown dataset"),
        (dict(textf_mode="concat3"), "unknown textf_mode"),
        (dict(edge_weights="learned"), "unknown edge_weights"),
        (dict(win=(-2, 3)), "win_p must be -1"),
        (dict(win=(3, -5)), "win_f must be -1"),
        (dict(win=(3,)), "win must be 2 ints"),
        (dict(edge_weights="relative", win=(-1, 3)), "relative.*finite windows"),
        (dict(hidden_dim=0), "hidden_dim must be a positive int"),
        (dict(hidden_dim=16.0), "hidden_dim must be a positive int"),
        (dict(heter_n_layers=(1, 2)), "heter_n_layers must be 3 ints"),
        (dict(heter_n_layers=(1, -2, 3)), "heter_n_layers must be 3 ints >= 0"),
        (dict(shift_win=0), "shift_win must be -1"),
        (dict(shift_win=-3), "shift_win must be -1"),
        (dict(drop=1.0), "drop must be"),
        (dict(dim_t=0), "dim_t must be"),
        (dict(n_emotions=1), "n_emotions must be"),
        (dict(edge_capacity=0), "edge_capacity"),
        (dict(backend="gpu"), "unknown backend"),
        (dict(loss_type="auto_loss"), "unknown loss_type"),
        (dict(lambd=(1.0, 1.0)), "lambd must be 3 numbers"),
        (dict(lr=0), "lr must be"),
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=0), "epochs"),
        (dict(shift_loss="pairs"), "unknown shift_loss"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        GraphSmileConfig(**kw)


# --- model structure ----------------------------------------------------------------------


def test_parameter_names_and_shapes_match_the_original():
    for mode in TEXTF_MODES:
        cfg = GraphSmileConfig.preset("MELD", textf_mode=mode, **SMALL)
        want = {k: tuple(v.shape) for k, v in original_state_dict(cfg, capacity=500_000, dtype=torch.float32).items()}
        got = {k: tuple(v.shape) for k, v in GraphSmile(cfg).state_dict().items()}
        assert got == want
        assert list(GraphSmile(cfg).to_original_state_dict()) == list(GraphSmile(cfg).state_dict())


def test_same_seed_same_initial_values_as_the_original():
    """Modules are created in the original's order, so a seed draws the original's values."""
    cfg = GraphSmileConfig.preset("IEMOCAP4", heter_n_layers=(2, 3, 1), textf_mode="concat2", **SMALL)
    H, (Dt, Dv, Da) = cfg.hidden_dim, cfg.feature_dims
    torch.manual_seed(123)
    want = {}
    for name, d in (("t", 2 * Dt), ("v", Dv), ("a", Da)):
        lin = nn.Linear(d, H)
        want[f"dim_layer_{name}.0.weight"], want[f"dim_layer_{name}.0.bias"] = lin.weight, lin.bias
    for gname, K in zip(("tv", "ta", "va"), cfg.heter_n_layers):
        stdv = 1.0 / math.sqrt(H)
        W = torch.empty(H, H).uniform_(-stdv, stdv)
        b = torch.empty(H).uniform_(-stdv, stdv)
        fc = nn.Linear(H, H)
        for l in range(K):
            want[f"hetergconv_{gname}.hetergcn_layers.{l}.hetergconv.weight"] = W
            want[f"hetergconv_{gname}.hetergcn_layers.{l}.hetergconv.bias"] = b
            want[f"hetergconv_{gname}.fc_layers.{l}.0.weight"] = fc.weight
        want[f"hetergconv_{gname}.fc_layer.0.weight"] = fc.weight
    for name, (i, o) in (("modal_fusion.0", (H, H)), ("emo_output", (H, 4)), ("sen_output", (H, 3)), ("senshift.shift_output_layer.0", (2 * H, 2))):
        lin = nn.Linear(i, o)
        want[name + ".weight"], want[name + ".bias"] = lin.weight, lin.bias
    torch.manual_seed(123)
    got = GraphSmile(cfg).state_dict()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v.detach(), rtol=0, atol=0, msg=k)
    assert torch.equal(got["hetergconv_tv.edge_weight"], torch.ones(500_000))


def test_frozen_and_trained_parameters():
    """Every trainable parameter gets a gradient (no DDP find_unused_parameters needed); the
    unused BatchNorms and fc_layer templates are frozen."""
    cfg = GraphSmileConfig.preset("IEMOCAP", textf_mode="textf2", **SMALL)
    m = GraphSmile(cfg)
    weighted_sum(m(*make_inputs(cfg, [5, 3]))).backward()
    for name, p in m.named_parameters():
        frozen = name.startswith(("batchnorms_t.0", "batchnorms_t.1", "batchnorms_t.3")) or ".fc_layer.0." in name
        assert p.requires_grad == (not frozen), name
        assert (p.grad is not None) == p.requires_grad, name


@pytest.mark.parametrize("preset", list(PRESETS))
def test_forward_shapes_for_every_preset(preset):
    cfg = GraphSmileConfig.preset(preset, **SMALL)
    m = GraphSmile(cfg)
    lengths = [11, 4, 7]
    emo, sen, sft, fused = m(*make_inputs(cfg, lengths))
    N, P = sum(lengths), ops.num_shift_pairs(lengths, cfg.shift_win)
    assert emo.shape == (N, cfg.num_emotions) and sen.shape == (N, 3)
    assert sft.shape == (P, 2) and fused.shape == (N, cfg.hidden_dim)
    assert all(torch.isfinite(t).all() for t in (emo, sen, sft, fused))


@pytest.mark.parametrize("mode", list(TEXTF_MODES))
def test_every_textf_mode_matches_the_original(mode):
    cfg = tiny_config(textf_mode=mode)
    sd = original_state_dict(cfg)
    m = GraphSmile.from_original_state_dict(sd, cfg).double().eval()
    inputs = make_inputs(cfg, [4, 6, 1], dtype=torch.float64)
    want = original_forward(sd, cfg, *inputs[:6], inputs[8])
    got = m(*inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    if mode.startswith("concat"):
        assert m.dim_layer_t[0].in_features == int(mode[-1]) * cfg.text_dim


@pytest.mark.parametrize(
    "kw, lengths",
    [
        (dict(), [5, 3, 7]),
        (dict(win=(-1, -1), shift_win=-1), [4, 1, 6]),
        (dict(win=(0, 3), heter_n_layers=(1, 0, 2), shift_win=2), [6, 2]),
        (dict(win=(1, -1), textf_mode="sum2"), [3, 5]),
    ],
)
def test_original_state_dict_parity_with_ddp_prefix(kw, lengths):
    cfg = tiny_config(**kw)
    sd = original_state_dict(cfg)
    ddp = {"module." + k: v for k, v in sd.items()}
    m = GraphSmile.from_original_state_dict(ddp, cfg).double().eval()
    inputs = make_inputs(cfg, lengths, dtype=torch.float64)
    want = original_forward(sd, cfg, *inputs[:6], lengths)
    got = m(*inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    # gradients too: the original's (autograd through the dense math) vs ours
    P = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in sd.items()}
    weighted_sum(original_forward(P, cfg, *inputs[:6], lengths)).backward()
    weighted_sum(got).backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, P[name].grad, rtol=1e-9, atol=1e-10, msg=name)
    # and back
    out = m.to_original_state_dict(ddp_prefix=True)
    assert list(out) == list(ddp) and all(torch.equal(out[k], ddp[k]) for k in ddp)


def test_training_mode_batchnorm_parity_with_padding_included():
    cfg = tiny_config(bn_include_padding=True, textf_mode="concat2")
    sd = original_state_dict(cfg)
    m = GraphSmile.from_original_state_dict(sd, cfg).double().train()
    inputs = make_inputs(cfg, [5, 2, 4], dtype=torch.float64)
    want = original_forward(sd, cfg, *inputs[:6], inputs[8], training=True)
    for g, w in zip(m(*inputs), want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [False, True])
def test_padding_invariance(training):
    """With bn_include_padding=False (opt-in) outputs never depend on the padding; with the
    original's default they do in training mode (its BatchNorm statistics count the padded
    rows), and not in eval mode."""
    cfg = tiny_config(textf_mode="sum4", bn_include_padding=False)
    m = GraphSmile(cfg).double().train(training)
    lengths = [6, 2, 4]
    a = m(*make_inputs(cfg, lengths, dtype=torch.float64, pad_value=0.0))
    b = m(*make_inputs(cfg, lengths, dtype=torch.float64, pad_value=37.0))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    m2 = GraphSmile(cfg.replace(bn_include_padding=True)).double().train(training)
    assert GraphSmileConfig().bn_include_padding is True          # the original's, by default
    m2.load_state_dict(m.state_dict())
    c = m2(*make_inputs(cfg, lengths, dtype=torch.float64, pad_value=0.0))
    d = m2(*make_inputs(cfg, lengths, dtype=torch.float64, pad_value=37.0))
    if training:  # the original's statistics do depend on the padding
        assert not torch.allclose(c[0], d[0])
    else:
        torch.testing.assert_close(c[0], d[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kw, lengths",
    [
        (dict(), [5, 3, 7]),
        (dict(win=(-1, -1), shift_win=-1, textf_mode="concat4"), [4, 1, 6]),
        (dict(edge_weights="relative", win=(2, 3)), [5, 1, 4]),
    ],
)
def test_backends_agree_with_dense_forward_and_backward(kw, lengths):
    cfg = tiny_config(**kw)
    base = GraphSmile(cfg.replace(backend="dense")).double().eval()
    with torch.no_grad():  # non-trivial edge weights
        for gm in (base.hetergconv_tv, base.hetergconv_ta, base.hetergconv_va):
            gm.edge_weight.uniform_(0.5, 1.5)
    inputs = make_inputs(cfg, lengths, dtype=torch.float64)
    results = {}
    for i, be in enumerate(BACKENDS):
        if i % 2:
            m = GraphSmile(cfg.replace(backend=be)).double().eval()
        else:
            m = GraphSmile(cfg).double().eval().set_backend(be)
            assert m.config.backend == m.hetergconv_va.backend == m.senshift.backend == be
        m.load_state_dict(base.state_dict())
        outs = m(*inputs)
        weighted_sum(outs).backward()
        results[be] = (outs, {n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    ref_outs, ref_grads = results["dense"]
    for be, (outs, grads) in results.items():
        for o, r in zip(outs, ref_outs):
            torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10, msg=be)
        for n in ref_grads:
            torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-9, atol=1e-10, msg=f"{be}: {n}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shift_win", [3, -1])
def test_fused_shift_loss_equals_logits_path(backend, shift_win):
    """forward(shift_sentiment=...) gives the NLL sum and confusion counts of the [P, 2]
    logits path, and the same gradients for every parameter."""
    cfg = tiny_config(shift_win=shift_win, backend=backend)
    lengths = [6, 1, 9]
    m = GraphSmile(cfg).double()
    inputs = make_inputs(cfg, lengths, dtype=torch.float64, seed=5)
    sent = torch.randint(0, 3, (sum(lengths),), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    emo, sen, (nll, cm), fused = m(*inputs, shift_sentiment=sent)
    (nll + emo.sum() + sen.sum()).backward()
    g_fused = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    torch.manual_seed(0)  # the same dropout masks
    emo2, sen2, logits, fused2 = m(*inputs)
    y = ops.shift_pair_labels(sent, lengths, shift_win)
    nll2 = F.nll_loss(F.log_softmax(logits, -1), y, reduction="sum")
    (nll2 + emo2.sum() + sen2.sum()).backward()
    torch.testing.assert_close(fused, fused2, rtol=0, atol=0)
    torch.testing.assert_close(nll, nll2, rtol=1e-12, atol=1e-12)
    want_cm = torch.bincount(2 * y + logits.argmax(-1), minlength=4).view(2, 2)
    assert torch.equal(cm, want_cm) and int(cm.sum()) == ops.num_shift_pairs(lengths, shift_win)
    for n, p in m.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g_fused[n], p.grad, rtol=1e-9, atol=1e-12, msg=n)
    assert g_fused["senshift.shift_output_layer.0.weight"].abs().sum() > 0


def test_relative_edge_weights_train():
    cfg = tiny_config(edge_weights="relative", win=(2, 1))
    m = GraphSmile(cfg)
    for gm in (m.hetergconv_tv, m.hetergconv_ta, m.hetergconv_va):
        assert gm.edge_weight.shape == (2, 1, 4) and torch.equal(gm.edge_weight, torch.ones(2, 1, 4))
    weighted_sum(m(*make_inputs(cfg, [5, 2, 3]))).backward()
    for gm in (m.hetergconv_tv, m.hetergconv_ta, m.hetergconv_va):
        assert gm.edge_weight.grad is not None and gm.edge_weight.grad.abs().sum() > 0
    # independent of batch composition: a dialogue's outputs don't depend on its neighbours
    m.eval()
    one = m(*make_inputs(cfg, [5], seed=3))
    cfg_inputs = make_inputs(cfg, [5], seed=3)
    other = make_inputs(cfg, [4, 2], seed=4)
    T = 5
    pair = [torch.cat([cfg_inputs[i], F.pad(other[i], (0, 0, 0, 0, 0, T - 4))], dim=1) for i in range(6)]
    two = m(*pair, None, None, [5, 4, 2])
    torch.testing.assert_close(two[0][:5], one[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="per-edge weights only"):
        m.to_original_state_dict()


def test_edge_capacity_error():
    cfg = tiny_config(edge_capacity=50, win=(-1, -1))
    m = GraphSmile(cfg)
    E = ops.num_edges([9, 8], 2, -1, -1)
    assert m.num_edges([9, 8]) == E > 50
    with pytest.raises(ValueError, match=rf"E = {E}.*edge_capacity.*relative"):
        m(*make_inputs(cfg, [9, 8]))
    m(*make_inputs(cfg, [3, 2]))  # E = 26 fits


def test_autocast_bf16_runs():
    cfg = tiny_config(hidden_dim=16)
    m = GraphSmile(cfg)
    inputs = make_inputs(cfg, [5, 3])
    ref = m(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = m(*inputs)
    weighted_sum([o.float() for o in outs]).backward()
    assert all(torch.isfinite(o.float()).all() for o in outs)
    torch.testing.assert_close(outs[0].float(), ref[0], rtol=0.1, atol=0.1)
    assert m.hetergconv_tv.edge_weight.grad.dtype == torch.float32
    assert torch.isfinite(m.hetergconv_tv.edge_weight.grad).all()


# --- inputs and packing -------------------------------------------------------------------


def test_packing():
    T, B = 6, 4
    lengths = [3, 6, 1, 4]
    x = torch.randn(T, B, 5)
    want = torch.cat([x[:L, b] for b, L in enumerate(lengths)])
    assert torch.equal(pack_padded(x, lengths), want)
    labels = torch.randint(0, 5, (T, B))
    assert torch.equal(pack_padded(labels, torch.tensor(lengths)), torch.cat([labels[:L, b] for b, L in enumerate(lengths)]))
    idx = packed_index(lengths, B)
    assert idx.tolist() == [t * B + b for b, L in enumerate(lengths) for t in range(L)]
    umask = (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).float()
    assert lengths_from_umask(umask) == lengths
    with pytest.raises(ValueError, match="no utterance"):
        lengths_from_umask(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="T = 6"):
        pack_padded(x, [7, 1, 1, 1])


def test_lengths_from_umask_and_defaults():
    cfg = tiny_config()
    m = GraphSmile(cfg).eval()
    inputs = make_inputs(cfg, [4, 2, 3])
    a = m(*inputs)
    b = m(*inputs[:8], None)  # from umask
    c = m(*inputs[:8], torch.tensor([4, 2, 3]))
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)
    full = make_inputs(cfg, [4, 4])
    assert m(*full[:6])[0].shape[0] == 8  # no umask, no lengths: every dialogue has length T


def test_input_errors():
    cfg = tiny_config()
    m = GraphSmile(cfg)
    t0, t1, t2, t3, v, a, umask, qmask, lengths = make_inputs(cfg, [4, 2, 3])
    with pytest.raises(ValueError, match="visual has feature width 5 but the config expects dim_v = 6"):
        GraphSmile(tiny_config(dim_v=6))(t0, t1, t2, t3, v, a, umask, qmask, lengths)
    with pytest.raises(ValueError, match="textf0 has feature width"):
        m(t0[..., :3], t1, t2, t3, v, a, umask, qmask, lengths)
    with pytest.raises(ValueError, match="audio has feature width"):
        m(t0, t1, t2, t3, v, a[..., :2], umask, qmask, lengths)
    with pytest.raises(ValueError, match="the longest dialogue has 5 utterances but .* T = 4"):
        m(t0, t1, t2, t3, v, a, None, qmask, [5, 2, 3])
    with pytest.raises(ValueError, match="lengths has 2 entries but .* B = 3"):
        m(t0, t1, t2, t3, v, a, umask, qmask, [4, 2])
    with pytest.raises(ValueError, match=r"audio has \[T, B\] = \[4, 2\]"):
        m(t0, t1, t2, t3, v, a[:, :2], umask, qmask, lengths)
    with pytest.raises(ValueError, match="batch-major"):
        m(t0, t1, t2, t3, v, a, umask.t(), qmask, lengths)
    with pytest.raises(ValueError, match="textf0, which is None"):
        m(None, t1, t2, t3, v, a, umask, qmask, lengths)
    with pytest.raises(ValueError, match="time-major"):
        m(t0, t1, t2, t3, v[0], a, umask, qmask, lengths)
    with pytest.raises(ValueError, match="at least one utterance"):
        m(t0, t1, t2, t3, v, a, umask, qmask, [4, 0, 3])
    m(t0, None, None, None, v, a, umask, qmask, lengths)  # unused text sets may be None


# --- state dict conversion errors -----------------------------------------------------------


def test_from_original_state_dict_errors():
    cfg = tiny_config()
    sd = original_state_dict(cfg, dtype=torch.float32)
    missing = {k: v for k, v in sd.items() if k != "hetergconv_ta.fc_layers.0.0.bias"}
    with pytest.raises(KeyError, match=r"1 missing key\(s\) \['hetergconv_ta.fc_layers.0.0.bias'\]"):
        GraphSmile.from_original_state_dict(missing, cfg)
    extra = {**sd, "module.hetergconv_tv.hetergcn_layers.9.hetergconv.weight": torch.zeros(8, 8)}
    with pytest.raises(KeyError, match=r"unexpected key\(s\) \['hetergconv_tv.hetergcn_layers.9.hetergconv.weight'\]"):
        GraphSmile.from_original_state_dict(extra, cfg)
    with pytest.warns(UserWarning, match="missing"):
        m = GraphSmile.from_original_state_dict(missing, cfg, strict=False)
    assert torch.equal(m.emo_output.weight, sd["emo_output.weight"])
    bad = {**sd, "sen_output.weight": torch.zeros(4, 8)}
    with pytest.raises(ValueError, match=r"sen_output.weight: expected \(3, 8\), got \(4, 8\)"):
        GraphSmile.from_original_state_dict(bad, cfg)
    with pytest.raises(ValueError, match=r"(?s)edge_weight: expected \(2, 1, 4\), got \(500000,\).*per_edge"):
        GraphSmile.from_original_state_dict(sd, cfg.replace(edge_weights="relative"))
    with pytest.raises(ValueError, match=r"(?s)dim_layer_t.0.weight: expected \(8, 12\).*textf_mode"):
        GraphSmile.from_original_state_dict(sd, cfg.replace(textf_mode="concat2"))
    # old checkpoints without num_batches_tracked load
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GraphSmile.from_original_state_dict(old, cfg)


# --- losses -------------------------------------------------------------------------------


def _loss_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    emo = torch.randn(10, 6, generator=g, requires_grad=True)
    sen = torch.randn(10, 3, generator=g, requires_grad=True)
    sft = torch.randn(30, 2, generator=g, requires_grad=True)
    return emo, sen, sft, torch.randint(0, 6, (10,), generator=g), torch.randint(0, 3, (10,), generator=g), torch.randint(0, 2, (30,), generator=g)


def test_loss_types():
    emo, sen, sft, ye, ys, yf = _loss_inputs()
    le = F.nll_loss(F.log_softmax(emo, -1), ye)
    ls = F.nll_loss(F.log_softmax(sen, -1), ys)
    lf = F.nll_loss(F.log_softmax(sft, -1), yf)
    l0, l1, l2 = 0.9, 0.6, 0.3
    want = {
        "emo_sen_sft": l0 * le + l1 * ls + l2 * lf,
        "emo_sen": l0 * le + l1 * ls,
        "emo_sft": l0 * le + l2 * lf,
        "emo": le,
        "sen_sft": l1 * ls + l2 * lf,
        "sen": ls,
        "epoch": (3 / 10) * l0 * le + (1 - 3 / 10) * (l1 * ls + l2 * lf),
        "auto": sum(0.5 * x + math.log(2.0) for x in (le, ls, lf)),
    }
    assert set(want) == set(LOSS_TYPES)
    for t, w in want.items():
        total, parts = MultiTaskLoss(t, (l0, l1, l2), epochs=10)(emo, sen, sft, ye, ys, yf, epoch=3)
        torch.testing.assert_close(total, w, msg=t)
        torch.testing.assert_close(parts["emo"], le)
        torch.testing.assert_close(parts["total"], w.detach())
        assert not parts["sft"].requires_grad
    # epoch weighting moves from the auxiliary tasks to emotion
    loss = MultiTaskLoss("epoch", (1.0, 1.0, 1.0), epochs=4)
    torch.testing.assert_close(loss(emo, sen, sft, ye, ys, yf, epoch=0)[0], ls + lf)
    torch.testing.assert_close(loss(emo, sen, sft, ye, ys, yf, epoch=4)[0], le)
    with pytest.raises(ValueError, match="current epoch"):
        loss(emo, sen, sft, ye, ys, yf)
    # parts a loss type does not use may be absent
    total, parts = MultiTaskLoss("emo_sen")(emo, sen, None, ye, ys, None)
    assert set(parts) == {"emo", "sen", "total"}
    with pytest.raises(ValueError, match="needs the 'sft'"):
        MultiTaskLoss("emo_sft")(emo, sen, None, ye, ys, None)
    assert nll_loss(emo.bfloat16(), ye).dtype == torch.float32


def test_loss_errors():
    with pytest.raises(ValueError, match=r"unknown loss_type 'auto_loss'; choose one of \['emo_sen_sft'"):
        MultiTaskLoss("auto_loss")
    with pytest.raises(ValueError, match="needs epochs"):
        MultiTaskLoss("epoch", epochs=None)
    with pytest.raises(ValueError, match="3 weights"):
        MultiTaskLoss("emo_sen_sft", (1.0, 1.0))
    cfg = GraphSmileConfig.preset("MELD", loss_type="epoch")
    loss = MultiTaskLoss.from_config(cfg)
    assert (loss.loss_type, loss.lambd, loss.epochs) == ("epoch", (1.0, 0.5, 0.2), 50)


def test_auto_loss_learns():
    emo, sen, sft, ye, ys, yf = _loss_inputs()
    loss = MultiTaskLoss("auto")
    params = list(loss.parameters())
    assert len(params) == 1 and torch.equal(params[0], torch.ones(3))
    assert len(list(MultiTaskLoss("emo_sen_sft").parameters())) == 0
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        total, _ = loss(emo, sen, sft, ye, ys, yf)
        total.backward()
        assert loss.awl.params.grad is not None and loss.awl.params.grad.abs().sum() > 0
        opt.step()
    assert not torch.equal(loss.awl.params.detach(), torch.ones(3))  # the same module kept learning
    awl = AutomaticWeightedLoss(2)
    with pytest.raises(ValueError, match="expected 2 losses"):
        awl(torch.tensor(1.0))


def test_training_step_end_to_end():
    """Model + shift labels + loss + AdamW: the loss goes down on a fixed batch."""
    cfg = tiny_config(hidden_dim=16, drop=0.1, edge_capacity=2000)
    torch.manual_seed(0)
    m = GraphSmile(cfg)
    lengths = [6, 4, 5]
    inputs = make_inputs(cfg, lengths)
    g = torch.Generator().manual_seed(5)
    ye = torch.randint(0, cfg.num_emotions, (sum(lengths),), generator=g)
    ys = torch.randint(0, 3, (sum(lengths),), generator=g)
    yf = ops.shift_pair_labels(ys, lengths, cfg.shift_win)
    loss = MultiTaskLoss.from_config(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=cfg.l2, amsgrad=True)
    first = None
    for _ in range(25):
        opt.zero_grad()
        emo, sen, sft, _ = m(*inputs)
        total, parts = loss(emo, sen, sft, ye, ys, yf)
        total.backward()
        opt.step()
        first = float(total.detach()) if first is None else first
    assert float(total.detach()) < 0.8 * first


def test_graph_module_standalone():
    torch.manual_seed(0)
    gm = HeterGConvEdge(8, num_layers=2, dropout=0.0, win_p=1, win_f=2).double()
    lengths = [3, 4]
    t, v = torch.randn(7, 8, dtype=torch.float64), torch.randn(7, 8, dtype=torch.float64)
    a = gm((t, v), lengths)
    b = gm(torch.cat([t, v]), torch.tensor(lengths))
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    # one layer by hand: x + LeakyReLU(fc(P(x W) + b)) with P the normalised propagation
    gm1 = HeterGConvEdge(8, num_layers=1, dropout=0.0, win_p=1, win_f=2).double()
    x = torch.cat([t, v])
    conv = gm1.hetergcn_layers[0].hetergconv
    h = ops.window_propagate(x @ conv.weight, gm1.edge_weight, lengths, 2, 1, 2, backend="dense") + conv.bias
    want = x + F.leaky_relu(gm1.fc_layers[0][0](h), 0.01)
    torch.testing.assert_close(torch.cat(gm1(x, lengths)), want, rtol=1e-12, atol=1e-12)
    # no layers: the input, split
    gm0 = HeterGConvEdge(8, num_layers=0, dropout=0.0, win_p=1, win_f=2)
    out = gm0((t.float(), v.float()), lengths)
    assert torch.equal(out[0], t.float()) and torch.equal(out[1], v.float())
    with pytest.raises(ValueError, match="finite windows"):
        HeterGConvEdge(8, 1, 0.0, -1, 2, edge_weights="relative")
