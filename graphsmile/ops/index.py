"""Index structures of the two graph ops, vectorised (no Python loops over dialogues, edges or
pairs), and the argument checks shared by every backend.

The closed forms mirror ``kernels/window_index.h``, which the C++ and CUDA kernels use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

Lengths = Union[Sequence[int], torch.Tensor]


def host_to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A small host-built table -> ``device`` without a host sync. A copy from pageable memory
    makes the host wait for the GPU to drain its queue; from pinned memory it is queued on the
    current stream (torch's caching host allocator keeps the pinned block alive until the copy
    has run). While the current stream is being captured into a CUDA graph, an integer table
    goes by value instead (:func:`upload_by_value`). Under torch.compile, and for CPU targets,
    a plain ``.to``."""
    device = torch.device(device) if device is not None else t.device
    if device.type == "cuda" and t.device.type == "cpu" and not torch.compiler.is_compiling():
        if capturing(device):
            return upload_by_value(t, device)
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def capturing(device: torch.device) -> bool:
    """Whether work for ``device`` is being captured into a CUDA graph now (current stream)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def upload_by_value(t: torch.Tensor, device) -> torch.Tensor:
    """An integer CPU tensor on the CUDA ``device``, written by kernels whose arguments carry
    its values (``torch.ops.graphsmile.upload_by_value``, csrc/cuda/upload_cuda.cu), on the
    current stream. Captured into a CUDA graph, the values are part of the graph: a replay
    reads no host memory. (A copy from pinned memory would be read again at every replay, from
    a block the caching host allocator may have reused by then.) Same shape and dtype as
    ``t``."""
    from . import _ext

    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"upload_by_value takes an integer tensor, got {t.dtype}")
    if not (_ext.HAS_EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key(
            "graphsmile::upload_by_value", "CompositeExplicitAutograd")):
        raise RuntimeError(
            "graphsmile: capturing its ops in a CUDA graph needs graphsmile._C built with CUDA (for its by-value "
            "upload of the per-batch tables); this one has no CUDA kernels. Rebuild on a machine with nvcc "
            "(pip install --no-build-isolation -e .) or do not capture."
        )
    flat = torch.ops.graphsmile.upload_by_value(t.reshape(-1).to(torch.int64), torch.device(device))
    return flat.to(t.dtype).view(t.shape)


def capture_cuda_graph(fn, warmup: int = 2):
    """``fn()`` captured into a CUDA graph, with torch's recipe: ``warmup`` eager calls on a side
    stream first (lazy initialisation, library workspaces and Triton's autotuner must run
    outside the capture), then one call under :class:`torch.cuda.graph`.

    Returns ``(graph, out)``: ``out`` is what the captured call returned (tensors in the graph's
    memory); ``graph.replay()`` reruns the captured kernels on the values the captured input
    tensors hold then, rewriting ``out``. graphsmile's ops are capturable (their per-batch tables
    go by value while capturing: :func:`upload_by_value`); the shapes and lengths are those of
    the capture. Nothing is synchronised here."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not torch.cuda.is_available():
        raise RuntimeError("capture_cuda_graph needs a CUDA device; torch.cuda.is_available() is False")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


# The C++ kernels' bounds (csrc/window_common.h), which keep every index product in int64: a
# window longer than every dialogue is the same as -1.
MAX_WINDOW = 2**31 - 1
MAX_LENGTH = 2**31 - 1
MAX_MODAL = 1024


