"""graphsmile's graph ops.

Public, stable API:

- :func:`window_edge_index` -- the windowed cross-modal edges in canonical order.
- :func:`window_propagate` -- ``diag(s) A diag(s) x`` over those edges (SPEC 3).
- :func:`window_norm`, :func:`window_spmm` -- the same in two steps, so that a stack of layers
  computes the normalisation once; :class:`WindowGraph` -- both as methods of one batch's
  graph, whose arguments are checked once (what the model's graph modules use).
- :func:`shift_pair_logits`, :func:`shift_pair_embeddings`, :func:`shift_pair_labels` --
  sentiment-shift pairs (SPEC 4).
- :func:`shift_pair_nll` -- the shift head and its loss fused: NLL and confusion counts over
  all pairs in O(N + P/32) memory (no ``[P, 2]`` logits).

Every op takes ``backend=``: ``"auto"`` (fastest available for the tensors' device), ``"cpu"``
(C++ kernels), ``"cuda"`` (CUDA kernels), ``"triton"``, ``"reference"`` (vectorised pure
torch) or ``"dense"`` (the original's dense-adjacency math).
"""
from . import _ext
from ._backend import BACKENDS
from .index import (
    num_edges,
    num_shift_pairs,
    relative_weight_index,
    shift_pair_index,
    shift_pair_labels,
    window_edge_index,
)
from .shift import shift_pair_embeddings, shift_pair_logits, shift_pair_nll
from .window import WEIGHT_MODES, WindowGraph, window_norm, window_propagate, window_spmm

if _ext.HAS_EXTENSION:
    from . import _registry  # noqa: F401

HAS_EXTENSION = _ext.HAS_EXTENSION

__all__ = [
    "BACKENDS",
    "WEIGHT_MODES",
    "WindowGraph",
    "HAS_EXTENSION",
    "num_edges",
    "num_shift_pairs",
    "relative_weight_index",
    "shift_pair_embeddings",
    "shift_pair_index",
    "shift_pair_labels",
    "shift_pair_logits",
    "shift_pair_nll",
    "window_edge_index",
    "window_norm",
    "window_propagate",
    "window_spmm",
]
