"""Sentiment-shift pairs (SPEC 4): the public wrappers.

Chain: kernels/window_index.h (pair ids), kernels/shift_nll.h (the fused loss's per-pair
term) -> csrc/cpu/shift_pair_cpu.cpp, csrc/cuda/shift_pair_cuda.cu (kernels/shift_pair.cuh) and
triton_ops.py -> csrc/autograd.cpp (autograd) and graphsmile/ops/_registry.py (fake) -> this file -> tests/test_shift_pairs.py,
tests/test_shift_nll.py -> bench/ops.py.
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import _backend, dense, reference
from .index import Lengths, check_sentiment, check_shift_win, lengths_to_list, num_shift_pairs, shift_pair_labels  # noqa: F401

REDUCTIONS = ("mean", "sum")


def _check_uv(u, v, lens):
    for name, t in (("u", u), ("v", v)):
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(t, 'dtype', type(t))}")
        if t.dim() != 2 or t.shape[0] != sum(lens):
            raise ValueError(f"{name} must be [sum(lengths), D] = [{sum(lens)}, D], got shape {tuple(t.shape)}")
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {tuple(u.shape)} and {tuple(v.shape)}")
    if u.device != v.device:
        raise ValueError(f"u is on {u.device} but v is on {v.device}; move them to the same device")
    if u.dtype != v.dtype:
        raise TypeError(f"u has dtype {u.dtype} but v has dtype {v.dtype}; they must match")


def _check_head(u, weight, bias, num_classes=None):
    D = u.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != 2 * D:
        raise ValueError(f"weight must be [C, 2D] = [C, {2 * D}], got {getattr(weight, 'shape', type(weight))}")
    if num_classes is not None and weight.shape[0] != num_classes:
        raise ValueError(f"weight must be [{num_classes}, 2D] = [{num_classes}, {2 * D}] (the shift head has "
                         f"{num_classes} classes), got {tuple(weight.shape)}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(f"bias must be [C] = [{weight.shape[0]}] or None, got {getattr(bias, 'shape', type(bias))}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.device != u.device or t.dtype != u.dtype):
            raise ValueError(f"{name} is {t.dtype} on {t.device} but u is {u.dtype} on {u.device}; they must match")


def _head_parts(u, v, weight, bias):
    """The linear head split over the pair: ``a = W_u u + bias``, ``b = W_v v`` (``[N, C]``
    each), so that ``W [u_i ; v_j] + bias = a_i + b_j``."""
    D = u.shape[1]
    return torch.nn.functional.linear(u, weight[:, :D], bias), torch.nn.functional.linear(v, weight[:, D:])


def shift_pair_logits(
    u: torch.Tensor,
    v: torch.Tensor,
    lengths: Lengths,
    shift_win: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    backend: str = "auto",
) -> torch.Tensor:
    """Logits of the sentiment-shift head over all pairs, without building pair embeddings.

    For each dialogue, each chunk of ``shift_win`` utterances (``-1``: the whole dialogue; the
    last chunk holds the remainder), each ``i`` then ``j`` in the chunk::

        logits[pair(i, j)] = weight @ [u_i ; v_j] + bias = (W_u u_i + bias) + W_v v_j

    with ``W_u = weight[:, :D]``, ``W_v = weight[:, D:]``. ``u, v``: ``[N, D]``; ``weight``:
    ``[C, 2D]`` (GraphSmile: ``C = 2``); ``bias``: ``[C]`` or None. Returns ``[P, C]``,
    ``P = sum over chunks of size^2``. Only ``[N, C]`` intermediates are built; gradients to
    ``u``, ``v``, ``weight``, ``bias`` are segment sums over chunk rows and columns.
    """
    lens = lengths_to_list(lengths)
    check_shift_win(shift_win)
    _check_uv(u, v, lens)
    _check_head(u, weight, bias)
    be = _backend.resolve(backend, u.device)
    if be == "dense":
        return dense.shift_pair_logits(u, v, lens, shift_win, weight, bias)
    a, b = _head_parts(u, v, weight, bias)
    if be in ("cpu", "cuda"):
        return torch.ops.graphsmile.shift_pair_sum(a, b, torch.tensor(lens, dtype=torch.long), num_shift_pairs(lens, shift_win), shift_win)
    if be == "triton":
        from . import triton_ops

        return triton_ops.shift_pair_sum(a, b, lens, shift_win)
    return reference.shift_pair_sum(a, b, lens, shift_win)


def shift_pair_embeddings(u: torch.Tensor, v: torch.Tensor, lengths: Lengths, shift_win: int, backend: str = "auto") -> torch.Tensor:
    """The ``[P, 2D]`` pair embeddings ``concat(u_i, v_j)`` in the order of
    :func:`shift_pair_logits`, for users who need exactly that tensor (the model never builds
    it). Built with one vectorised gather on every backend except ``"dense"`` (the original's
    chunk loop)."""
    lens = lengths_to_list(lengths)
    check_shift_win(shift_win)
    _check_uv(u, v, lens)
    be = _backend.resolve(backend, u.device)
    if be == "dense":
        return dense.shift_pair_embeddings(u, v, lens, shift_win)
    return reference.shift_pair_embeddings(u, v, lens, shift_win)


def nll_setup_context(ctx, with_grad: bool, a: torch.Tensor, b: torch.Tensor, output) -> None:
    """Autograd set-up of the Triton fused-loss op (``graphsmile_triton::shift_pair_nll``; the C++
    op's autograd, ``PairNll`` in csrc/autograd.cpp, is the same formula): its outputs are
    ``(loss, confusion, row_r, col_r)``; only ``loss`` is differentiable, and its gradient needs
    the residual sums."""
    _, confusion, row_r, col_r = output
    ctx.mark_non_differentiable(confusion, row_r, col_r)
    ctx.with_grad = with_grad
    ctx.dtypes = (a.dtype, b.dtype)
    # a and b only link a double backward's error node to them (graphsmile.ops._grad)
    ctx.save_for_backward(row_r, col_r, a, b)


def nll_input_grads(ctx, grad_loss: torch.Tensor, op_name: str):
    """``(grad_a, grad_b)`` of the Triton fused-loss op. The loss is a sum over pairs, so its gradient is
    the residual sums the forward computed (``d/dz_1 = r``, ``d/dz_0 = -r``), scaled by the
    incoming scalar gradient."""
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return None, None
    if not ctx.with_grad:
        raise RuntimeError(f"{op_name} was called with with_grad=False, so it kept no gradient; call it with "
                           "with_grad=True (graphsmile.ops.shift_pair_nll does when grad is enabled)")
    row_r, col_r = ctx.saved_tensors[:2]
    ga = (grad_loss * torch.stack([-row_r, row_r], 1)).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
    gb = (grad_loss * torch.stack([-col_r, col_r], 1)).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
    return ga, gb


def shift_pair_nll(
    u: torch.Tensor,
    v: torch.Tensor,
    lengths: Lengths,
    shift_win: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    sentiment: torch.Tensor,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The sentiment-shift loss fused with its head: the NLL of
    ``log_softmax(shift_pair_logits(...))`` at the pair labels, without the ``[P, 2]`` logits.

    Per pair ``(i, j)`` of a chunk (SPEC 4): ``z = W [u_i ; v_j] + bias`` (two classes),
    ``y = (sentiment_i != sentiment_j)``, ``loss = -log_softmax(z)[y]``. Equal to
    ``F.nll_loss(F.log_softmax(shift_pair_logits(u, v, ...).float(), -1),
    shift_pair_labels(sentiment, ...), reduction=reduction)`` up to rounding, in O(N + P/32) memory
    instead of O(P): with ``shift_win = -1`` a 20,000-utterance dialogue has P = 4e8 pairs,
    whose logits, log-probabilities, labels and gradients would take about 16 GB.

    Args:
        u, v: ``[N, D]`` node features (GraphSmile passes the fused features twice).
        lengths, shift_win: the dialogue lengths and the chunk size (``-1``: whole dialogue).
        weight: ``[2, 2D]``; bias: ``[2]`` or None (the head ``Linear(2D, 2)``).
        sentiment: ``[N]`` integer sentiment classes on ``u``'s device.
        reduction: ``"mean"`` (over the P pairs; NaN when P = 0) or ``"sum"``.

    Returns:
        ``(loss, confusion)``: ``loss`` a 0-dim tensor (float32; float64 for float64 inputs),
        differentiable in ``u, v, weight, bias``; ``confusion`` ``[2, 2]`` int64 pair counts
        indexed ``[label, prediction]`` (prediction = ``argmax z``), for accuracy and F1
        without the per-pair predictions.

    The ``cpu``, ``cuda`` and ``triton`` backends evaluate one exp, one log1p and one division
    per pair and compute the gradient in the same pass when it is needed (the loss is a sum, so
    its backward only scales it); ``reference`` and ``dense`` build the ``[P, 2]`` logits.
    Temp memory: O(N) in CUDA's two-pass kernels; the CPU kernel keeps per-32-row partial column
    sums when the gradient is needed (P / 32 values: 50 MB in fp32 for P = 4e8), CUDA's tiled
    kernel per-square partial sums (at most about N + P / 64 slots of 24 bytes: 19 MB for
    P = 4e8) and Triton per-32-row partial column sums (P / 32 values: 50 MB for P = 4e8); the
    ``[P, 2]`` logits path needs about 16 GB there. On CUDA,
    ``GRAPHSMILE_CUDA_SHIFT_NLL`` (``auto`` / ``tiled`` / ``two_pass``) and
    ``GRAPHSMILE_CUDA_FAST_MATH=1`` choose the kernels (README, "The graph ops"). Every backend is
    deterministic; on CPU and CUDA an utterance's sums do not depend on the rest of the batch.
    """
    lens = lengths_to_list(lengths)
    check_shift_win(shift_win)
    _check_uv(u, v, lens)
    _check_head(u, weight, bias, num_classes=2)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    check_sentiment(sentiment, sum(lens))
    if sentiment.shape[0] != sum(lens):
        raise ValueError(f"sentiment must be [sum(lengths)] = [{sum(lens)}], got shape {tuple(sentiment.shape)}")
    if sentiment.device != u.device:
        raise ValueError(f"sentiment is on {sentiment.device} but u is on {u.device}; move them to the same device")
    sentiment = sentiment.long()
    be = _backend.resolve(backend, u.device)
    if be == "dense":
        z = dense.shift_pair_logits(u, v, lens, shift_win, weight, bias)
        total, confusion = reference.nll_from_logits(z, shift_pair_labels(sentiment, lens, shift_win))
    else:
        a, b = _head_parts(u, v, weight, bias)  # [N, 2] each
        if be in ("cpu", "cuda"):
            with_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
            total, confusion, _, _ = torch.ops.graphsmile.shift_pair_nll(
                a, b, sentiment, torch.tensor(lens, dtype=torch.long), shift_win, with_grad)
        elif be == "triton":
            from . import triton_ops

            total, confusion = triton_ops.shift_pair_nll(a, b, sentiment, lens, shift_win)
        else:
            total, confusion = reference.shift_pair_nll(a, b, sentiment, lens, shift_win)
    if reduction == "mean":
        P = num_shift_pairs(lens, shift_win)
        total = total / P if P > 0 else total * float("nan")
    return total, confusion
