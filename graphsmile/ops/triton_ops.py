"""Triton backend of the graph ops (``backend="triton"``): custom ops, their autograd and the
host-side metadata. The kernels are in ``triton_kernels.py``.

Imported lazily by the public wrappers (``window.py``, ``shift.py``) the first time
``backend="triton"`` runs, after they validated shapes, dtypes and devices; this module is the
only place graphsmile imports ``triton`` (through ``triton_kernels``), so graphsmile works
without it.

Each op is a ``torch.library.triton_op`` in the ``graphsmile_triton`` namespace (a
``torch.library.custom_op`` with the same body as fake kernel under ``TRITON_INTERPRET=1`` or on
torch < 2.6) with
``register_autograd``, so the ops compose with autograd and ``torch.compile`` (Inductor sees
the Triton kernels). Lengths reach the kernels as two small tensors built on the host from the
lengths list with vectorised torch (cached per batch structure and device):

- ``dia``  ``[N]`` int32: the dialogue of each packed utterance;
- ``dtab`` ``[4, B]`` int64: per dialogue its start, length, first edge id and band count c(L);
- ``ltab`` ``[T, 4]`` int64 (shift pairs): per "line" (``BLOCK_S`` rows of one chunk) the packed
  chunk start, chunk size, first pair id and first row (for the fused NLL: the chunk's offset
  in the buffer of per-(line, column) partial column sums instead of the first pair id).

Math (SPEC 3-5), as the CPU kernels: ``window_norm`` backward ``grad_a_e = -0.5 s_i^3 grad_s_i``;
``window_spmm`` backward pass A over columns (``u_c = sum_{e=(i,c)} a_e s_i g_i``,
``grad_x_c = s_c u_c``, ``grad_s_c += <x_c, u_c>``) and pass B over rows (``dot_e = <g_i, x_j>``,
``grad_a_e = s_i s_j dot_e``, ``grad_s_i += sum_e a_e s_j dot_e``). In ``relative`` mode the
per-edge gradients land in a ``[M(M-1), W, N]`` buffer (edge ``(p, k - j, t)``) that is summed
over ``t``: deterministic, no atomics anywhere.

Dtypes: fp16 / bf16 / fp32 use ``tl.dot`` with fp32 accumulation (fp32 at full IEEE precision
unless ``torch.set_float32_matmul_precision`` allows TF32); fp64 runs a slower non-``tl.dot``
path with fp64 accumulation. Like the dense original and the CPU kernels (16-row tiles there), a
non-finite feature row may leak NaN into rows that share its column tile (``0 * inf`` inside
``tl.dot``); the README's note on finite inputs says which rows.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from typing import Sequence

import torch
import triton

from . import triton_kernels as K
from .index import _row_start, capturing, host_to_device
from ._grad import first_order_backward
from .shift import nll_input_grads, nll_setup_context

_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# torch.library.triton_op (torch >= 2.6) lets Inductor see the kernels. Under the interpreter
# (TRITON_INTERPRET=1) torch traces an interpreted kernel into the graph as a plain callable that
# cannot take fake tensors, so there (and on older torch) the ops are opaque custom ops whose
# body doubles as the fake kernel with the launches skipped.
_USE_TRITON_OP = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton") and not K.INTERPRET

# Fixed tiles of the (cheap) norm kernels.
_NORM_BLOCKS = dict(BLOCK_R=16, BLOCK_K=16) if K.INTERPRET else dict(BLOCK_R=32, BLOCK_K=32)


def _check_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype not in _SUPPORTED:
        raise TypeError(f"backend='triton' supports float16, bfloat16, float32 and float64; {name} has dtype {t.dtype}")


def _is_fake(t) -> bool:
    if not isinstance(t, torch.Tensor):
        return False
    if t.device.type == "meta":
        return True
    try:
        from torch._subclasses.fake_tensor import is_fake
    except ImportError:  # pragma: no cover
        return type(t).__name__ == "FakeTensor"
    return is_fake(t)


def _define(name: str):
    if _USE_TRITON_OP:
        return torch.library.triton_op(name, mutates_args=())

    def deco(fn):  # a custom op whose body also serves as fake kernel
        op = torch.library.custom_op(name, mutates_args=())(fn)
        op.register_fake(fn)
        return op

    return deco


def _launch(kernel, grid, *args, **kwargs) -> None:
    if _USE_TRITON_OP:
        torch.library.wrap_triton(kernel)[grid](*args, **kwargs)
    elif not any(_is_fake(a) for a in args):
        kernel[grid](*args, **kwargs)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _ieee(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"


def _on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the inputs' (eager calls only; the
    autograd engine already does this for backward, and compiled code handles it itself)."""
    if t.is_cuda and not torch.compiler.is_compiling():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _dummy(ref: torch.Tensor, dtype=None) -> torch.Tensor:
    return torch.empty(1, dtype=dtype or ref.dtype, device=ref.device)


