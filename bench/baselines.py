"""The graph-module stack every provider of bench/ops.py runs, and the baseline propagations.

The stack (SPEC 3 and 9), the same code for every provider; only ``propagate`` differs::

    w = edge_weight[:E]                          # the original slices its per-edge vector
    P = provider.prepare(w)                      # once per forward (normalisation, edges, ...)
    h_0 = x;  h_{l+1} = P(h_l @ W_l) + b_l       # l = 0 .. K-1
    out = x + sum_l LeakyReLU(Linear_l(h_{l+1}))

(no dropout: it is noise for timing and would make providers' outputs differ). Providers:

- ``cpu`` / ``cuda`` / ``triton`` / ``reference``: graphsmile's ops, ``window_norm`` once and
  ``window_spmm`` per layer.
- ``dense``: the original's math, step by step as its ``HeterGConv_Edge``: the edge list built
  by the original's Python loops on every forward (``dense.original_edge_index``), a sparse COO
  tensor densified to ``[MN, MN]``, row sums, ``pow(-0.5)`` with the masked assignment of
  infinities, ``diag_embed`` and two dense ``[MN, MN]`` products (``gcn_fact``) once per forward,
  then ``spmm(gcn_fact, h @ W)`` per layer. Its per-edge vector has 500,000 entries: a batch
  with more edges is "edge-capacity exceeded".
- ``scatter``: sparse message passing in the style of PyTorch Geometric's ``GCNConv`` with
  ``normalize=True`` and no self-loops: ``edge_index`` (vectorised, once per forward), degrees
  by ``index_add`` of the weights, ``norm_e = s_row a_e s_col``, and per layer
  ``y = zeros.index_add(0, row, x.index_select(0, col) * norm[:, None])`` -- the ``[E, D]``
  message tensor is materialised (and kept for backward), as in PyG's gather/scatter path.
- ``floor``: the propagation removed (``P = identity``): only the ``[MN, D] x [D, D]`` products
  and the residual Linear layers remain. No implementation of this model can beat it.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import graphsmile.ops as gops
from graphsmile.ops import dense as gdense

ORIGINAL_EDGE_CAPACITY = 500_000
OUR_BACKENDS = ("cpu", "cuda", "triton", "reference")
BASELINES = ("dense", "scatter", "floor", "unfused")  # unfused: the shift_loss section's [P, 2] path


class EdgeCapacityExceeded(RuntimeError):
    pass


def available_backends(device: str) -> List[str]:
    """graphsmile backends that can run on ``device`` here, fastest first."""
    from graphsmile.ops import _backend, _ext

    out = []
    if device.startswith("cuda"):
        if _ext.has_kernel("CUDA"):
            out.append("cuda")
        if _backend.triton_available():
            out.append("triton")
    elif _ext.has_kernel("CPU"):
        out.append("cpu")
    out.append("reference")
    return out


# --- propagations -------------------------------------------------------------------------


def ours_prepare(backend: str, lens, M, win_p, win_f) -> Callable[[torch.Tensor], Callable]:
    def prepare(w: torch.Tensor):
        s = gops.window_norm(w, lens, M, win_p, win_f, "per_edge", backend)
        if s.dtype != w.dtype:
            s = s.to(w.dtype)
        return lambda z: gops.window_spmm(z, w.to(z.dtype), s.to(z.dtype), lens, M, win_p, win_f, "per_edge", backend)

    return prepare


def dense_prepare(lens, M, win_p, win_f, capacity: int = ORIGINAL_EDGE_CAPACITY):
    """The original ``HeterGConv_Edge`` normalisation: Python-loop edges, dense adjacency,
    dense diagonal products, once per forward; ``spmm(gcn_fact, z)`` per layer."""
    n_nodes = M * sum(lens)

    def prepare(w: torch.Tensor):
        edge_index = gdense.original_edge_index(lens, M, win_p, win_f).to(w.device)  # Python loops
        E = edge_index.shape[1]
        if E > capacity:
            raise EdgeCapacityExceeded(f"edge-capacity exceeded: E = {E} > {capacity}")
        adj = torch.sparse_coo_tensor(edge_index, w[:E], size=(n_nodes, n_nodes), check_invariants=False).to_dense()
        row_sum = torch.sum(adj, dim=1)
        d_inv_sqrt = torch.pow(row_sum, -0.5)
        d_inv_sqrt = d_inv_sqrt.masked_fill(d_inv_sqrt == float("inf"), 0)  # original: in-place masked assignment
        d_mat = torch.diag_embed(d_inv_sqrt)
        gcn_fact = torch.matmul(d_mat, torch.matmul(adj, d_mat))
        return lambda z: torch.mm(gcn_fact.to(z.dtype), z)  # original: torch.spmm(adj, support), dense adj

    return prepare


def scatter_prepare(lens, M, win_p, win_f):
    """PyG-style gather / scatter-add message passing (GCNConv's gcn_norm without self-loops)."""
    n_nodes = M * sum(lens)

    def prepare(w: torch.Tensor):
        row, col = gops.window_edge_index(lens, M, win_p, win_f, device=w.device)
        w = w[: row.numel()]
        deg = torch.zeros(n_nodes, dtype=w.dtype, device=w.device).index_add(0, row, w)
        s = deg.pow(-0.5)
        s = s.masked_fill(s == float("inf"), 0)
        norm = s.index_select(0, row) * w * s.index_select(0, col)

        def propagate(z: torch.Tensor) -> torch.Tensor:
            msg = z.index_select(0, col) * norm.to(z.dtype)[:, None]  # [E, D]
            return torch.zeros_like(z).index_add(0, row, msg)

        return propagate

    return prepare


def floor_prepare():
    return lambda w: (lambda z: z)


def make_prepare(provider: str, lens, M, win_p, win_f, dense_capacity: int = ORIGINAL_EDGE_CAPACITY):
    if provider in OUR_BACKENDS:
        return ours_prepare(provider, lens, M, win_p, win_f)
    if provider == "dense":
        return dense_prepare(lens, M, win_p, win_f, dense_capacity)
    if provider == "scatter":
        return scatter_prepare(lens, M, win_p, win_f)
    if provider == "floor":
        return floor_prepare()
    raise ValueError(f"unknown provider {provider!r}; choose from {OUR_BACKENDS + BASELINES}")


# --- the stack ----------------------------------------------------------------------------


class GraphStack(nn.Module):
    """One GraphSmile graph module without dropout: ``K`` SGConv layers ``W_l [D, D]``,
    ``b_l [D]`` and ``K`` residual ``Linear(D, D) -> LeakyReLU`` terms, plus the per-edge
    weight vector (``capacity`` entries, uniform in [0.5, 1.5) so that correctness checks see
    non-trivial weights; the original initialises ones, which changes nothing in the timing)."""

    def __init__(self, dim: int, layers: int, capacity: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / dim ** 0.5
        self.weights = nn.ParameterList(nn.Parameter((torch.rand(dim, dim, generator=g) * 2 - 1) * bound) for _ in range(layers))
        self.biases = nn.ParameterList(nn.Parameter((torch.rand(dim, generator=g) * 2 - 1) * bound) for _ in range(layers))
        self.fcs = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        with torch.no_grad():
            for fc in self.fcs:
                fc.weight.copy_((torch.rand(dim, dim, generator=g) * 2 - 1) * bound)
                fc.bias.copy_((torch.rand(dim, generator=g) * 2 - 1) * bound)
        self.edge_weight = nn.Parameter(torch.rand(capacity, generator=g) + 0.5)

    def forward(self, x: torch.Tensor, prepare, num_edges: int) -> torch.Tensor:
        w = self.edge_weight[:num_edges]
        propagate = prepare(w)  # once per forward, shared by every layer
        out = x
        h = x
        for W, b, fc in zip(self.weights, self.biases, self.fcs):
            h = propagate(torch.matmul(h, W)) + b
            out = out + F.leaky_relu(fc(h))
        return out


# --- memory estimates (guards) --------------------------------------------------------------


def estimate_stack_bytes(provider: str, lens: Sequence[int], M: int, dim: int, layers: int, win_p: int, win_f: int, itemsize: int) -> int:
    """Rough peak memory of one forward+backward, used only to skip runs that cannot fit.

    Activations of any provider: about 3.5 ``[MN, D]`` tensors per layer (SPEC 9's floor: 1.5 GB
    at B=16, L=1000, D=512, K=7). ``dense`` adds about 12
    ``[MN, MN]`` matrices (adjacency, diagonals, two products and their gradients); ``scatter``
    keeps one ``[E, D]`` message tensor per layer for backward plus about two transient ones.
    """
    n = M * sum(lens)
    act = int((3.5 * layers + 4) * n * dim * itemsize)
    if provider == "dense":
        return act + 12 * n * n * itemsize
    if provider == "scatter":
        E = gops.num_edges(list(lens), M, win_p, win_f)
        return act + (layers + 3) * E * dim * itemsize + 6 * E * 8
    if provider == "reference":
        # autograd keeps one gathered [N, D] tensor per window offset and modality pair per layer
        span = (win_p + win_f + 1) if win_p >= 0 and win_f >= 0 else max(lens)
        return act + layers * span * n * dim * itemsize
    return act


def estimate_shift_loss_bytes(provider: str, lens: Sequence[int], dim: int, shift_win: int, itemsize: int) -> int:
    """Rough peak of the shift head + loss forward + backward (bench/ops.py ``shift_loss``). Ours
    (fused): O(N) only; ``unfused``: the ``[P, 2]`` logits, their fp32 log-probabilities and
    gradients, the int64 labels and predictions; ``dense``: that plus the ``[P, 2D]`` embeddings."""
    P = gops.num_shift_pairs(list(lens), shift_win)
    nodes = 4 * sum(lens) * dim * itemsize
    if provider in OUR_BACKENDS and provider != "reference":
        return nodes + 64 * sum(lens)
    per_pair = 4 * 2 * itemsize + 3 * 2 * 4 + 2 * 8
    if provider == "reference":
        return P * (per_pair + 16) + nodes
    if provider == "dense":
        return 3 * P * 2 * dim * itemsize + P * per_pair
    return P * per_pair + nodes


def estimate_shift_bytes(provider: str, lens: Sequence[int], dim: int, shift_win: int, itemsize: int) -> int:
    """Rough peak of shift_pair_logits forward + backward with its ``[P, 2]`` output gradient.
    ``dense``: the ``[P, 2D]`` embeddings (+ chunks and their gradient); ``reference``: the
    ``[2, P]`` int64 pair index and two ``[P, 2]`` gathers; the kernels: the ``[P, 2]`` logits,
    their gradient and one transient of that size."""
    P = gops.num_shift_pairs(list(lens), shift_win)
    nodes = 4 * sum(lens) * dim * itemsize
    if provider == "dense":
        return 3 * P * 2 * dim * itemsize
    if provider == "reference":
        return P * (16 + 5 * 2 * itemsize) + nodes
    return 4 * P * 2 * itemsize + nodes
