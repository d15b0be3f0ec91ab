"""Sentiment-shift pairs (SPEC 4): the public wrappers.

Chain: kernels/window_index.h (pair ids) -> csrc/cpu/shift_pair_cpu.cpp and
csrc/cuda/shift_pair_cuda.cu -> graphsmile/ops/_registry.py -> this file ->
tests/test_shift_pairs.py -> bench/ops.py.
"""
from __future__ import annotations

import torch

from . import _backend, dense, reference
from .index import Lengths, check_shift_win, lengths_to_list, num_shift_pairs, shift_pair_labels  # noqa: F401


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
    D = u.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != 2 * D:
        raise ValueError(f"weight must be [C, 2D] = [C, {2 * D}], got {getattr(weight, 'shape', type(weight))}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(f"bias must be [C] = [{weight.shape[0]}] or None, got {getattr(bias, 'shape', type(bias))}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.device != u.device or t.dtype != u.dtype):
            raise ValueError(f"{name} is {t.dtype} on {t.device} but u is {u.dtype} on {u.device}; they must match")
    be = _backend.resolve(backend, u.device)
    if be == "dense":
        return dense.shift_pair_logits(u, v, lens, shift_win, weight, bias)
    a = torch.nn.functional.linear(u, weight[:, :D], bias)  # [N, C]
    b = torch.nn.functional.linear(v, weight[:, D:])  # [N, C]
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