def lengths_to_list(lengths: Lengths, name: str = "lengths") -> list[int]:
    """Validates dialogue lengths and returns them as a list of Python ints.

    ``lengths`` is a list/tuple of ints or a 1-D integer tensor; every entry must be >= 1.
    """
    if isinstance(lengths, torch.Tensor):
        if lengths.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got a tensor of shape {tuple(lengths.shape)}")
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
        if lengths.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor, but its values are needed: pass a list of ints or a CPU tensor")
        values = [int(v) for v in lengths.tolist()]
    else:
        try:
            values = list(lengths)
        except TypeError:
            raise TypeError(f"{name} must be a list of ints or a 1-D integer tensor, got {type(lengths).__name__}") from None
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, int):
                if (isinstance(v, torch.Tensor) and v.dim() == 0 and not v.dtype.is_floating_point
                        and not v.dtype.is_complex and v.dtype != torch.bool):
                    values[i] = int(v)
                    continue
                try:
                    import numpy as np

                    if isinstance(v, np.integer):
                        values[i] = int(v)
                        continue
                except ImportError:  # pragma: no cover
                    pass
                raise TypeError(f"{name}[{i}] = {v!r} is not an integer")
    if len(values) == 0:
        raise ValueError(f"{name} is empty: a batch needs at least one dialogue")
    for i, v in enumerate(values):
        if v < 1:
            raise ValueError(f"{name}[{i}] = {v}: every dialogue needs at least one utterance")
        if v > MAX_LENGTH:
            raise ValueError(f"{name}[{i}] = {v}: a dialogue may have at most {MAX_LENGTH} utterances")
    return values


def check_window(win_p: int, win_f: int, num_modal: int = 2) -> None:
    """Windows are -1 (unbounded) or >= 0; a graph needs >= 2 modalities."""
    for name, w in (("win_p", win_p), ("win_f", win_f)):
        if isinstance(w, bool) or not isinstance(w, int):
            raise TypeError(f"{name} must be an int (-1 or >= 0), got {w!r}")
        if w < -1 or w > MAX_WINDOW:
            raise ValueError(f"{name} must be -1 (unbounded) or from 0 to {MAX_WINDOW}, got {w}")
    if isinstance(num_modal, bool) or not isinstance(num_modal, int) or not 2 <= num_modal <= MAX_MODAL:
        raise ValueError(f"num_modal must be an int from 2 to {MAX_MODAL} (a cross-modal graph needs two "
                         f"modalities), got {num_modal!r}")


def check_shift_win(shift_win: int) -> None:
    if (isinstance(shift_win, bool) or not isinstance(shift_win, int)
            or not (shift_win == -1 or 0 < shift_win <= MAX_WINDOW)):
        raise ValueError(f"shift_win must be -1 (whole dialogue) or an int from 1 to {MAX_WINDOW}, "
                         f"got {shift_win!r}")


def check_sentiment(sentiment: Any, num_nodes: int) -> None:
    """``sentiment`` must be a 1-D integer tensor (the packed ``[N]`` classes, ``N = num_nodes``);
    its length is checked by the callers."""
    if (not isinstance(sentiment, torch.Tensor) or sentiment.dim() != 1 or sentiment.dtype.is_floating_point
            or sentiment.dtype.is_complex or sentiment.dtype == torch.bool):
        raise ValueError(f"sentiment must be a 1-D integer tensor [sum(lengths)] = [{num_nodes}], got "
                         f"{getattr(sentiment, 'dtype', type(sentiment).__name__)} {tuple(getattr(sentiment, 'shape', ()))}")


def _row_start(j: torch.Tensor, L: torch.Tensor, win_p: int, win_f: int) -> torch.Tensor:
    """sum_{t<j} (hi(t) - lo(t)) elementwise (int64 tensors), as in window_index.h."""
    if win_f < 0:
        sum_hi = j * L
    else:
        cnt = torch.minimum((L - win_f).clamp(min=0), j)
        sum_hi = cnt * (win_f + 1) + cnt * (cnt - 1) // 2 + (j - cnt) * L
    if win_p < 0:
        return sum_hi
    q = (j - 1 - win_p).clamp(min=0)
    return sum_hi - q * (q + 1) // 2


def _lo(j: torch.Tensor, win_p: int) -> torch.Tensor:
    return torch.zeros_like(j) if win_p < 0 else (j - win_p).clamp(min=0)


def _hi(j: torch.Tensor, L: torch.Tensor, win_f: int) -> torch.Tensor:
    return L.clone() if win_f < 0 else torch.minimum(L, j + win_f + 1)


