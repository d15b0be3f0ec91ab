"""Windowed cross-modal propagation (SPEC 3 and 5): the public wrappers.

Chain: kernels/window_index.h (index math) -> csrc/cpu/window_propagate_cpu.cpp and
csrc/cuda/window_propagate_cuda.cu (kernels, registered on torch.ops.graphsmile) ->
csrc/autograd.cpp (autograd) and graphsmile/ops/_registry.py (fake) -> this file ->
tests/test_window_propagate.py -> bench/ops.py (kernels), bench/host.py (host time per call).
"""
from __future__ import annotations

import torch

from . import _backend, dense, reference
from .index import Lengths, check_window, edge_count, lengths_to_list

WEIGHT_MODES = {"per_edge": 0, "relative": 1}


def _mode(weight_mode: str) -> int:
    if weight_mode not in WEIGHT_MODES:
        raise ValueError(f"weight_mode must be 'per_edge' or 'relative', got {weight_mode!r}")
    return WEIGHT_MODES[weight_mode]


def _check_edge_weight(edge_weight, graph: "WindowGraph") -> None:
    if not isinstance(edge_weight, torch.Tensor) or not edge_weight.dtype.is_floating_point:
        raise TypeError(f"edge_weight must be a floating-point tensor, got {getattr(edge_weight, 'dtype', type(edge_weight))}")
    M, wp, wf = graph.num_modal, graph.win_p, graph.win_f
    if graph.mode_id == 0:
        if edge_weight.dim() != 1:
            raise ValueError(f"edge_weight must be 1-D in per_edge mode, got shape {tuple(edge_weight.shape)}")
        E = graph.num_edges
        if edge_weight.numel() < E:
            raise ValueError(
                f"edge_weight has {edge_weight.numel()} entries but this batch has E = {E} edges "
                f"({len(graph.lengths)} dialogues, {graph.num_nodes} utterances, num_modal={M}, win_p={wp}, win_f={wf}); "
                "raise edge_capacity, shorten the windows, use smaller batches, or use weight_mode='relative' "
                "(the model's edge_weights='relative')"
            )
    elif edge_weight.numel() != M * (M - 1) * (wp + wf + 1):
        raise ValueError(
            f"edge_weight in relative mode must have M*(M-1)*(win_p+win_f+1) = {M * (M - 1) * (wp + wf + 1)} entries "
            f"(shape [{M}, {M - 1}, {wp + wf + 1}]), got shape {tuple(edge_weight.shape)}"
        )


