"""The original GraphSmile math (backend ``"dense"``), kept for tests and benchmarks.

Re-implemented from SPEC 2-4, not copied: a dense ``[M*N, M*N]`` adjacency built from the edge
list, row-sum degrees, ``pow(-0.5)`` with the masked assignment of infinities, and products
with dense diagonal matrices (O((MN)^2) memory, O((MN)^3) time, as in the original); shift pairs
materialised as ``[P, 2D]`` embeddings chunk by chunk. ``original_edge_index`` and
``original_shift_pairs`` build the structures with the original's Python loops, for the
benchmark baseline and as an independent check of the canonical order.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch

from .index import relative_weight_index, window_edge_index

PER_EDGE, RELATIVE = 0, 1


def original_edge_index(lengths: Sequence[int], num_modal: int, win_p: int, win_f: int) -> torch.Tensor:
    """The original's Python-loop edge construction (SPEC 2 order). ``LongTensor[2, E]``."""
    N = sum(lengths)
    rows, cols = [], []
    start = 0
    for L in lengths:
        nodes = [[m * N + start + t for t in range(L)] for m in range(num_modal)]
        for m, n in itertools.permutations(range(num_modal), 2):
            for j, node_m in enumerate(nodes[m]):
                lo = 0 if win_p == -1 else max(0, j - win_p)
                hi = L if win_f == -1 else min(L, j + win_f + 1)
                for node_n in nodes[n][lo:hi]:
                    rows.append(node_m)
                    cols.append(node_n)
        start += L
    return torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)


def per_edge_weights(edge_weight, lengths, num_modal, win_p, win_f, mode, edge_index):
    E = edge_index.shape[1]
    if mode == RELATIVE:
        return edge_weight.reshape(-1)[relative_weight_index(lengths, num_modal, win_p, win_f, device=edge_weight.device)]
    return edge_weight[:E]


def dense_adjacency(edge_weight, lengths, num_modal, win_p, win_f, mode):
    N = num_modal * sum(lengths)
    ei = window_edge_index(lengths, num_modal, win_p, win_f, device=edge_weight.device)
    w = per_edge_weights(edge_weight, lengths, num_modal, win_p, win_f, mode, ei)
    return torch.sparse_coo_tensor(ei, w, size=(N, N), check_invariants=False).to_dense()


def _masked_rsqrt(d):
    # The original: d_inv_sqrt = pow(d, -0.5); d_inv_sqrt[d_inv_sqrt == inf] = 0. Its autograd
    # turns 0 * inf into NaN on the zero-degree rows; SPEC 3 has that path vanish, so the
    # masked rows take no gradient here (same forward values).
    zero = d == 0
    return torch.where(zero, torch.zeros_like(d), torch.where(zero, torch.ones_like(d), d).pow(-0.5))


def window_norm(edge_weight, lengths, num_modal, win_p, win_f, mode):
    adj = dense_adjacency(edge_weight, lengths, num_modal, win_p, win_f, mode)
    return _masked_rsqrt(adj.sum(dim=1))


def window_spmm(x, edge_weight, norm, lengths, num_modal, win_p, win_f, mode):
    adj = dense_adjacency(edge_weight, lengths, num_modal, win_p, win_f, mode).to(x.dtype)
    dmat = torch.diag_embed(norm.to(x.dtype))
    gcn_fact = torch.matmul(dmat, torch.matmul(adj, dmat))
    return torch.matmul(gcn_fact, x)


def original_shift_pairs(u, v, lengths: Sequence[int], shift_win: int):
    """The original's chunk loop: ``[P, 2D]`` pair embeddings built with repeat/cat."""
    out = []
    start = 0
    for L in lengths:
        win = L if shift_win == -1 else shift_win
        for c in range(math.ceil(L / win)):
            s = start + c * win
            w = min(win, start + L - s)
            out.append(
                torch.cat([u[s : s + w, None, :].repeat(1, w, 1), v[None, s : s + w, :].repeat(w, 1, 1)], dim=-1).reshape(w * w, -1)
            )
        start += L
    return torch.cat(out, dim=0)


def shift_pair_embeddings(u, v, lengths, shift_win):
    return original_shift_pairs(u, v, lengths, shift_win)


def shift_pair_logits(u, v, lengths, shift_win, weight, bias):
    return torch.nn.functional.linear(original_shift_pairs(u, v, lengths, shift_win), weight, bias)