def band_count(L: int, win_p: int, win_f: int) -> int:
    """c(L): edges of one ordered modality pair in a dialogue of length L (closed form of
    ``window_row_start(L, L)`` in window_index.h, in Python ints so it traces under
    torch.compile)."""
    if win_f < 0:
        sum_hi = L * L
    else:
        cnt = min(max(L - win_f, 0), L)
        sum_hi = cnt * (win_f + 1) + cnt * (cnt - 1) // 2 + (L - cnt) * L
    if win_p < 0:
        return sum_hi
    q = max(0, L - 1 - win_p)
    return sum_hi - q * (q + 1) // 2


def num_edges(lengths: Lengths, num_modal: int, win_p: int, win_f: int) -> int:
    """E = M(M-1) * sum_b c(L_b) (SPEC 2): O(B) integer arithmetic, no edge is built."""
    lens = lengths_to_list(lengths)
    check_window(win_p, win_f, num_modal)
    return edge_count(lens, num_modal, win_p, win_f)


# E per (lengths, M, win_p, win_f): each of a forward's three graph modules (a WindowGraph each)
# and every free-function window op call asks for the same batch's count, about 23 us of Python
# each time at 16 dialogues (1 us from here). Bounded: cleared when full. Not used while
# torch.compile traces (plain arithmetic there).
_EDGE_COUNTS: dict = {}
_EDGE_COUNTS_MAX = 4096


def edge_count(lens: list, num_modal: int, win_p: int, win_f: int) -> int:
    """``E = M (M - 1) sum_b c(L_b)`` (``c``: :func:`band_count`, the edges of one modality
    pair in a dialogue of length ``L_b``), as :func:`num_edges`, for lengths and windows already
    validated: no checks here (``lens``: Python ints). Memoised per (lengths, M, windows), as a
    batch's graph modules and layers ask for the same count."""
    if torch.compiler.is_compiling():
        return num_modal * (num_modal - 1) * sum(band_count(L, win_p, win_f) for L in lens)
    key = (tuple(lens), num_modal, win_p, win_f)
    E = _EDGE_COUNTS.get(key)
    if E is None:
        if len(_EDGE_COUNTS) >= _EDGE_COUNTS_MAX:
            _EDGE_COUNTS.clear()
        E = _EDGE_COUNTS[key] = num_modal * (num_modal - 1) * sum(band_count(L, win_p, win_f) for L in lens)
    return E


