"""Triton kernels of the graph ops (backend ``"triton"``); the ops around them are in
``triton_ops.py``. Imported lazily, only when ``backend="triton"`` is used: ``import triton``
happens here and nowhere else in graphsmile.

Index math mirrors ``kernels/window_index.h`` (SPEC 2, 4, 5). Node layout: ``x`` is
``[M*N, D]`` modality-major; a *row tile* is ``BLOCK_R`` consecutive packed utterances
``t0 .. t0+BLOCK_R-1`` of one modality. Tiles may straddle dialogues: every row looks up its
dialogue in a per-utterance table ``dia`` ([N] int32) and the per-dialogue table ``dtab``
([4, B] int64: start s_b, length L_b, edge base, band count c(L_b)). Because the window bounds
``s_b + lo(j)`` and ``s_b + hi(j)`` are non-decreasing in the packed index, the columns a row
tile needs form one contiguous packed range ``[col_lo, col_hi)`` (at most
``BLOCK_R + win_p + win_f`` wide for finite windows; the dialogue(s) for unbounded ones); the
kernels walk it in chunks of ``BLOCK_K`` columns, build the dense ``[BLOCK_R, BLOCK_K]`` tile of
the normalised adjacency in registers (zero outside the band and across dialogues) and multiply
with ``tl.dot`` (fp32 accumulation). Nothing is accumulated with atomics: every output element
is written by exactly one program, so results are deterministic and every kernel is idempotent
(safe to re-run while autotuning). The tile sizes set the order of the sums (chunk boundaries,
``tl.dot``'s grouping, the column pass's per-tile partials), so bits are the same for one tile
choice; ``PINNED`` fixes that choice across processes (``triton_ops.pinned_tiles``).

fp64 inputs take a non-``tl.dot`` path (broadcast multiply + ``tl.sum``, fp64 accumulation) with
small fixed tiles.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _fix_interpreter_index() -> None:
    """Triton <= 3.6's interpreter converts a tensor used as a ``range`` bound with
    ``int(ndarray)``, which numpy >= 2.4 refuses for the 1-element arrays it holds (fixed in
    Triton 3.8 with ``.squeeze()``). Under ``TRITON_INTERPRET=1`` only, and only when that
    conversion is broken, re-register ``__index__`` the way newer Triton does."""
    try:
        import numpy as np
        from triton.runtime import interpreter as interp
    except Exception:  # pragma: no cover
        return
    try:
        int(np.zeros(1, dtype=np.int64))
        return  # old numpy: the original works
    except TypeError:
        pass
    orig = getattr(interp, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_graphsmile_fixed", False):
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched._graphsmile_fixed = True
    interp._patch_lang_tensor = patched


if INTERPRET:
    _fix_interpreter_index()

# Smallest BLOCK_D of every configuration of the backward column pass; its partial <x_c, u_c>
# buffer has cdiv(D, BD_MIN) rows whatever configuration runs (see _spmm_bwd_cols_kernel).
BD_MIN = 16 if INTERPRET else 32


# --------------------------------------------------------------------------------------------
# index helpers (window_index.h)


@triton.jit
def _row_setup(t, rmask, dia_ptr, dtab_ptr, B, WP: tl.constexpr, WF: tl.constexpr, MODE: tl.constexpr):
    """For packed utterances t (rows of any modality): the packed column window [clo, chi) and
    the weight address of edge (row t, packed column c) of modality pair p, which is
    ``wb0 + p * wstep + c`` (MODE 0: the edge id, window_index.h; MODE 1: the entry
    ``p * (WP + WF + 1) + (k - j + WP)`` of the relative table). Only valid where c is in the
    window (which also puts it in t's dialogue)."""
    b = tl.load(dia_ptr + t, mask=rmask, other=0).to(tl.int64)
    s0 = tl.load(dtab_ptr + b)
    L = tl.load(dtab_ptr + B + b)
    j = t - s0
    if WP < 0:
        lo = j * 0
    else:
        lo = tl.maximum(j - WP, 0)
    if WF < 0:
        hi = L
    else:
        hi = tl.minimum(L, j + (WF + 1))
    if MODE == 0:
        eb = tl.load(dtab_ptr + 2 * B + b)
        bc = tl.load(dtab_ptr + 3 * B + b)
        # window_row_start(j, L): sum_{u<j} (hi(u) - lo(u)) in O(1)
        if WF < 0:
            rs = j * L
        else:
            cnt = tl.minimum(tl.maximum(L - WF, 0), j)
            rs = cnt * (WF + 1) + (cnt * (cnt - 1)) // 2 + (j - cnt) * L
        if WP >= 0:
            q = tl.maximum(j - 1 - WP, 0)
            rs = rs - (q * (q + 1)) // 2
        wb0 = eb + rs - lo - s0
        wstep = bc
    else:
        wb0 = WP - j - s0
        wstep = j * 0 + (WP + WF + 1)
    return s0 + lo, s0 + hi, wb0, wstep


@triton.jit
def _mm(a, b, ACC64: tl.constexpr, IEEE: tl.constexpr, EMU_BF16: tl.constexpr):
    """a [P, Q] @ b [Q, R] with fp32 (fp64) accumulation. EMU_BF16 (only set under the
    interpreter, whose bf16 ``tl.dot`` is wrong in Triton 3.6): the bf16 operands widened to
    fp32 first, which is exact, so the product is the one a GPU's bf16 ``tl.dot`` computes."""
    if ACC64:
        return tl.sum(a.to(tl.float64)[:, :, None] * b.to(tl.float64)[None, :, :], axis=1)
    elif EMU_BF16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        if IEEE:
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b)