# --------------------------------------------------------------------------------------------
# host-side metadata (O(B) / O(N) vectorised torch, cached per structure and device)

_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_CACHE_SIZE = 64


def _stream_token(device: torch.device) -> int:
    """The current CUDA stream of ``device`` (its raw handle), 0 elsewhere."""
    if device.type != "cuda":
        return 0
    return torch._C._cuda_getCurrentRawStream(device.index if device.index is not None
                                              else torch.cuda.current_device())


def _cached(key, device: torch.device, build):
    # Not while capturing a CUDA graph on `device`: a table built then is written only
    # when the graph is replayed, so it must not serve eager calls; and one from the cache would
    # have to outlive the graph, which an eviction does not ensure. The graph gets its own.
    if torch.compiler.is_compiling() or capturing(device):
        return build()
    # One entry per stream: a table is uploaded and allocated on the stream current when it is
    # built, so a kernel on another stream could read it before the upload lands, and after an
    # eviction the allocator could hand its memory out again while that kernel still reads it.
    key = key + (_stream_token(device),)
    hit = _CACHE.get(key)
    if hit is None:
        hit = build()
        _CACHE[key] = hit
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return hit


def window_meta(lens: Sequence[int], num_modal: int, win_p: int, win_f: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dia [N] int32, dtab [4, B] int64)`` of a batch (see the module docstring)."""
    device = torch.device(device)

    def build():
        L = torch.tensor(list(lens), dtype=torch.int64)
        B, N = L.numel(), sum(lens)
        start = torch.cumsum(L, 0) - L
        band = _row_start(L, L, win_p, win_f)
        per = num_modal * (num_modal - 1) * band
        ebase = torch.cumsum(per, 0) - per
        dtab = torch.stack([start, L, ebase, band]).contiguous()
        dia = torch.repeat_interleave(torch.arange(B, dtype=torch.int32), L, output_size=N)
        return host_to_device(dia, device), host_to_device(dtab, device)

    return _cached(("window", tuple(lens), num_modal, win_p, win_f, str(device)), device, build)


def pair_lines(lens: Sequence[int], shift_win: int, device, block: int = K.PAIR_BLOCK_S,
               parts: bool = False) -> tuple[torch.Tensor, int]:
    """``(ltab [T, 4] int64, P)``: the lines of ``block`` rows of every shift chunk.

    With ``parts=True`` (the fused NLL) the third column is the chunk's offset in the buffer of
    partial column sums instead of its first pair id (a chunk of size ``s`` owns
    ``cdiv(s, block) * s`` entries there: one per line and column), and the count returned is
    that buffer's size instead of ``P``."""
    device = torch.device(device)

    def build():
        L = torch.tensor(list(lens), dtype=torch.int64)
        B = L.numel()
        start = torch.cumsum(L, 0) - L
        w = L.clone() if shift_win == -1 else torch.full_like(L, shift_win)
        nch = (L + w - 1) // w
        # sizes from the lengths in O(B) Python ints (no data-dependent shapes under torch.compile)
        ws = [x if shift_win == -1 else shift_win for x in lens]
        n_chunks = sum(-(-x // wx) for x, wx in zip(lens, ws))
        n_lines = sum((x // wx) * -(-wx // block) + -(-(x % wx) // block) for x, wx in zip(lens, ws))
        cd = torch.repeat_interleave(torch.arange(B), nch, output_size=n_chunks)
        ci = torch.arange(n_chunks) - (torch.cumsum(nch, 0) - nch)[cd]
        wc = w[cd]
        local0 = ci * wc
        size = torch.minimum(wc, L[cd] - local0)
        cstart = start[cd] + local0
        nl = (size + block - 1) // block
        if parts:
            per = nl * size
            base = torch.cumsum(per, 0) - per
            total = sum((x // wx) * -(-wx // block) * wx + -(-(x % wx) // block) * (x % wx) for x, wx in zip(lens, ws))
        else:
            cnt = (L // w) * w * w + (L % w) ** 2
            pbase = torch.cumsum(cnt, 0) - cnt
            base = pbase[cd] + ci * wc * wc
            total = sum((x // wx) * wx * wx + (x % wx) ** 2 for x, wx in zip(lens, ws))
        lc = torch.repeat_interleave(torch.arange(n_chunks), nl, output_size=n_lines)
        li = torch.arange(n_lines) - (torch.cumsum(nl, 0) - nl)[lc]
        ltab = torch.stack([cstart[lc], size[lc], base[lc], li * block], 1).contiguous()
        return host_to_device(ltab, device), total

    return _cached(("pairs", tuple(lens), shift_win, block, parts, str(device)), device, build)


# --------------------------------------------------------------------------------------------
# custom ops


@_define("graphsmile_triton::window_norm")
def _window_norm_op(edge_weight: torch.Tensor, dia: torch.Tensor, dtab: torch.Tensor, num_modal: int, win_p: int,
                    win_f: int, mode: int) -> torch.Tensor:
    w = edge_weight.contiguous()
    N, B, M = dia.numel(), dtab.shape[1], num_modal
    s = w.new_empty(M * N)
    if N > 0:
        grid = (triton.cdiv(N, _NORM_BLOCKS["BLOCK_R"]), M)
        _launch(K.norm_fwd_kernel, grid, w, s, dia, dtab, N, B, M=M, WP=win_p, WF=win_f, MODE=mode,
                ACC64=w.dtype == torch.float64, **_NORM_BLOCKS)
    return s


@_define("graphsmile_triton::window_norm_backward")
def _window_norm_backward_op(grad_norm: torch.Tensor, norm: torch.Tensor, edge_weight: torch.Tensor, dia: torch.Tensor,
                             dtab: torch.Tensor, num_modal: int, win_p: int, win_f: int, mode: int) -> torch.Tensor:
    w = edge_weight.contiguous()
    gs, s = grad_norm.contiguous(), norm.contiguous()
    N, B, M = dia.numel(), dtab.shape[1], num_modal
    P = M * (M - 1)
    acc = _acc_dtype(w.dtype)
    gw = torch.zeros_like(w)
    rel = torch.zeros(P, win_p + win_f + 1, N, dtype=acc, device=w.device) if mode == 1 else _dummy(w, acc)
    if N > 0:
        grid = (triton.cdiv(N, _NORM_BLOCKS["BLOCK_R"]), P)
        _launch(K.norm_bwd_kernel, grid, gs, s, w, gw if mode == 0 else _dummy(w), rel, dia, dtab, N, B, M=M,
                WP=win_p, WF=win_f, MODE=mode, ACC64=acc == torch.float64,
                RECOMPUTE=w.dtype in (torch.float16, torch.bfloat16), **_NORM_BLOCKS)
    if mode == 1:
        gw = rel.sum(-1).to(w.dtype).reshape(w.shape)
    return gw


def _size_bucket(rows) -> int:
    """Coarse size class of a batch (rows of ``x``: < 8k, < 64k, more) for the autotuner's key:
    the best tiles differ between a small batch and one that fills the GPU, but re-tuning for
    every distinct batch size would cost more than it gains."""
    if not isinstance(rows, int):  # symbolic under torch.compile(dynamic=True): one class
        return 2
    return 0 if rows < 8192 else (1 if rows < 65536 else 2)


def pinned_tiles() -> bool:
    """True when the window kernels run one fixed tile per kernel (``triton_kernels.PINNED``)
    instead of the autotuner's choice: under ``torch.use_deterministic_algorithms(True)`` or with
    the environment variable ``GRAPHSMILE_TRITON_AUTOTUNE=0``. Every tile gives a deterministic
    result, but the tile sets the order of the sums, so only a pinned tile gives the same bits
    across processes (the autotuner times its candidates, and near-equal ones can swap; its
    cached choice is reused on the same machine), on the same GPU model and software: another
    GPU generation may lower ``tl.dot`` differently."""
    if torch.are_deterministic_algorithms_enabled():
        return True
    env = os.environ.get("GRAPHSMILE_TRITON_AUTOTUNE", "1").strip()
    if env not in ("0", "1"):
        raise ValueError(f"graphsmile: the environment variable GRAPHSMILE_TRITON_AUTOTUNE must be 0 or 1, got {env!r}")
    return env == "0"


def _spmm_launch(which, x, grid_fn, args, consts):
    """The window kernel ``which`` ("fwd", "cols" or "rows"): autotuned on a GPU for
    fp16/bf16/fp32 (or its pinned tile, see ``pinned_tiles``); one fixed tile under the
    interpreter or for fp64."""
    tuned, fixed = {
        "fwd": (K.spmm_fwd_tuned, K.spmm_fwd_kernel),
        "cols": (K.spmm_bwd_cols_tuned, K.spmm_bwd_cols_kernel),
        "rows": (K.spmm_bwd_rows_tuned, K.spmm_bwd_rows_kernel),
    }[which]
    consts = dict(consts, NB=_size_bucket(x.shape[0]), EMU_BF16=K.INTERPRET and x.dtype == torch.bfloat16)
    if tuned is None or x.dtype == torch.float64:
        blocks = K.FIXED64 if x.dtype == torch.float64 and not K.INTERPRET else K.FIXED
    elif pinned_tiles():
        blocks = K.PINNED[which]
    else:
        _launch(tuned, lambda meta: grid_fn(meta["BLOCK_R"], meta["BLOCK_D"]), *args, **consts)
        return
    _launch(fixed, grid_fn(blocks["BLOCK_R"], blocks["BLOCK_D"]), *args, **consts, **blocks)


@_define("graphsmile_triton::window_spmm")
def _window_spmm_op(x: torch.Tensor, edge_weight: torch.Tensor, norm: torch.Tensor, dia: torch.Tensor, dtab: torch.Tensor,
                    num_modal: int, win_p: int, win_f: int, mode: int) -> torch.Tensor:
    x, w, s = x.contiguous(), edge_weight.contiguous(), norm.contiguous()
    N, B, M, D = dia.numel(), dtab.shape[1], num_modal, x.shape[1]
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    _spmm_launch(
        "fwd", x,
        lambda r, d: (triton.cdiv(N, r), M, triton.cdiv(D, d)),
        (x, w, s, y, dia, dtab, N, B, D),
        dict(M=M, WP=win_p, WF=win_f, MODE=mode, ACC64=x.dtype == torch.float64, IEEE=_ieee(x.dtype)),
    )
    return y


@_define("graphsmile_triton::window_spmm_backward_cols")
def _spmm_backward_cols_op(grad_y: torch.Tensor, x: torch.Tensor, edge_weight: torch.Tensor, norm: torch.Tensor,
                           dia: torch.Tensor, dtab: torch.Tensor, num_modal: int, win_p: int, win_f: int, mode: int,
                           need_grad_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass A: (grad_x or an empty tensor, column part of grad_norm in the accumulation dtype)."""
    g, x, w, s = grad_y.contiguous(), x.contiguous(), edge_weight.contiguous(), norm.contiguous()
    N, B, M, D = dia.numel(), dtab.shape[1], num_modal, x.shape[1]
    acc = _acc_dtype(x.dtype)
    gx = torch.empty_like(x) if need_grad_x else x.new_empty(0)
    if x.numel() == 0:
        return gx, torch.zeros(M * N, dtype=acc, device=x.device)
    bd_min = K.BD_MIN
    DT = triton.cdiv(D, bd_min)
    gsp = torch.empty(DT, M * N, dtype=acc, device=x.device)
    _spmm_launch(
        "cols", x,
        lambda r, d: (triton.cdiv(N, r), M, triton.cdiv(D, d)),
        (g, x, w, s, gx if need_grad_x else _dummy(x), gsp, dia, dtab, N, B, D, DT),
        dict(M=M, WP=win_p, WF=win_f, MODE=mode, ACC64=x.dtype == torch.float64, IEEE=_ieee(x.dtype),
             NEED_GX=need_grad_x, BD_MIN=bd_min),
    )
    return gx, gsp.sum(0)


@_define("graphsmile_triton::window_spmm_backward_rows")
def _spmm_backward_rows_op(grad_y: torch.Tensor, x: torch.Tensor, edge_weight: torch.Tensor, norm: torch.Tensor,
                           dia: torch.Tensor, dtab: torch.Tensor, num_modal: int, win_p: int, win_f: int, mode: int,
                           need_grad_w: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass B: (grad_edge_weight or an empty tensor, row part of grad_norm in the accumulation dtype)."""
    g, x, w, s = grad_y.contiguous(), x.contiguous(), edge_weight.contiguous(), norm.contiguous()
    N, B, M, D = dia.numel(), dtab.shape[1], num_modal, x.shape[1]
    P = M * (M - 1)
    acc = _acc_dtype(x.dtype)
    gw = torch.zeros_like(w) if need_grad_w and mode == 0 else _dummy(w)
    rel = torch.zeros(P, win_p + win_f + 1, N, dtype=acc, device=x.device) if need_grad_w and mode == 1 else _dummy(w, acc)
    gsp = torch.empty(M - 1, M * N, dtype=acc, device=x.device)
    if N > 0:
        _spmm_launch(
            "rows", x,
            lambda r, d: (triton.cdiv(N, r), P),
            (g, x, w, s, gw, rel, gsp, dia, dtab, N, B, D),
            dict(M=M, WP=win_p, WF=win_f, MODE=mode, ACC64=x.dtype == torch.float64, IEEE=_ieee(x.dtype),
                 NEED_GW=need_grad_w),
        )
    if not need_grad_w:
        gw = w.new_empty(0)
    elif mode == 1:
        gw = rel.sum(-1).to(w.dtype).reshape(w.shape)
    return gw, gsp.sum(0)


def _pair_block_c(C: int) -> int:
    return min(16, max(2, triton.next_power_of_2(max(C, 1))))


@_define("graphsmile_triton::shift_pair_sum")
def _shift_pair_sum_op(a: torch.Tensor, b: torch.Tensor, ltab: torch.Tensor, num_pairs: int) -> torch.Tensor:
    a, b = a.contiguous(), b.contiguous()
    C = a.shape[1]
    out = a.new_empty(num_pairs, C)
    if out.numel() > 0:
        bc = _pair_block_c(C)
        _launch(K.pair_sum_fwd_kernel, (ltab.shape[0], triton.cdiv(C, bc)), a, b, out, ltab, C,
                ACC64=a.dtype == torch.float64, BLOCK_S=K.PAIR_BLOCK_S, BLOCK_C=bc)
    return out


@_define("graphsmile_triton::shift_pair_reduce")
def _shift_pair_reduce_op(grad: torch.Tensor, ltab: torch.Tensor, num_nodes: int, axis: int) -> torch.Tensor:
    """axis 0: grad_a_i = sum_j grad[pair(i, j)]; axis 1: grad_b_j = sum_i grad[pair(i, j)]."""
    g = grad.contiguous()
    C = g.shape[1]
    out = g.new_empty(num_nodes, C)
    if out.numel() > 0:
        bc = _pair_block_c(C)
        _launch(K.pair_sum_bwd_kernel, (ltab.shape[0], triton.cdiv(C, bc)), g, out, ltab, C,
                AXIS=axis, ACC64=g.dtype == torch.float64, BLOCK_S=K.PAIR_BLOCK_S, BLOCK_C=bc)
    return out


@_define("graphsmile_triton::shift_pair_nll")
def _shift_pair_nll_op(a: torch.Tensor, b: torch.Tensor, sentiment: torch.Tensor, ltab: torch.Tensor, num_parts: int,
                       with_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss sum, confusion [2, 2] int64, row_r [N], col_r [N]) over the shift pairs; ``ltab``
    from ``pair_lines(..., parts=True)``, ``num_parts`` its partial-buffer size. row_r / col_r
    (the residual sums, in the accumulation dtype) are empty unless ``with_grad``."""
    a, b, s = a.contiguous(), b.contiguous(), sentiment.contiguous()
    N, T = a.shape[0], ltab.shape[0]
    acc = _acc_dtype(a.dtype)
    loss = torch.empty(T, dtype=acc, device=a.device)
    cnt = torch.empty(T, 4, dtype=torch.int64, device=a.device)
    if with_grad:
        row_r = torch.empty(N, dtype=acc, device=a.device)
        col_r = torch.empty(N, dtype=acc, device=a.device)
        colp = torch.empty(num_parts, dtype=acc, device=a.device)
    else:
        row_r = torch.empty(0, dtype=acc, device=a.device)
        col_r = torch.empty(0, dtype=acc, device=a.device)  # outputs must not alias
        colp = _dummy(a, acc)
    if T > 0:
        acc64 = acc == torch.float64
        _launch(K.pair_nll_fwd_kernel, (T,), a, b, s, ltab, loss, cnt, row_r if with_grad else _dummy(a, acc), colp,
                ACC64=acc64, WITH_GRAD=with_grad, EMU_BF16=K.INTERPRET and a.dtype == torch.bfloat16,
                BLOCK_S=K.PAIR_BLOCK_S, BLOCK_J=K.NLL_BLOCK_J64 if acc64 and not K.INTERPRET else K.NLL_BLOCK_J,
                num_warps=K.NLL_WARPS)
        if with_grad:
            _launch(K.pair_nll_cols_kernel, (T,), colp, col_r, ltab, BLOCK_S=K.PAIR_BLOCK_S, BLOCK_K=K.NLL_BLOCK_K,
                    num_warps=K.NLL_WARPS)
    # per-line partials summed by torch: a fixed order for a given batch structure
    return loss.sum(), cnt.sum(0).reshape(2, 2), row_r, col_r


# --------------------------------------------------------------------------------------------
# autograd


def _norm_setup(ctx, inputs, output):
    edge_weight, dia, dtab, num_modal, win_p, win_f, mode = inputs
    ctx.save_for_backward(output, edge_weight, dia, dtab)
    ctx.args = (num_modal, win_p, win_f, mode)


@first_order_backward("window_norm")
def _norm_backward(ctx, grad_norm):
    norm, edge_weight, dia, dtab = ctx.saved_tensors
    gw = None
    if ctx.needs_input_grad[0]:
        gw = _window_norm_backward_op(grad_norm, norm, edge_weight, dia, dtab, *ctx.args)
    return gw, None, None, None, None, None, None


def _spmm_setup(ctx, inputs, output):
    x, edge_weight, norm, dia, dtab, num_modal, win_p, win_f, mode = inputs
    ctx.save_for_backward(x, edge_weight, norm, dia, dtab)
    ctx.args = (num_modal, win_p, win_f, mode)


@first_order_backward("window_spmm")
def _spmm_backward(ctx, grad_y):
    x, w, s, dia, dtab = ctx.saved_tensors
    need_x, need_w, need_s = (bool(v) for v in ctx.needs_input_grad[:3])
    gx = gw = gs = None
    gs_parts = []
    if need_x or need_s:
        gx_, gs_col = _spmm_backward_cols_op(grad_y, x, w, s, dia, dtab, *ctx.args, need_x)
        gx = gx_ if need_x else None
        gs_parts.append(gs_col)
    if need_w or need_s:
        gw_, gs_row = _spmm_backward_rows_op(grad_y, x, w, s, dia, dtab, *ctx.args, need_w)
        gw = gw_ if need_w else None
        gs_parts.append(gs_row)
    if need_s:
        gs = (gs_parts[0] + gs_parts[1]).to(s.dtype)
    return gx, gw, gs, None, None, None, None, None, None


def _pair_setup(ctx, inputs, output):
    a, b, ltab, num_pairs = inputs
    ctx.save_for_backward(ltab)
    ctx.num_nodes = a.shape[0]


@first_order_backward("shift_pair_sum")
def _pair_backward(ctx, grad):
    (ltab,) = ctx.saved_tensors
    ga = _shift_pair_reduce_op(grad, ltab, ctx.num_nodes, 0) if ctx.needs_input_grad[0] else None
    gb = _shift_pair_reduce_op(grad, ltab, ctx.num_nodes, 1) if ctx.needs_input_grad[1] else None
    return ga, gb, None, None


def _nll_setup(ctx, inputs, output):
    a, b, sentiment, ltab, num_parts, with_grad = inputs
    nll_setup_context(ctx, with_grad, a, b, output)


@first_order_backward("shift_pair_nll")
def _nll_backward(ctx, grad_loss, _grad_confusion, _grad_row, _grad_col):
    ga, gb = nll_input_grads(ctx, grad_loss, "graphsmile_triton::shift_pair_nll")
    return ga, gb, None, None, None, None


_window_norm_op.register_autograd(_norm_backward, setup_context=_norm_setup)
_window_spmm_op.register_autograd(_spmm_backward, setup_context=_spmm_setup)
_shift_pair_sum_op.register_autograd(_pair_backward, setup_context=_pair_setup)
_shift_pair_nll_op.register_autograd(_nll_backward, setup_context=_nll_setup)


# --------------------------------------------------------------------------------------------
# entry points used by window.py / shift.py (arguments already validated there)


def window_norm(edge_weight: torch.Tensor, lens: Sequence[int], num_modal: int, win_p: int, win_f: int,
                mode: int) -> torch.Tensor:
    """``s = d^{-1/2}`` over the windowed graph, ``[num_modal * N]`` in ``edge_weight``'s dtype."""
    _check_dtype(edge_weight, "edge_weight")
    dia, dtab = window_meta(lens, num_modal, win_p, win_f, edge_weight.device)
    with _on_device(edge_weight):
        return _window_norm_op(edge_weight, dia, dtab, num_modal, win_p, win_f, mode)


def window_spmm(x: torch.Tensor, edge_weight: torch.Tensor, norm: torch.Tensor, lens: Sequence[int], num_modal: int,
                win_p: int, win_f: int, mode: int) -> torch.Tensor:
    """``y_i = s_i sum_{e=(i,j)} a_e s_j x_j``, shaped like ``x``."""
    _check_dtype(x, "x")
    dia, dtab = window_meta(lens, num_modal, win_p, win_f, x.device)
    with _on_device(x):
        return _window_spmm_op(x, edge_weight, norm, dia, dtab, num_modal, win_p, win_f, mode)


def shift_pair_sum(a: torch.Tensor, b: torch.Tensor, lens: Sequence[int], shift_win: int) -> torch.Tensor:
    """``out[pair(i, j)] = a_i + b_j`` over the shift pairs (SPEC 4), ``[P, C]``."""
    _check_dtype(a, "a")
    ltab, P = pair_lines(lens, shift_win, a.device)
    with _on_device(a):
        return _shift_pair_sum_op(a, b, ltab, P)


def shift_pair_nll(a: torch.Tensor, b: torch.Tensor, sentiment: torch.Tensor, lens: Sequence[int],
                   shift_win: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss_sum, confusion)`` of the shift head's NLL over the shift pairs (SPEC 4;
    ``a, b`` ``[N, 2]``, ``sentiment`` int64 ``[N]``): ``loss_sum`` 0-dim float32 (float64 for
    float64 inputs), differentiable in ``a`` and ``b``; ``confusion`` ``[2, 2]`` int64 indexed
    ``[label, prediction]``. The residual sums of the gradient are computed in the same pass,
    only when grad is enabled and ``a`` or ``b`` requires it."""
    _check_dtype(a, "a")
    ltab, num_parts = pair_lines(lens, shift_win, a.device, parts=True)
    with_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    with _on_device(a):
        loss, confusion, _, _ = _shift_pair_nll_op(a, b, sentiment, ltab, num_parts, with_grad)
    return loss, confusion
