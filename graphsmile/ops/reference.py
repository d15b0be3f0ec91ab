"""Pure-torch reference implementation of the graph ops (backend ``"reference"``).

Vectorised over utterances: the banded adjacency is walked one diagonal at a time (one window
offset ``delta = k - j`` per step, one modality pair at a time), so memory stays O(N * D) and
there is no Python loop over dialogues, edges or pairs; gradients come from torch.autograd,
independently of the hand-derived formulas in the kernels. It is also the fallback when the
compiled extension is missing, and runs on any device.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .index import _lo, _row_start, node_table, shift_pair_index

PER_EDGE, RELATIVE = 0, 1


def _diagonals(lengths: Sequence[int], num_modal: int, win_p: int, win_f: int, device):
    """Yields (m, n, p, delta, valid [N] bool, weight_slot [N] long, col [N] long) for each
    modality pair and window offset. ``weight_slot`` is the per-edge id; ``col`` the packed
    utterance of the column (clamped where invalid)."""
    t = node_table(lengths, device=device)
    Lmax = max(lengths)
    # offsets beyond the longest dialogue have no edges: a window of 10**6 costs what -1 does
    d_lo = -(Lmax - 1) if win_p < 0 else -min(win_p, Lmax - 1)
    d_hi = (Lmax - 1) if win_f < 0 else min(win_f, Lmax - 1)
    L = t.length
    band = _row_start(L, L, win_p, win_f)  # c(L_b) per utterance
    # first edge id of each utterance's dialogue
    lens = torch.tensor(list(lengths), dtype=torch.long, device=device)
    per_dia = num_modal * (num_modal - 1) * _row_start(lens, lens, win_p, win_f)
    edge_base = (torch.cumsum(per_dia, 0) - per_dia)[t.dialogue]
    row_start = _row_start(t.local, L, win_p, win_f) - _lo(t.local, win_p)
    for m in range(num_modal):
        for n in range(num_modal):
            if m == n:
                continue
            p = m * (num_modal - 1) + n - (1 if n > m else 0)
            for delta in range(d_lo, d_hi + 1):
                k = t.local + delta
                valid = (k >= 0) & (k < L)
                if not bool(valid.any()):
                    continue
                slot = edge_base + p * band + row_start + k
                col = (t.start + k).clamp(0, L.numel() - 1)
                yield m, n, p, delta, valid, slot, col


def _edge_weights(edge_weight, mode, p, delta, slot, valid, win_p, win_f):
    if mode == RELATIVE:
        w = edge_weight.reshape(-1)[p * (win_p + win_f + 1) + delta + win_p]
        return torch.where(valid, w, torch.zeros((), dtype=edge_weight.dtype, device=edge_weight.device))
    w = edge_weight.reshape(-1)[torch.where(valid, slot, 0)]
    return torch.where(valid, w, torch.zeros((), dtype=w.dtype, device=w.device))


def masked_rsqrt(d: torch.Tensor) -> torch.Tensor:
    """d^{-1/2} with the original's masked assignment: 0 where d == 0 (gradient 0 there), NaN
    where d < 0."""
    zero = d == 0
    return torch.where(zero, torch.zeros_like(d), torch.where(zero, torch.ones_like(d), d).pow(-0.5))


def window_norm(edge_weight, lengths: Sequence[int], num_modal: int, win_p: int, win_f: int, mode: int):
    """s = d^{-1/2}, d_i = sum of the weights of edges leaving node i. ``[M*N]``, in the weights'
    dtype; fp16/bf16 degrees are summed in fp32 as by the kernels (an fp16 sum overflows above
    65504, and ``inf^{-1/2} = 0`` would silently zero those rows)."""
    N = sum(lengths)
    acc_dtype = torch.promote_types(edge_weight.dtype, torch.float32)
    d = [edge_weight.new_zeros(N, dtype=acc_dtype) for _ in range(num_modal)]
    for m, n, p, delta, valid, slot, col in _diagonals(lengths, num_modal, win_p, win_f, edge_weight.device):
        d[m] = d[m] + _edge_weights(edge_weight, mode, p, delta, slot, valid, win_p, win_f).to(acc_dtype)
    return masked_rsqrt(torch.cat(d)).to(edge_weight.dtype)


def window_spmm(x, edge_weight, norm, lengths: Sequence[int], num_modal: int, win_p: int, win_f: int, mode: int):
    """y_i = s_i sum_{e=(i,j)} a_e s_j x_j. ``x``: ``[M*N, D]``; returns the same shape."""
    N = sum(lengths)
    M = num_modal
    xs = x.reshape(M, N, -1)
    s = norm.reshape(M, N)
    acc = [x.new_zeros(N, x.shape[1]) for _ in range(M)]
    for m, n, p, delta, valid, slot, col in _diagonals(lengths, M, win_p, win_f, x.device):
        coef = _edge_weights(edge_weight, mode, p, delta, slot, valid, win_p, win_f) * s[n][col]
        # masked after the product: a NaN/inf of a clamped (invalid) column must not leak in
        coef = torch.where(valid, coef, torch.zeros((), dtype=coef.dtype, device=coef.device))
        rows = torch.where(valid[:, None], xs[n].index_select(0, col), torch.zeros((), dtype=x.dtype, device=x.device))
        acc[m] = acc[m] + coef[:, None].to(x.dtype) * rows
    return (s[:, :, None] * torch.stack(acc)).reshape(M * N, -1)


def shift_pair_sum(a, b, lengths: Sequence[int], shift_win: int):
    """out[pair(i, j)] = a_i + b_j over the shift pairs (SPEC 4). ``[P, C]``."""
    idx = shift_pair_index(lengths, shift_win, device=a.device)
    return a.index_select(0, idx[0]) + b.index_select(0, idx[1])


def shift_pair_embeddings(u, v, lengths: Sequence[int], shift_win: int):
    """concat(u_i, v_j) over the shift pairs. ``[P, 2D]`` (only because it was asked for)."""
    idx = shift_pair_index(lengths, shift_win, device=u.device)
    return torch.cat([u.index_select(0, idx[0]), v.index_select(0, idx[1])], dim=1)


def shift_pair_nll(a, b, sentiment, lengths: Sequence[int], shift_win: int):
    """The shift head's NLL summed over the pairs, and the confusion counts (SPEC 4).

    ``a, b``: ``[N, 2]`` (``a_i = W_u u_i + bias``, ``b_j = W_v v_j``); ``sentiment``: ``[N]``
    integer classes. Per pair ``z = a_i + b_j`` (in ``a``'s dtype, as :func:`shift_pair_sum`),
    ``y = sentiment_i != sentiment_j``; returns ``(sum over pairs of -log_softmax(z)[y]``
    (a 0-dim tensor in float32, float64 for float64 inputs), ``confusion [2, 2]`` int64 indexed
    ``[y, argmax z]``). Differentiable through torch.autograd; builds ``[P, 2]`` tensors, so it
    is the yardstick of the fused kernels, not a substitute for them on long dialogues.
    """
    idx = shift_pair_index(lengths, shift_win, device=a.device)
    z = a.index_select(0, idx[0]) + b.index_select(0, idx[1])
    y = (sentiment.index_select(0, idx[0]) != sentiment.index_select(0, idx[1])).long()
    return nll_from_logits(z, y)


def nll_from_logits(z, labels):
    """``(sum over pairs of -log_softmax(z)[label], confusion [2, 2] int64)`` of ``[P, 2]`` shift
    logits and their ``[P]`` labels: the loss in float32 (float64 for float64 logits), the
    confusion indexed ``[label, argmax z]`` (a tie predicts 0). The ``[P, 2]`` path of the
    shift loss, shared by the reference, the dense backend and the trainer's ``"logits"`` mode."""
    z = z.to(torch.float64 if z.dtype == torch.float64 else torch.float32)
    loss = torch.nn.functional.cross_entropy(z, labels, reduction="sum")
    with torch.no_grad():
        confusion = torch.bincount(2 * labels + (z[:, 1] > z[:, 0]).long(), minlength=4).reshape(2, 2)
    return loss, confusion
