"""Windowed cross-modal propagation (SPEC 3 and 5): the public wrappers.

Chain: kernels/window_index.h (index math) -> csrc/cpu/window_propagate_cpu.cpp and
csrc/cuda/window_propagate_cuda.cu (kernels, registered on torch.ops.graphsmile) ->
graphsmile/ops/_registry.py (autograd, fake) -> this file -> tests/test_window_propagate.py ->
bench/ops.py.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from . import _backend, dense, reference
from .index import Lengths, check_window, edge_count, lengths_to_list, num_edges

WEIGHT_MODES = {"per_edge": 0, "relative": 1}


def _mode(weight_mode: str) -> int:
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"weight_mode must be 'per_edge' or 'relative', got {weight_mode!r}")
    return WEIGHT_MODES[weight_mode]


def _check_edge_weight(edge_weight, lens, num_modal, win_p, win_f, mode) -> None:
    if not isinstance(edge_weight, torch.Tensor) or not edge_weight.dtype.is_floating_point:
        raise TypeError(f"edge_weight must be a floating-point tensor, got {getattr(edge_weight, 'dtype', type(edge_weight))}")
    if mode == 0:
        if edge_weight.dim() != 1:
            raise ValueError(f"edge_weight must be 1-D in per_edge mode, got shape {tuple(edge_weight.shape)}")
        E = edge_count(lens, num_modal, win_p, win_f)  # lens and windows validated by the caller
        if edge_weight.numel() < E:
            raise ValueError(
                f"edge_weight has {edge_weight.numel()} entries but this batch has E = {E} edges "
                f"({len(lens)} dialogues, {sum(lens)} utterances, num_modal={num_modal}, win_p={win_p}, win_f={win_f}); "
                "raise edge_capacity, shorten the windows, use smaller batches, or use edge_weights='relative'"
            )
    else:
        if win_p < 0 or win_f < 0:
            raise ValueError(f"weight_mode='relative' needs finite windows (win_p, win_f >= 0), got win_p={win_p}, win_f={win_f}")
        want = num_modal * (num_modal - 1) * (win_p + win_f + 1)
        if edge_weight.numel() != want:
            raise ValueError(
                f"edge_weight in relative mode must have M*(M-1)*(win_p+win_f+1) = {want} entries "
                f"(shape [{num_modal}, {num_modal - 1}, {win_p + win_f + 1}]), got shape {tuple(edge_weight.shape)}"
            )


def _check_same(a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{an} is on {a.device} but {bn} is on {b.device}; move them to the same device")
    if a.dtype != b.dtype:
        raise TypeError(f"{an} has dtype {a.dtype} but {bn} has dtype {b.dtype}; they must match")


def _check_x(x, lens, num_modal, name="x") -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [num_modal * N, D], got shape {tuple(x.shape)}")
    N = sum(lens)
    if x.shape[0] != num_modal * N:
        raise ValueError(f"{name} has {x.shape[0]} rows but num_modal * sum(lengths) = {num_modal} * {N} = {num_modal * N}")


def _lengths_tensor(lens: Sequence[int]) -> torch.Tensor:
    return torch.tensor(lens, dtype=torch.long)


def window_norm(
    edge_weight: torch.Tensor,
    lengths: Lengths,
    num_modal: int,
    win_p: int,
    win_f: int,
    weight_mode: str = "per_edge",
    backend: str = "auto",
) -> torch.Tensor:
    """Symmetric normalisation of the windowed cross-modal graph.

    ``s_i = d_i^{-1/2}`` with ``d_i = sum_{e=(i, .)} a_e`` (0 where ``d_i == 0``, NaN where
    ``d_i < 0``, as the original). Returns ``[num_modal * N]`` with ``N = sum(lengths)``.
    Compute it once and pass it to :func:`window_spmm` for every layer that shares the graph.
    Differentiable w.r.t. ``edge_weight``.
    """
    lens = lengths_to_list(lengths)
    check_window(win_p, win_f, num_modal)
    mode = _mode(weight_mode)
    _check_edge_weight(edge_weight, lens, num_modal, win_p, win_f, mode)
    be = _backend.resolve(backend, edge_weight.device, edge_weight.dtype, prefer_triton_low_precision=True)
    if be in ("cpu", "cuda"):
        return torch.ops.graphsmile.window_norm(edge_weight, _lengths_tensor(lens), sum(lens), num_modal, win_p, win_f, mode)
    if be == "triton":
        from . import triton_ops

        return triton_ops.window_norm(edge_weight, lens, num_modal, win_p, win_f, mode)
    if be == "dense":
        return dense.window_norm(edge_weight, lens, num_modal, win_p, win_f, mode)
    return reference.window_norm(edge_weight, lens, num_modal, win_p, win_f, mode)


def window_spmm(
    x: torch.Tensor,
    edge_weight: torch.Tensor,
    norm: torch.Tensor,
    lengths: Lengths,
    num_modal: int,
    win_p: int,
    win_f: int,
    weight_mode: str = "per_edge",
    backend: str = "auto",
) -> torch.Tensor:
    """Normalised propagation with a precomputed normalisation ``norm`` (see :func:`window_norm`).

    ``y_i = s_i * sum_{e=(i,j)} a_e s_j x_j``, ``x``: ``[num_modal * N, D]`` modality-major
    (row ``m*N + t`` is utterance ``t`` of modality ``m``), ``norm``: ``[num_modal * N]``.
    Returns ``y`` shaped like ``x``. Differentiable w.r.t. ``x``, ``edge_weight`` and ``norm``.
    """
    lens = lengths_to_list(lengths)
    check_window(win_p, win_f, num_modal)
    mode = _mode(weight_mode)
    _check_x(x, lens, num_modal)
    _check_edge_weight(edge_weight, lens, num_modal, win_p, win_f, mode)
    if not isinstance(norm, torch.Tensor) or norm.dim() != 1 or norm.numel() != x.shape[0]:
        raise ValueError(f"norm must be a 1-D tensor with {x.shape[0]} entries (one per row of x), got {getattr(norm, 'shape', type(norm))}")
    _check_same(x, "x", edge_weight, "edge_weight")
    _check_same(x, "x", norm, "norm")
    be = _backend.resolve(backend, x.device, x.dtype, prefer_triton_low_precision=True)
    if be in ("cpu", "cuda"):
        return torch.ops.graphsmile.window_spmm(x, edge_weight, norm, _lengths_tensor(lens), num_modal, win_p, win_f, mode)
    if be == "triton":
        from . import triton_ops

        return triton_ops.window_spmm(x, edge_weight, norm, lens, num_modal, win_p, win_f, mode)
    if be == "dense":
        return dense.window_spmm(x, edge_weight, norm, lens, num_modal, win_p, win_f, mode)
    return reference.window_spmm(x, edge_weight, norm, lens, num_modal, win_p, win_f, mode)


def window_propagate(
    x: torch.Tensor,
    edge_weight: torch.Tensor,
    lengths: Lengths,
    num_modal: int,
    win_p: int,
    win_f: int,
    weight_mode: str = "per_edge",
    backend: str = "auto",
) -> torch.Tensor:
    """Windowed cross-modal propagation ``y = diag(s) A diag(s) x`` (SPEC 3).

    Args:
        x: ``[num_modal * N, D]`` node features, modality-major (row ``m*N + t`` is utterance
            ``t`` of modality ``m``), ``N = sum(lengths)``, dialogues packed in batch order.
        edge_weight: ``per_edge``: a vector of at least ``E`` entries, edge ``e`` (canonical
            order of :func:`window_edge_index`) using entry ``e``; ``relative``: a
            ``[M, M-1, win_p + win_f + 1]`` table, edge ``(m -> n, k - j)`` using entry
            ``[m, n - (n > m), k - j + win_p]``.
        lengths: dialogue lengths (list of ints or 1-D integer tensor), each >= 1.
        num_modal: ``M >= 2``.
        win_p, win_f: past/future windows, -1 (unbounded) or >= 0.
        weight_mode: ``"per_edge"`` (the original's) or ``"relative"``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``"dense"``.

    Math: ``A[i, j] = a_e`` for each edge ``e = (i, j)``, ``d_i = sum_j A[i, j]``,
    ``s_i = d_i^{-1/2}`` (0 where ``d_i = 0``), ``y_i = sum_e s_i a_e s_j x_j``. Gradients flow
    to ``x`` and ``edge_weight`` (including the path through the degrees). Deterministic.

    Returns:
        ``y``, shaped like ``x``.

    Example::

        >>> x = torch.randn(2 * 7, 16)
        >>> w = torch.ones(500_000, requires_grad=True)
        >>> y = window_propagate(x, w, [3, 4], num_modal=2, win_p=1, win_f=1)
    """
    if not isinstance(lengths, (torch.Tensor, list, tuple)):
        lengths = lengths_to_list(lengths)   # read an iterator once: both steps need it
    s = window_norm(edge_weight, lengths, num_modal, win_p, win_f, weight_mode, backend)
    return window_spmm(x, edge_weight, s.to(x.dtype) if s.dtype != x.dtype else s, lengths, num_modal, win_p, win_f, weight_mode, backend)
