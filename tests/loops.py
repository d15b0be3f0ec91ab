"""Plain-loop implementations of SPEC 2-4 written for the tests, independent of the package:
explicit Python loops over dialogues, modality pairs, rows and columns; fp64; no vectorisation."""
import itertools
import math

import torch


def edges(lengths, M, win_p, win_f):
    """[(row, col), ...] in the canonical order of SPEC 2."""
    N = sum(lengths)
    out = []
    s = 0
    for L in lengths:
        for m, n in itertools.permutations(range(M), 2):
            for j in range(L):
                lo = 0 if win_p == -1 else max(0, j - win_p)
                hi = L if win_f == -1 else min(L, j + win_f + 1)
                for k in range(lo, hi):
                    out.append((m * N + s + j, n * N + s + k))
        s += L
    return out


def per_edge_weights(edge_weight, lengths, M, win_p, win_f, mode):
    """The weight of each edge, in edge order, as a list of 0-d tensors (autograd-friendly)."""
    N = sum(lengths)
    flat = edge_weight.reshape(-1)
    ws = []
    for e, (r, c) in enumerate(edges(lengths, M, win_p, win_f)):
        if mode == "relative":
            m, j, n, k = r // N, r % N, c // N, c % N
            p = m * (M - 1) + n - (1 if n > m else 0)
            ws.append(flat[p * (win_p + win_f + 1) + (k - j) + win_p])
        else:
            ws.append(flat[e])
    return ws


def propagate(x, edge_weight, lengths, M, win_p, win_f, mode="per_edge"):
    """y = diag(s) A diag(s) x with loops; differentiable through torch.stack of scalars."""
    n_nodes = x.shape[0]
    es = edges(lengths, M, win_p, win_f)
    ws = per_edge_weights(edge_weight, lengths, M, win_p, win_f, mode)
    deg = [x.new_zeros(()) for _ in range(n_nodes)]
    for (r, c), w in zip(es, ws):
        deg[r] = deg[r] + w
    s = []
    for d in deg:
        s.append(torch.zeros((), dtype=x.dtype) if float(d.detach()) == 0.0 else d.pow(-0.5))
    rows = [x.new_zeros(x.shape[1]) for _ in range(n_nodes)]
    for (r, c), w in zip(es, ws):
        rows[r] = rows[r] + s[r] * w * s[c] * x[c]
    return torch.stack(rows)


def shift_pairs(lengths, shift_win):
    """[(i, j), ...] packed utterance pairs in the order of SPEC 4."""
    out = []
    s = 0
    for L in lengths:
        w = L if shift_win == -1 else shift_win
        for c in range(math.ceil(L / w)):
            cs = s + c * w
            ce = min(cs + w, s + L)
            for i in range(cs, ce):
                for j in range(cs, ce):
                    out.append((i, j))
        s += L
    return out