def _check_same(a: torch.Tensor, an: str, b: torch.Tensor, bn: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{an} is on {a.device} but {bn} is on {b.device}; move them to the same device")
    if a.dtype != b.dtype:
        raise TypeError(f"{an} has dtype {a.dtype} but {bn} has dtype {b.dtype}; they must match")


class WindowGraph:
    """One batch's windowed cross-modal graph, checked once, for the window ops of a layer stack.

    A graph module computes :meth:`norm` once and :meth:`spmm` once per layer, all with the same
    dialogue lengths, modality count, windows, weight mode and backend. The free functions
    :func:`window_norm` and :func:`window_spmm` check all of those and build the kernels'
    lengths tensor on every call; a ``WindowGraph`` does it when it is made, and its methods
    check only the tensors. (A small training step on a GPU is bound by host time: this is
    where its graph ops spend theirs, ``bench/host.py``.)

    Args:
        lengths: dialogue lengths (list of ints or 1-D integer tensor), each >= 1;
            ``N = sum(lengths)``.
        num_modal: ``M >= 2``; win_p, win_f: -1 (unbounded) or >= 0.
        weight_mode: ``"per_edge"`` or ``"relative"`` (see :func:`window_propagate`).
        backend: as every op's ``backend=``; resolved per call from the tensors' device and dtype.

    Attributes: ``lengths`` (list of ints), ``num_modal``, ``win_p``, ``win_f``,
    ``weight_mode``, ``backend``, ``num_nodes`` (``N``), ``num_edges`` (``E``).

    Example::

        >>> graph = WindowGraph([3, 4], num_modal=2, win_p=1, win_f=1)
        >>> w = torch.ones(graph.num_edges, requires_grad=True)
        >>> s = graph.norm(w)                       # [M*N]
        >>> y = graph.spmm(torch.randn(14, 8), w, s)  # [M*N, 8], once per layer
    """

    __slots__ = ("lengths", "num_modal", "win_p", "win_f", "weight_mode", "mode_id", "backend", "num_nodes",
                 "num_edges", "_lengths_tensor")

    def __init__(self, lengths: Lengths, num_modal: int, win_p: int, win_f: int, weight_mode: str = "per_edge",
                 backend: str = "auto"):
        lens = lengths_to_list(lengths)
        check_window(win_p, win_f, num_modal)
        self.mode_id = _mode(weight_mode)
        if self.mode_id == 1 and (win_p < 0 or win_f < 0):
            raise ValueError(f"weight_mode='relative' needs finite windows (win_p, win_f >= 0), got win_p={win_p}, win_f={win_f}")
        _backend.check_name(backend)
        self.lengths = lens
        self.num_modal, self.win_p, self.win_f = num_modal, win_p, win_f
        self.weight_mode, self.backend = weight_mode, backend
        self.num_nodes = sum(lens)
        self.num_edges = edge_count(lens, num_modal, win_p, win_f)
        self._lengths_tensor = None

    def __repr__(self) -> str:
        return (f"WindowGraph(B={len(self.lengths)}, N={self.num_nodes}, E={self.num_edges}, num_modal={self.num_modal}, "
                f"win_p={self.win_p}, win_f={self.win_f}, weight_mode={self.weight_mode!r}, backend={self.backend!r})")

    def _kernel_lengths(self) -> torch.Tensor:
        # the C++/CUDA ops' lengths argument: an int64 CPU tensor, read on the host (made once)
        if self._lengths_tensor is None:
            self._lengths_tensor = torch.tensor(self.lengths, dtype=torch.long)
        return self._lengths_tensor

    def norm(self, edge_weight: torch.Tensor) -> torch.Tensor:
        """:func:`window_norm` of this graph: ``s``, ``[num_modal * N]``."""
        _check_edge_weight(edge_weight, self)
        be = _backend.resolve(self.backend, edge_weight.device, edge_weight.dtype, prefer_triton_low_precision=True)
        M, wp, wf, mode = self.num_modal, self.win_p, self.win_f, self.mode_id
        if be in ("cpu", "cuda"):
            return torch.ops.graphsmile.window_norm(edge_weight, self._kernel_lengths(), self.num_nodes, M, wp, wf, mode)
        if be == "triton":
            from . import triton_ops

            return triton_ops.window_norm(edge_weight, self.lengths, M, wp, wf, mode)
        if be == "dense":
            return dense.window_norm(edge_weight, self.lengths, M, wp, wf, mode)
        return reference.window_norm(edge_weight, self.lengths, M, wp, wf, mode)

    def spmm(self, x: torch.Tensor, edge_weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """:func:`window_spmm` of this graph: ``y``, shaped like ``x`` (``[num_modal * N, D]``)."""
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
        rows = self.num_modal * self.num_nodes
        if x.dim() != 2:
            raise ValueError(f"x must be 2-D [num_modal * N, D], got shape {tuple(x.shape)}")
        if x.shape[0] != rows:
            raise ValueError(f"x has {x.shape[0]} rows but num_modal * sum(lengths) = {self.num_modal} * {self.num_nodes} = {rows}")
        _check_edge_weight(edge_weight, self)
        if not isinstance(norm, torch.Tensor) or norm.dim() != 1 or norm.numel() != rows:
            raise ValueError(f"norm must be a 1-D tensor with {rows} entries (one per row of x), got {getattr(norm, 'shape', type(norm))}")
        _check_same(x, "x", edge_weight, "edge_weight")
        _check_same(x, "x", norm, "norm")
        be = _backend.resolve(self.backend, x.device, x.dtype, prefer_triton_low_precision=True)
        M, wp, wf, mode = self.num_modal, self.win_p, self.win_f, self.mode_id
        if be in ("cpu", "cuda"):
            return torch.ops.graphsmile.window_spmm(x, edge_weight, norm, self._kernel_lengths(), M, wp, wf, mode)
        if be == "triton":
            from . import triton_ops

            return triton_ops.window_spmm(x, edge_weight, norm, self.lengths, M, wp, wf, mode)
        if be == "dense":
            return dense.window_spmm(x, edge_weight, norm, self.lengths, M, wp, wf, mode)
        return reference.window_spmm(x, edge_weight, norm, self.lengths, M, wp, wf, mode)


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
    Compute it once and pass it to :func:`window_spmm` for every layer that shares the graph
    (or use a :class:`WindowGraph`, which also checks the graph's arguments once).
    Differentiable w.r.t. ``edge_weight``.
    """
    return WindowGraph(lengths, num_modal, win_p, win_f, weight_mode, backend).norm(edge_weight)


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
    return WindowGraph(lengths, num_modal, win_p, win_f, weight_mode, backend).spmm(x, edge_weight, norm)


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
    graph = WindowGraph(lengths, num_modal, win_p, win_f, weight_mode, backend)
    s = graph.norm(edge_weight)
    return graph.spmm(x, edge_weight, s)   # spmm checks x (s has edge_weight's dtype, which x must share)