# --------------------------------------------------------------------------------------------
# window_norm: s_i = d_i^{-1/2}, d_i = sum_{e=(i,.)} a_e.   grid (cdiv(N, BLOCK_R), M)


@triton.jit
def _row_norm(w_ptr, m, rmask, clo, chi, wb0, wstep, col_lo, col_hi,
              M: tl.constexpr, ACC64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """s_i = d_i^{-1/2} of the block's rows of modality m, in the accumulation dtype."""
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    d = tl.zeros([BLOCK_R], dtype=ACC)
    for nn in tl.static_range(M - 1):
        wbase = wb0 + (m * (M - 1) + nn) * wstep
        for c0 in range(col_lo, col_hi, BLOCK_K):
            c = c0 + tl.arange(0, BLOCK_K)
            valid = rmask[:, None] & (c[None, :] >= clo[:, None]) & (c[None, :] < chi[:, None])
            a = tl.load(w_ptr + (wbase[:, None] + c[None, :]), mask=valid, other=0.0).to(ACC)
            d += tl.sum(a, axis=1)
    # d^{-1/2}; 0 where d == 0 (the original's masked assignment); NaN where d < 0.
    dz = tl.where(d == 0, 1.0, d)
    if ACC64:
        r = 1.0 / tl.sqrt(dz)
    else:
        r = tl.div_rn(tl.full([BLOCK_R], 1.0, tl.float32), tl.sqrt_rn(dz))
    return tl.where(d == 0, 0.0, r)


@triton.jit
def _norm_fwd_kernel(w_ptr, s_ptr, dia_ptr, dtab_ptr, N, B,
                     M: tl.constexpr, WP: tl.constexpr, WF: tl.constexpr, MODE: tl.constexpr,
                     ACC64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.program_id(1)
    t = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = t < N
    clo, chi, wb0, wstep = _row_setup(t, rmask, dia_ptr, dtab_ptr, B, WP, WF, MODE)
    col_lo = tl.min(tl.where(rmask, clo, N))
    col_hi = tl.max(tl.where(rmask, chi, 0))
    s = _row_norm(w_ptr, m, rmask, clo, chi, wb0, wstep, col_lo, col_hi, M, ACC64, BLOCK_R, BLOCK_K)
    tl.store(s_ptr + m * N + t, s.to(s_ptr.dtype.element_ty), mask=rmask)


# grad_a_e = -0.5 s_i^3 grad_s_i for every edge leaving row i.   grid (cdiv(N, BLOCK_R), M*(M-1))
# MODE 0 writes gw[edge id]; MODE 1 writes rel[p, k - j + WP, t] (summed over t on the host).
# RECOMPUTE (fp16/bf16): s_i recomputed from the weights in fp32 instead of read rounded, since
# -0.5 s_i^3 would triple its rounding error (up to 1.5 ulp); the gradient is rounded once.
@triton.jit
def _norm_bwd_kernel(gs_ptr, s_ptr, w_ptr, gw_ptr, rel_ptr, dia_ptr, dtab_ptr, N, B,
                     M: tl.constexpr, WP: tl.constexpr, WF: tl.constexpr, MODE: tl.constexpr,
                     ACC64: tl.constexpr, RECOMPUTE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    p = tl.program_id(1)
    m = p // (M - 1)
    t = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = t < N
    clo, chi, wb0, wstep = _row_setup(t, rmask, dia_ptr, dtab_ptr, B, WP, WF, MODE)
    col_lo = tl.min(tl.where(rmask, clo, N))
    col_hi = tl.max(tl.where(rmask, chi, 0))
    wbase = wb0 + p * wstep
    if RECOMPUTE:
        si = _row_norm(w_ptr, m, rmask, clo, chi, wb0, wstep, col_lo, col_hi, M, ACC64, BLOCK_R, BLOCK_K)
    else:
        si = tl.load(s_ptr + m * N + t, mask=rmask, other=0.0).to(ACC)
    g = tl.load(gs_ptr + m * N + t, mask=rmask, other=0.0).to(ACC)
    v = -0.5 * si * si * si * g
    for c0 in range(col_lo, col_hi, BLOCK_K):
        c = c0 + tl.arange(0, BLOCK_K)
        valid = rmask[:, None] & (c[None, :] >= clo[:, None]) & (c[None, :] < chi[:, None])
        val = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC) + v[:, None]
        widx = wbase[:, None] + c[None, :]
        if MODE == 0:
            tl.store(gw_ptr + widx, val.to(gw_ptr.dtype.element_ty), mask=valid)
        else:
            tl.store(rel_ptr + (widx * N + t[:, None]), val.to(rel_ptr.dtype.element_ty), mask=valid)


# --------------------------------------------------------------------------------------------
# window_spmm forward: y_i = s_i sum_{e=(i,j)} a_e s_j x_j.   grid (cdiv(N, BLOCK_R), M, cdiv(D, BLOCK_D))


@triton.jit
def _spmm_fwd_kernel(x_ptr, w_ptr, s_ptr, y_ptr, dia_ptr, dtab_ptr, N, B, D,
                     M: tl.constexpr, WP: tl.constexpr, WF: tl.constexpr, MODE: tl.constexpr,
                     ACC64: tl.constexpr, IEEE: tl.constexpr, EMU_BF16: tl.constexpr,
                     NB: tl.constexpr,  # node-count bucket: read by the autotuner's key only
                     BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    m = tl.program_id(1)
    t = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = t < N
    dd = tl.program_id(2).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = dd < D
    clo, chi, wb0, wstep = _row_setup(t, rmask, dia_ptr, dtab_ptr, B, WP, WF, MODE)
    col_lo = tl.min(tl.where(rmask, clo, N))
    col_hi = tl.max(tl.where(rmask, chi, 0))
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=ACC)
    for nn in tl.static_range(M - 1):
        n = nn + (m <= nn).to(tl.int32)
        wbase = wb0 + (m * (M - 1) + nn) * wstep
        for c0 in range(col_lo, col_hi, BLOCK_K):
            c = c0 + tl.arange(0, BLOCK_K)
            cmask = c < col_hi
            valid = rmask[:, None] & (c[None, :] >= clo[:, None]) & (c[None, :] < chi[:, None])
            a = tl.load(w_ptr + (wbase[:, None] + c[None, :]), mask=valid, other=0.0).to(ACC)
            sc = tl.load(s_ptr + n * N + c, mask=cmask, other=0.0).to(ACC)
            coef = tl.where(valid, a * sc[None, :], 0.0)
            xt = tl.load(x_ptr + (n * N + c)[:, None] * D + dd[None, :],
                         mask=cmask[:, None] & dmask[None, :], other=0.0)
            acc += _mm(coef.to(xt.dtype), xt, ACC64, IEEE, EMU_BF16)
    si = tl.load(s_ptr + m * N + t, mask=rmask, other=0.0).to(ACC)
    y = si[:, None] * acc
    tl.store(y_ptr + (m * N + t)[:, None] * D + dd[None, :], y.to(y_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])


# Backward pass A, over columns c = (n, k) (the transposed band):
#   u_c = sum_{e=(i,c)} a_e s_i g_i,  grad_x_c = s_c u_c,  grad_s_c (column part) = <x_c, u_c>.
# grid (cdiv(N, BLOCK_R), M, cdiv(D, BLOCK_D)). The partial <x_c, u_c> of this program's D tile
# goes to row pid_d * SUB of gsp ([DT, M*N], DT = cdiv(D, BD_MIN)); it also writes zeros to the
# SUB - 1 rows after it, so that every row of gsp is rewritten whatever BLOCK_D runs (no stale
# partials while autotuning) and gsp.sum(0) is the column part.
@triton.jit
def _spmm_bwd_cols_kernel(g_ptr, x_ptr, w_ptr, s_ptr, gx_ptr, gsp_ptr, dia_ptr, dtab_ptr, N, B, D, DT,
                          M: tl.constexpr, WP: tl.constexpr, WF: tl.constexpr, MODE: tl.constexpr,
                          ACC64: tl.constexpr, IEEE: tl.constexpr, EMU_BF16: tl.constexpr, NEED_GX: tl.constexpr,
                          BD_MIN: tl.constexpr,
                          NB: tl.constexpr,  # node-count bucket: read by the autotuner's key only
                          BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    n = tl.program_id(1)
    pid_d = tl.program_id(2)
    c = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cmask = c < N
    dd = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = dd < D
    # packed rows whose window holds column c (window_row_lo / window_row_hi)
    bcol = tl.load(dia_ptr + c, mask=cmask, other=0).to(tl.int64)
    sc0 = tl.load(dtab_ptr + bcol)
    Lc = tl.load(dtab_ptr + B + bcol)
    if WF < 0:
        rlo = sc0
    else:
        rlo = sc0 + tl.maximum(c - sc0 - WF, 0)
    if WP < 0:
        rhi = sc0 + Lc
    else:
        rhi = sc0 + tl.minimum(Lc, c - sc0 + (WP + 1))
    row_lo = tl.min(tl.where(cmask, rlo, N))
    row_hi = tl.max(tl.where(cmask, rhi, 0))
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=ACC)
    for r0 in range(row_lo, row_hi, BLOCK_K):
        t = r0 + tl.arange(0, BLOCK_K)
        tmask = t < row_hi
        clo, chi, wb0, wstep = _row_setup(t, tmask, dia_ptr, dtab_ptr, B, WP, WF, MODE)
        valid = cmask[:, None] & tmask[None, :] & (c[:, None] >= clo[None, :]) & (c[:, None] < chi[None, :])
        for mm in tl.static_range(M - 1):
            m = mm + (n <= mm).to(tl.int32)
            p = m * (M - 1) + n - (n > m).to(tl.int32)
            a = tl.load(w_ptr + ((wb0 + p * wstep)[None, :] + c[:, None]), mask=valid, other=0.0).to(ACC)
            sr = tl.load(s_ptr + m * N + t, mask=tmask, other=0.0).to(ACC)
            coef = tl.where(valid, a * sr[None, :], 0.0)
            gt = tl.load(g_ptr + (m * N + t)[:, None] * D + dd[None, :],
                         mask=tmask[:, None] & dmask[None, :], other=0.0)
            acc += _mm(coef.to(gt.dtype), gt, ACC64, IEEE, EMU_BF16)
    cm2 = cmask[:, None] & dmask[None, :]
    if NEED_GX:
        sc = tl.load(s_ptr + n * N + c, mask=cmask, other=0.0).to(ACC)
        tl.store(gx_ptr + (n * N + c)[:, None] * D + dd[None, :], (sc[:, None] * acc).to(gx_ptr.dtype.element_ty),
                 mask=cm2)
    xc = tl.load(x_ptr + (n * N + c)[:, None] * D + dd[None, :], mask=cm2, other=0.0).to(ACC)
    part = tl.sum(xc * acc, axis=1)
    SUB: tl.constexpr = BLOCK_D // BD_MIN
    for q in tl.static_range(SUB):
        row = pid_d * SUB + q
        if q == 0:
            val = part
        else:
            val = tl.zeros_like(part)  # not part * 0: that is NaN where part is inf
        tl.store(gsp_ptr + row.to(tl.int64) * (M * N) + n * N + c, val.to(gsp_ptr.dtype.element_ty),
                 mask=cmask & ((c * 0 + row) < DT))


# Backward pass B, over rows i = (m, j), one modality pair p = (m, n) per program:
#   dot_e = <g_i, x_j>,  grad_a_e = s_i s_j dot_e,  grad_s_i (row part) += sum_e a_e s_j dot_e.
# grid (cdiv(N, BLOCK_R), M*(M-1)); the row part of pair p goes to gsp[p % (M-1), m*N + t]
# (summed over the M-1 pairs on the host). MODE 1 writes per-edge grads to rel[p, k-j+WP, t].
@triton.jit
def _spmm_bwd_rows_kernel(g_ptr, x_ptr, w_ptr, s_ptr, gw_ptr, rel_ptr, gsp_ptr, dia_ptr, dtab_ptr, N, B, D,
                          M: tl.constexpr, WP: tl.constexpr, WF: tl.constexpr, MODE: tl.constexpr,
                          ACC64: tl.constexpr, IEEE: tl.constexpr, EMU_BF16: tl.constexpr, NEED_GW: tl.constexpr,
                          NB: tl.constexpr,  # node-count bucket: read by the autotuner's key only
                          BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    p = tl.program_id(1)
    m = p // (M - 1)
    nn = p % (M - 1)
    n = nn + (m <= nn).to(tl.int32)
    t = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = t < N
    clo, chi, wb0, wstep = _row_setup(t, rmask, dia_ptr, dtab_ptr, B, WP, WF, MODE)
    col_lo = tl.min(tl.where(rmask, clo, N))
    col_hi = tl.max(tl.where(rmask, chi, 0))
    wbase = wb0 + p * wstep
    grow = (m * N + t) * D
    gs_row = tl.zeros([BLOCK_R], dtype=ACC)
    for c0 in range(col_lo, col_hi, BLOCK_K):
        c = c0 + tl.arange(0, BLOCK_K)
        cmask = c < col_hi
        xrow = (n * N + c) * D
        dots = tl.zeros([BLOCK_R, BLOCK_K], dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            dmask = dd < D
            gt = tl.load(g_ptr + grow[:, None] + dd[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
            xt = tl.load(x_ptr + xrow[:, None] + dd[None, :], mask=cmask[:, None] & dmask[None, :], other=0.0)
            dots += _mm(gt, tl.trans(xt), ACC64, IEEE, EMU_BF16)
        valid = rmask[:, None] & (c[None, :] >= clo[:, None]) & (c[None, :] < chi[:, None])
        widx = wbase[:, None] + c[None, :]
        a = tl.load(w_ptr + widx, mask=valid, other=0.0).to(ACC)
        sc = tl.load(s_ptr + n * N + c, mask=cmask, other=0.0).to(ACC)
        sd = sc[None, :] * dots
        gs_row += tl.sum(tl.where(valid, a * sd, 0.0), axis=1)
        if NEED_GW:
            si = tl.load(s_ptr + m * N + t, mask=rmask, other=0.0).to(ACC)
            ga = si[:, None] * sd
            if MODE == 0:
                tl.store(gw_ptr + widx, ga.to(gw_ptr.dtype.element_ty), mask=valid)
            else:
                tl.store(rel_ptr + (widx * N + t[:, None]), ga.to(rel_ptr.dtype.element_ty), mask=valid)
    tl.store(gsp_ptr + nn * (M * N) + m * N + t, gs_row.to(gsp_ptr.dtype.element_ty), mask=rmask)


# --------------------------------------------------------------------------------------------
# shift pairs: out[pair(i, j)] = a_i + b_j. One program per "line" (a chunk and BLOCK_S of its
# rows, or for the column sums of the backward, BLOCK_S of its columns); ltab is [T, 4] int64:
# (packed chunk start, chunk size, first pair id of the chunk, first row/column of the line).
# grid (T, cdiv(C, BLOCK_C)).


@triton.jit
def _pair_line(ltab_ptr):
    """This program's line of the shift-pair table (triton_ops.pair_lines): the chunk's first
    utterance, its size, its first pair id and the line's first row (or column)."""
    line = tl.program_id(0).to(tl.int64)
    return (tl.load(ltab_ptr + line * 4), tl.load(ltab_ptr + line * 4 + 1), tl.load(ltab_ptr + line * 4 + 2),
            tl.load(ltab_ptr + line * 4 + 3))


@triton.jit
def _pair_sum_fwd_kernel(a_ptr, b_ptr, out_ptr, ltab_ptr, C,
                         ACC64: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    cs, sz, base, i0 = _pair_line(ltab_ptr)
    cc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ccm = cc < C
    i = i0 + tl.arange(0, BLOCK_S)
    im = i < sz
    ai = tl.load(a_ptr + (cs + i)[:, None] * C + cc[None, :], mask=im[:, None] & ccm[None, :], other=0.0)
    for j0 in range(0, sz, BLOCK_S):
        jj = j0 + tl.arange(0, BLOCK_S)
        jm = jj < sz
        bj = tl.load(b_ptr + (cs + jj)[:, None] * C + cc[None, :], mask=jm[:, None] & ccm[None, :], other=0.0)
        v = ai.to(ACC)[:, None, :] + bj.to(ACC)[None, :, :]
        off = (base + i[:, None, None] * sz + jj[None, :, None]) * C + cc[None, None, :]
        msk = im[:, None, None] & jm[None, :, None] & ccm[None, None, :]
        tl.store(out_ptr + off, v.to(out_ptr.dtype.element_ty), mask=msk)


# AXIS 0: ga_i = sum_j g[pair(i, j)] (line = rows); AXIS 1: gb_j = sum_i g[pair(i, j)] (line = columns).
@triton.jit
def _pair_sum_bwd_kernel(g_ptr, out_ptr, ltab_ptr, C,
                         AXIS: tl.constexpr, ACC64: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    cs, sz, base, i0 = _pair_line(ltab_ptr)
    cc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ccm = cc < C
    i = i0 + tl.arange(0, BLOCK_S)  # the line's own rows (AXIS 0) or columns (AXIS 1)
    im = i < sz
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=ACC)
    for j0 in range(0, sz, BLOCK_S):
        jj = j0 + tl.arange(0, BLOCK_S)
        jm = jj < sz
        msk = im[:, None, None] & jm[None, :, None] & ccm[None, None, :]
        if AXIS == 0:
            off = (base + i[:, None, None] * sz + jj[None, :, None]) * C + cc[None, None, :]
        else:
            off = (base + jj[None, :, None] * sz + i[:, None, None]) * C + cc[None, None, :]
        g = tl.load(g_ptr + off, mask=msk, other=0.0).to(ACC)
        acc += tl.sum(g, axis=1)
    tl.store(out_ptr + (cs + i)[:, None] * C + cc[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=im[:, None] & ccm[None, :])


# --------------------------------------------------------------------------------------------
# shift_pair_nll: the shift loss fused with the pair sum (kernels/shift_nll.h). One program per
# line of triton_ops.pair_lines(..., parts=True) (a chunk and BLOCK_S of its rows; the table's
# third column is the chunk's offset pb in the partial-column-sum buffer), walking the chunk's
# columns in tiles of BLOCK_J. Per pair (i, j), with z = a_i + b_j rounded to a's dtype:
#   d = z_1 - z_0, y = (s_i != s_j), x = (y ? -d : d), e = exp(-|x|),
#   loss = max(x, 0) + log1p(e),  r = (y ? -1 : 1) * sigmoid(x),  pred = (d > 0).
# log1p(e) = log(u) + (e - (u - 1)) / u with u = fl(1 + e) (the rounding error of 1 + e corrected
# to first order), reusing the 1 / u of the sigmoid: one exp, one log and one division per pair.
# Outputs, each element written by exactly one program (no atomics):
#   loss_ptr [T]: the line's loss sum;  cnt_ptr [T, 4] int64: its confusion counts [y, pred];
#   WITH_GRAD: rowr_ptr [N]: row_r_i = sum_j r_ij for the line's rows, and
#   colp_ptr [pb + (i0 / BLOCK_S) * size + j]: sum over the line's rows of r_ij (column j),
#   summed over the chunk's lines in fixed order by _pair_nll_cols_kernel.


@triton.jit
def _round_as(x, DT: tl.constexpr, ACC: tl.constexpr, EMU_BF16: tl.constexpr):
    """``x`` (in ACC) rounded to the dtype DT (round to nearest even), back in ACC. EMU_BF16 (only
    set under the interpreter, whose fp32 -> bf16 cast truncates): the same rounding from the
    fp32 bits, NaN kept."""
    if EMU_BF16:
        bits = x.to(tl.int32, bitcast=True)
        rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) & -65536).to(tl.float32, bitcast=True)
        return tl.where(x != x, x, rounded)
    else:
        return x.to(DT).to(ACC)


@triton.jit
def _pair_nll_fwd_kernel(a_ptr, b_ptr, s_ptr, ltab_ptr, loss_ptr, cnt_ptr, rowr_ptr, colp_ptr,
                         ACC64: tl.constexpr, WITH_GRAD: tl.constexpr, EMU_BF16: tl.constexpr,
                         BLOCK_S: tl.constexpr, BLOCK_J: tl.constexpr):
    ACC: tl.constexpr = tl.float64 if ACC64 else tl.float32
    line = tl.program_id(0).to(tl.int64)
    cs, sz, pb, i0 = _pair_line(ltab_ptr)
    i = i0 + tl.arange(0, BLOCK_S)
    im = i < sz
    ti = cs + i
    a0 = tl.load(a_ptr + 2 * ti, mask=im, other=0.0).to(ACC)
    a1 = tl.load(a_ptr + 2 * ti + 1, mask=im, other=0.0).to(ACC)
    si = tl.load(s_ptr + ti, mask=im, other=0)
    colp = colp_ptr + pb + (i0 // BLOCK_S) * sz
    # element-wise accumulators over the column tiles, reduced once at the end
    lacc = tl.zeros([BLOCK_S, BLOCK_J], dtype=ACC)
    racc = tl.zeros([BLOCK_S, BLOCK_J], dtype=ACC)
    ny = tl.zeros([BLOCK_S, BLOCK_J], dtype=tl.int32)
    npr = tl.zeros([BLOCK_S, BLOCK_J], dtype=tl.int32)
    nyp = tl.zeros([BLOCK_S, BLOCK_J], dtype=tl.int32)
    for j0 in range(0, sz, BLOCK_J):
        jj = j0 + tl.arange(0, BLOCK_J)
        jm = jj < sz
        tj = cs + jj
        b0 = tl.load(b_ptr + 2 * tj, mask=jm, other=0.0).to(ACC)
        b1 = tl.load(b_ptr + 2 * tj + 1, mask=jm, other=0.0).to(ACC)
        sj = tl.load(s_ptr + tj, mask=jm, other=0)
        valid = im[:, None] & jm[None, :]
        # the logits rounded to the input dtype, as shift_pair_sum stores them
        z0 = _round_as(a0[:, None] + b0[None, :], a_ptr.dtype.element_ty, ACC, EMU_BF16)
        z1 = _round_as(a1[:, None] + b1[None, :], a_ptr.dtype.element_ty, ACC, EMU_BF16)
        y = si[:, None] != sj[None, :]
        d = z1 - z0
        x = tl.where(y, -d, d)
        e = tl.exp(tl.where(x < 0, x, -x))  # exp(-|x|) in (0, 1]; NaN stays NaN
        u = 1.0 + e
        inv = 1.0 / u
        loss = tl.where(x > 0, x, 0.0) + (tl.log(u) + (e - (u - 1.0)) * inv)
        pred = d > 0
        lacc += tl.where(valid, loss, 0.0)
        ny += (valid & y).to(tl.int32)
        npr += (valid & pred).to(tl.int32)
        nyp += (valid & y & pred).to(tl.int32)
        if WITH_GRAD:
            sig = tl.where(x >= 0, inv, e * inv)  # sigmoid(x) without overflow
            r = tl.where(valid, tl.where(y, -sig, sig), 0.0)
            racc += r
            tl.store(colp + jj, tl.sum(r, axis=0), mask=jm)
    tl.store(loss_ptr + line, tl.sum(tl.sum(lacc, axis=1), axis=0))
    cy = tl.sum(tl.sum(ny.to(tl.int64), axis=1), axis=0)
    cp = tl.sum(tl.sum(npr.to(tl.int64), axis=1), axis=0)
    cyp = tl.sum(tl.sum(nyp.to(tl.int64), axis=1), axis=0)
    tot = tl.minimum(sz - i0, BLOCK_S) * sz  # the line's pairs
    tl.store(cnt_ptr + line * 4, tot - cy - cp + cyp)
    tl.store(cnt_ptr + line * 4 + 1, cp - cyp)
    tl.store(cnt_ptr + line * 4 + 2, cy - cyp)
    tl.store(cnt_ptr + line * 4 + 3, cyp)
    if WITH_GRAD:
        tl.store(rowr_ptr + ti, tl.sum(racc, axis=1), mask=im)


# col_r_j = sum over the chunk's lines k of colp[pb + k * size + j], in line order. One program
# per line of the same table, read as BLOCK_S columns of the chunk; BLOCK_K lines per step.
@triton.jit
def _pair_nll_cols_kernel(colp_ptr, colr_ptr, ltab_ptr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr):
    cs, sz, pb, j0 = _pair_line(ltab_ptr)
    jj = j0 + tl.arange(0, BLOCK_S)
    jm = jj < sz
    nl = (sz + BLOCK_S - 1) // BLOCK_S
    acc = tl.zeros([BLOCK_K, BLOCK_S], dtype=colp_ptr.dtype.element_ty)
    for k0 in range(0, nl, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        acc += tl.load(colp_ptr + pb + k[:, None] * sz + jj[None, :], mask=(k < nl)[:, None] & jm[None, :], other=0.0)
    tl.store(colr_ptr + cs + jj, tl.sum(acc, axis=0), mask=jm)


# --------------------------------------------------------------------------------------------
# launch configurations

# Fixed tiles: the interpreter (tiny shapes, speed of the Python loop over programs) and fp64.
FIXED = dict(BLOCK_R=16, BLOCK_K=16, BLOCK_D=16)
FIXED64 = dict(BLOCK_R=16, BLOCK_K=16, BLOCK_D=32, num_warps=4)
PAIR_BLOCK_S = 16 if INTERPRET else 32
# shift_pair_nll: column tile of the forward (its line has PAIR_BLOCK_S rows; fp16 / bf16 / fp32,
# and fp64), with 4 warps, and lines per step of the column-sum pass. On sm_90 (Triton 3.6, ptxas
# -v) the 32 x 32 tile takes ~146 registers and the fp64 32 x 16 one ~168, without spills; 32 x 64
# reaches 255 registers (and spills in fp64). Not tuned on a GPU yet.
NLL_BLOCK_J = 16 if INTERPRET else 32
NLL_BLOCK_J64 = 16
NLL_BLOCK_K = 4 if INTERPRET else 8
NLL_WARPS = 4


# (BLOCK_R, BLOCK_K, BLOCK_D, num_warps) per kernel, the candidates of the autotuner. On sm_90
# (Triton 3.6, ptxas -v, win = 17) they take 150-255 registers a thread; in bf16 and tf32 none
# spills, in fp32 at IEEE precision (FMA, no tensor cores) six do: fwd (16, 32, 128, 4) and
# (32, 64, 128, 8), cols (64, 32, 128, 8), rows (64, 32, 64, 8) and (32, 64, 64, 8) (and fwd
# (32, 32, 128, 4) in tf32). They stay candidates: timing, not spill counts, decides.
_TILES = {
    "fwd": [(32, 32, 64, 4), (32, 32, 128, 4), (16, 32, 128, 4), (64, 32, 64, 8), (64, 32, 128, 8), (32, 64, 128, 8)],
    "cols": [(32, 32, 64, 4), (32, 32, 32, 4), (16, 32, 128, 4), (64, 32, 64, 8), (64, 32, 128, 8), (128, 32, 64, 8)],
    "rows": [(16, 32, 64, 4), (32, 32, 32, 4), (32, 32, 64, 8), (32, 32, 128, 8), (64, 32, 64, 8), (32, 64, 64, 8)],
}


# The tile each kernel runs when tiles are pinned (triton_ops.pinned_tiles(): under
# torch.use_deterministic_algorithms(True) or GRAPHSMILE_TRITON_AUTOTUNE=0). The tile fixes the
# order of every sum, so a pinned tile gives the same bits in every process; the autotuner picks
# by timing, and two near-equal tiles can swap between processes.
PINNED = {
    "fwd": dict(BLOCK_R=32, BLOCK_K=32, BLOCK_D=64, num_warps=4),
    "cols": dict(BLOCK_R=32, BLOCK_K=32, BLOCK_D=64, num_warps=4),
    "rows": dict(BLOCK_R=16, BLOCK_K=32, BLOCK_D=64, num_warps=4),
}


def _configs(which: str):
    return [
        triton.Config({"BLOCK_R": r, "BLOCK_K": k, "BLOCK_D": d}, num_warps=w, num_stages=2)
        for r, k, d, w in _TILES[which]
    ]


def _prune(configs, named_args, **kwargs):
    """Drops tiles much wider than D (they only add masked work)."""
    D = named_args.get("D", kwargs.get("D"))
    if D is None:
        return configs
    cap = max(BD_MIN, triton.next_power_of_2(int(D)))
    kept = [c for c in configs if c.kwargs["BLOCK_D"] <= max(cap, 64)]
    return kept or configs


# NB (a bucket of the row count, triton_ops._size_bucket) is in the key so tiles tuned on a
# small batch are not reused for a 100k-node one, without re-tuning for every batch size. IEEE
# is in it because fp32 at IEEE precision (FMA) and in tf32 (tensor cores) have different best
# tiles. cache_results stores the timings in Triton's cache directory, so later processes on the
# same machine and software take the same tiles (and so the same bits) without re-timing;
# GRAPHSMILE_TRITON_AUTOTUNE_CACHE=0 turns that off (e.g. for tests run in parallel on one GPU,
# whose noisy timings should not decide the tiles of later runs).
_CACHE_TIMINGS = os.environ.get("GRAPHSMILE_TRITON_AUTOTUNE_CACHE", "1").strip() != "0"
_KEY = ["D", "M", "WP", "WF", "MODE", "NB", "IEEE"]

if not INTERPRET:
    _prune_by = {"early_config_prune": _prune}

    def _tuned(which, kernel):
        return triton.autotune(_configs(which), key=_KEY, prune_configs_by=_prune_by, cache_results=_CACHE_TIMINGS)(kernel)

    spmm_fwd_tuned = _tuned("fwd", _spmm_fwd_kernel)
    spmm_bwd_cols_tuned = _tuned("cols", _spmm_bwd_cols_kernel)
    spmm_bwd_rows_tuned = _tuned("rows", _spmm_bwd_rows_kernel)
else:  # keep the interpreter fast: one fixed configuration
    spmm_fwd_tuned = spmm_bwd_cols_tuned = spmm_bwd_rows_tuned = None

norm_fwd_kernel = _norm_fwd_kernel
norm_bwd_kernel = _norm_bwd_kernel
spmm_fwd_kernel = _spmm_fwd_kernel
spmm_bwd_cols_kernel = _spmm_bwd_cols_kernel
spmm_bwd_rows_kernel = _spmm_bwd_rows_kernel
pair_sum_fwd_kernel = _pair_sum_fwd_kernel
pair_sum_bwd_kernel = _pair_sum_bwd_kernel
pair_nll_fwd_kernel = _pair_nll_fwd_kernel
pair_nll_cols_kernel = _pair_nll_cols_kernel