def num_shift_pairs(lengths: Lengths, shift_win: int) -> int:
    """P = sum over chunks of size^2 (SPEC 4)."""
    lens = lengths_to_list(lengths)
    check_shift_win(shift_win)
    total = 0
    for L in lens:  # O(B) integer arithmetic, no tensors: fine for torch.compile
        w = L if shift_win == -1 else shift_win
        total += (L // w) * w * w + (L % w) ** 2
    return total


@dataclass(frozen=True)
class NodeTable:
    """Per-utterance lookup tables of a packed batch (all int64 ``[N]``)."""

    dialogue: torch.Tensor  # b of each packed utterance
    local: torch.Tensor  # j: index inside its dialogue
    length: torch.Tensor  # L_b of its dialogue
    start: torch.Tensor  # s_b of its dialogue


def node_table(lengths: Sequence[int], device=None) -> NodeTable:
    L = torch.tensor(list(lengths), dtype=torch.long, device=device)
    starts = torch.cumsum(L, 0) - L
    dia = torch.repeat_interleave(torch.arange(len(L), device=device), L)
    local = torch.arange(int(L.sum()), device=device) - starts[dia]
    return NodeTable(dia, local, L[dia], starts[dia])


def window_edge_index(lengths: Lengths, num_modal: int, win_p: int, win_f: int, device=None) -> torch.Tensor:
    """All windowed cross-modal edges in the canonical order of SPEC 2.

    Returns a ``LongTensor[2, E]`` of (row, col) node ids, nodes modality-major
    (``m * N + t``). Edge ``e`` of this list is the edge that uses ``edge_weight[e]`` in
    ``per_edge`` mode. Vectorised: O(E) work, no Python loop over dialogues or edges.
    """
    lens = lengths_to_list(lengths)
    check_window(win_p, win_f, num_modal)
    M = num_modal
    L = torch.tensor(lens, dtype=torch.long, device=device)
    N = int(L.sum())
    B = len(lens)
    starts = torch.cumsum(L, 0) - L
    pairs = torch.tensor([(m, n) for m in range(M) for n in range(M) if m != n], dtype=torch.long, device=device)
    P = pairs.shape[0]
    # One "unit" per (dialogue, pair, row), in edge order: dialogue-major, then pair, then row.
    unit_dia = torch.repeat_interleave(torch.arange(B, device=device), L * P)
    unit_start_in_dia = torch.cumsum(L * P, 0) - L * P
    q = torch.arange(int((L * P).sum()), device=device) - unit_start_in_dia[unit_dia]
    Lu = L[unit_dia]
    p = q // Lu
    j = q % Lu
    lo, hi = _lo(j, win_p), _hi(j, Lu, win_f)
    counts = hi - lo
    E = int(counts.sum())
    edge_unit = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    unit_first_edge = torch.cumsum(counts, 0) - counts
    k = lo[edge_unit] + (torch.arange(E, device=device) - unit_first_edge[edge_unit])
    s = starts[unit_dia][edge_unit]
    m = pairs[p[edge_unit], 0]
    n = pairs[p[edge_unit], 1]
    row = m * N + s + j[edge_unit]
    col = n * N + s + k
    return torch.stack([row, col])


def relative_weight_index(lengths: Lengths, num_modal: int, win_p: int, win_f: int, device=None) -> torch.Tensor:
    """For each edge (canonical order), its entry in the flattened relative weight table
    ``[M, M-1, win_p + win_f + 1]``: ``p * (win_p + win_f + 1) + (k - j + win_p)``. ``LongTensor[E]``."""
    check_window(win_p, win_f, num_modal)
    if win_p < 0 or win_f < 0:
        raise ValueError(f"weight_mode='relative' needs finite windows (win_p, win_f >= 0), got win_p={win_p}, win_f={win_f}")
    ei = window_edge_index(lengths, num_modal, win_p, win_f, device=device)
    N = sum(lengths_to_list(lengths))
    m, j = ei[0] // N, ei[0] % N
    n, k = ei[1] // N, ei[1] % N
    p = m * (num_modal - 1) + n - (n > m).long()
    return p * (win_p + win_f + 1) + (k - j + win_p)


def shift_pair_index(lengths: Lengths, shift_win: int, device=None) -> torch.Tensor:
    """The shift pairs of SPEC 4 as a ``LongTensor[2, P]`` of packed utterance ids (i, j):
    dialogue by dialogue, chunk by chunk, ``i`` outer and ``j`` inner. Vectorised."""
    lens = lengths_to_list(lengths)
    check_shift_win(shift_win)
    t = node_table(lens, device=device)
    w = t.length if shift_win == -1 else torch.full_like(t.length, shift_win)
    chunk_start = (t.local // w) * w  # local index of the chunk's first utterance
    size = torch.minimum(w, t.length - chunk_start)
    P = int(size.sum())
    row_node = torch.repeat_interleave(torch.arange(len(size), device=device), size)
    first = torch.cumsum(size, 0) - size
    j_local = chunk_start[row_node] + (torch.arange(P, device=device) - first[row_node])
    j = t.start[row_node] + j_local
    return torch.stack([row_node, j])


def shift_pair_labels(sentiment: torch.Tensor, lengths: Lengths, shift_win: int) -> torch.Tensor:
    """Pair labels of SPEC 4: 1 where ``sentiment[i] != sentiment[j]``, else 0. ``LongTensor[P]``.

    ``sentiment`` is the packed ``[N]`` vector of per-utterance sentiment classes.
    """
    lens = lengths_to_list(lengths)
    check_sentiment(sentiment, sum(lens))
    if sentiment.numel() != sum(lens):
        raise ValueError(f"sentiment has {sentiment.numel()} entries but sum(lengths) = {sum(lens)}")
    idx = shift_pair_index(lens, shift_win, device=sentiment.device)
    return (sentiment[idx[0]] != sentiment[idx[1]]).long()
