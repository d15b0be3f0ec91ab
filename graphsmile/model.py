"""The GraphSmile model (SPEC 6) on graphsmile's graph ops.

Architecture and parameter names mirror the original ``model.py``/``module.py``
(lijfrank-open/GraphSmile), so its state dicts load with :meth:`GraphSmile.from_original_state_dict`;
the original's Python loops and dense ``[2N, 2N]`` adjacency are replaced by
:func:`graphsmile.ops.window_norm` / :func:`graphsmile.ops.window_spmm` (banded propagation,
normalisation computed once per graph module and forward) and
:func:`graphsmile.ops.shift_pair_logits` (shift-pair logits without the ``[P, 2H]`` pair
embeddings).

Data flow for a batch of ``B`` dialogues, lengths ``L_b``, ``T = max L_b`` (padded),
``N = sum L_b`` (packed, dialogue-major)::

    textf0..3 [T,B,Dt]  --pack-->  [N,Dt] --BatchNorm1d (one per text set)--> merge (textf_mode)
        --dim_layer_t--> t [N,H]
    visual [T,B,Dv] --pack--> dim_layer_v --> v [N,H];  audio [T,B,Da] --pack--> dim_layer_a --> a
    hetergconv_tv(t, v) -> (tv_t, tv_v);  hetergconv_ta(t, a) -> (ta_t, ta_a);
    hetergconv_va(v, a) -> (va_v, va_a)
    fused = mean of modal_fusion(.) over the six blocks                       [N, H]
    emo_output(fused) [N, n_emotions], sen_output(fused) [N, 3],
    senshift(fused, fused) [P, 2] (P = sum over shift chunks of size^2), or with
    ``shift_sentiment`` the shift loss itself: (NLL sum, confusion [2, 2]) from
    :func:`graphsmile.ops.shift_pair_nll`, in O(N + P/32) memory

Differences from the original, none of which changes outputs (by default):

- Features are packed before the projections (row-wise ops), so no compute is spent on
  padding. The text BatchNorms run on the padded tensor in training mode, as the original's
  (their batch statistics count the padded rows); ``bn_include_padding=False`` (opt-in) makes
  them see real utterances only.
- BatchNorms of text sets that ``textf_mode`` does not use are kept (for state-dict
  compatibility) but skipped and frozen; the template ``fc_layer`` of each graph module
  (unused in the original's forward too) is frozen. Frozen parameters never receive
  gradients in either implementation; freezing them keeps DDP from needing
  ``find_unused_parameters``.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import ops
from .config import GraphSmileConfig
from .ops.index import host_to_device, lengths_to_list

__all__ = [
    "GraphSmile",
    "HeterGConvEdge",
    "HeterGConvLayer",
    "SGConv",
    "SenShiftFeat",
    "lengths_from_umask",
    "pack_padded",
    "packed_index",
]

Lengths = Union[Sequence[int], torch.Tensor]


# --- packing ------------------------------------------------------------------------------


def packed_index(lengths: Sequence[int], batch_size: int, device=None) -> torch.Tensor:
    """Row ids, in the ``[T * B]`` flattening of a time-major padded tensor, of the real
    utterances in packed (dialogue-major) order: entry ``s_b + t`` is ``t * B + b``.

    ``lengths``: the ``B`` dialogue lengths (Python ints). Returns ``LongTensor[N]``. Built with
    tensor ops on ``device`` (no Python loop over dialogues, no host sync).
    """
    lens = list(lengths)
    N = sum(lens)
    # built on the host, uploaded from pinned memory: torch.tensor(..., device="cuda") would
    # block the host until the GPU had finished all queued work
    L = host_to_device(torch.tensor(lens, dtype=torch.long), device)
    dia = torch.repeat_interleave(torch.arange(batch_size, device=device), L, output_size=N)
    starts = torch.cumsum(L, 0) - L
    t = torch.arange(N, device=device) - starts[dia]
    return t * batch_size + dia


def pack_padded(x: torch.Tensor, lengths: Lengths, index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Packs a time-major padded tensor ``x`` (``[T, B, *]``) into ``[N, *]``: dialogue 0's
    first ``L_0`` steps, then dialogue 1's, ... (the original's ``batch_to_all_tva``, without
    its loop). Works for features ``[T, B, D]`` and labels ``[T, B]`` alike. ``index``: a
    precomputed :func:`packed_index` for these lengths and ``B``."""
    lens = lengths_to_list(lengths)
    if x.dim() < 2:
        raise ValueError(f"x must be time-major [T, B, ...], got shape {tuple(x.shape)}")
    T, B = x.shape[0], x.shape[1]
    if len(lens) != B:
        raise ValueError(f"x has batch size B = {B} but lengths has {len(lens)} entries")
    if max(lens) > T:
        raise ValueError(f"x has T = {T} time steps but the longest dialogue has {max(lens)} utterances")
    if index is None:
        index = packed_index(lens, B, device=x.device)
    return x.reshape(T * B, *x.shape[2:]).index_select(0, index)


def lengths_from_umask(umask: torch.Tensor) -> List[int]:
    """Dialogue lengths from a ``[T, B]`` utterance mask, as the original trainer derives them:
    1 + the last time step where the mask equals 1, per column. Raises if a column has none."""
    if not isinstance(umask, torch.Tensor) or umask.dim() != 2:
        raise ValueError(f"umask must be a [T, B] tensor, got {getattr(umask, 'shape', type(umask))}")
    T = umask.shape[0]
    steps = torch.arange(T, device=umask.device).unsqueeze(1).expand_as(umask)
    last = torch.where(umask == 1, steps, torch.full_like(steps, -1)).max(dim=0).values + 1
    lens = [int(v) for v in last.tolist()]
    empty = [b for b, L in enumerate(lens) if L == 0]
    if empty:
        raise ValueError(f"umask marks no utterance in dialogue(s) {empty}; every dialogue needs at least one")
    return lens


# --- graph modules ------------------------------------------------------------------------


class SGConv(nn.Module):
    """One graph layer (the original's ``SGConv_Our``): ``out = propagate(x @ W) + b``.

    ``weight``: ``[in_features, out_features]`` (stored as (in, out), like the original),
    ``bias``: ``[out_features]``; both initialised ``U(-1/sqrt(out), 1/sqrt(out))``. The product
    with ``W`` comes first, then the propagation, as in the original (``spmm(adj, x @ W)``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.weight.size(1))
        with torch.no_grad():
            self.weight.uniform_(-stdv, stdv)
            if self.bias is not None:
                self.bias.uniform_(-stdv, stdv)

    def forward(self, x: torch.Tensor, propagate) -> torch.Tensor:
        """``x``: ``[M*N, in]``; ``propagate``: ``[M*N, out] -> [M*N, out]``, the normalised
        cross-modal propagation of the current batch. Returns ``[M*N, out]``."""
        out = propagate(torch.matmul(x, self.weight))
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class HeterGConvLayer(nn.Module):
    """Wrapper holding one :class:`SGConv` as ``hetergconv`` (the original's name and nesting,
    kept so parameter names match: ``hetergcn_layers.{l}.hetergconv.{weight,bias}``)."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.hetergconv = SGConv(hidden_dim, hidden_dim)

    def forward(self, x: torch.Tensor, propagate) -> torch.Tensor:
        return self.hetergconv(x, propagate)


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    # deepcopy, as the original's _get_clones: every layer starts from the same initial values.
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class HeterGConvEdge(nn.Module):
    """A cross-modal graph module (the original's ``HeterGConv_Edge``, SPEC 3).

    Nodes are the ``M*N`` utterances of ``M`` modalities (modality-major), edges the windowed
    cross-modal edges of SPEC 2 with learnable weights ``edge_weight``. With ``s`` the
    symmetric normalisation (computed once per forward) and ``P(z) = diag(s) A diag(s) z``::

        h_0 = x,   h_{l+1} = P(h_l @ W_l) + b_l,
        out = x + sum_{l=1..K} Dropout(LeakyReLU(fc_l(h_l)))

    and ``out`` is returned split into its ``M`` modality blocks. (Each ``fc_layers.{l}`` is
    ``Sequential(Linear, LeakyReLU, Dropout)``, so the dropout acts on each term, as in the
    original.)

    Parameters: ``edge_weight`` (``per_edge``: ``[edge_capacity]``; ``relative``:
    ``[M, M-1, win_p + win_f + 1]``; ones), ``hetergcn_layers.{l}.hetergconv.{weight, bias}``,
    ``fc_layer.0.{weight, bias}`` (the original's clone template: unused, frozen, kept for state
    dicts), ``fc_layers.{l}.0.{weight, bias}``.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_layers: int,
        dropout: float,
        win_p: int,
        win_f: int,
        edge_weights: str = "per_edge",
        edge_capacity: int = 500_000,
        num_modal: int = 2,
        backend: str = "auto",
    ):
        super().__init__()
        ops.index.check_window(win_p, win_f, num_modal)
        if edge_weights not in ops.WEIGHT_MODES:
            raise ValueError(f"edge_weights must be one of {list(ops.WEIGHT_MODES)}, got {edge_weights!r}")
        if edge_weights == "relative" and (win_p < 0 or win_f < 0):
            raise ValueError(f"edge_weights='relative' needs finite windows, got win_p={win_p}, win_f={win_f}")
        self.num_layers = num_layers
        self.num_modal = num_modal
        self.win_p, self.win_f = win_p, win_f
        self.weight_mode = edge_weights
        self.backend = backend
        # Creation order = the original's (layer template, then fc template), so a given seed
        # draws the same initial values.
        template = HeterGConvLayer(hidden_dim)
        if edge_weights == "per_edge":
            self.edge_weight = nn.Parameter(torch.ones(edge_capacity))
        else:
            self.edge_weight = nn.Parameter(torch.ones(num_modal, num_modal - 1, win_p + win_f + 1))
        self.hetergcn_layers = _clones(template, num_layers)
        self.fc_layer = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(), nn.Dropout(dropout))
        self.fc_layers = _clones(self.fc_layer, num_layers)
        self.fc_layer.requires_grad_(False)

    def num_edges(self, lengths: Lengths) -> int:
        """``E`` of a batch with these dialogue lengths."""
        return ops.num_edges(lengths, self.num_modal, self.win_p, self.win_f)

    def forward(self, features: Union[torch.Tensor, Sequence[torch.Tensor]], lengths: Lengths) -> Tuple[torch.Tensor, ...]:
        """``features``: ``M`` tensors ``[N, H]`` (or one ``[M*N, H]``, modality-major);
        ``lengths``: the dialogue lengths (``sum = N``). Returns ``M`` tensors ``[N, H]``.

        Raises ``ValueError`` (from the op) if a ``per_edge`` batch has more edges than
        ``edge_capacity``.
        """
        lens = lengths_to_list(lengths)
        x = features if isinstance(features, torch.Tensor) else torch.cat(list(features), dim=0)
        M = self.num_modal
        if self.num_layers == 0:
            return tuple(x.chunk(M, dim=0))
        # the batch's graph, its arguments checked once for the norm and every layer's spmm
        graph = ops.WindowGraph(lens, M, self.win_p, self.win_f, self.weight_mode, self.backend)
        w = self.edge_weight
        if self.weight_mode == "per_edge":
            # Only the first E weights are used. Slicing here makes every layer's weight
            # gradient E entries long instead of edge_capacity (500,000): the full-size
            # gradient is then materialised once per module, not once per layer. A batch with
            # E > capacity still reaches the op's capacity error (the slice has < E entries).
            w = w[: graph.num_edges]
        s = graph.norm(w)  # once per forward, shared by every layer
        if x.dtype != w.dtype:
            # Mixed precision: the op wants equal dtypes. The degrees were summed in the
            # parameter's precision above.
            w, s = w.to(x.dtype), s.to(x.dtype)

        def propagate(z: torch.Tensor) -> torch.Tensor:
            if z.dtype != w.dtype:  # e.g. autocast produced a different dtype for this layer
                return graph.spmm(z, w.to(z.dtype), s.to(z.dtype))
            return graph.spmm(z, w, s)

        out = x
        h = x
        for layer, fc in zip(self.hetergcn_layers, self.fc_layers):
            h = layer(h, propagate)
            out = out + fc(h)
        return tuple(out.chunk(M, dim=0))


class SenShiftFeat(nn.Module):
    """Sentiment-shift head (the original's ``SenShift_Feat``, SPEC 4).

    ``shift_output_layer = Sequential(Linear(2H, 2))``; for every pair ``(i, j)`` of the same
    shift chunk, ``logits = W [u_i ; v_j] + b``, computed by
    :func:`graphsmile.ops.shift_pair_logits` without the ``[P, 2H]`` pair embeddings.
    """

    def __init__(self, hidden_dim: int, shift_win: int, backend: str = "auto"):
        super().__init__()
        ops.index.check_shift_win(shift_win)
        self.shift_win = shift_win
        self.backend = backend
        self.shift_output_layer = nn.Sequential(nn.Linear(2 * hidden_dim, 2))

    def _head(self, u: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The head's weight and bias in ``u``'s dtype (mixed precision)."""
        lin = self.shift_output_layer[0]
        weight, bias = lin.weight, lin.bias
        if weight.dtype != u.dtype:
            weight = weight.to(u.dtype)
            bias = bias.to(u.dtype) if bias is not None else None
        return weight, bias

    def forward(self, u: torch.Tensor, v: Optional[torch.Tensor], lengths: Lengths) -> torch.Tensor:
        """``u, v``: ``[N, H]`` (``v=None``: ``u``). Returns ``[P, 2]``."""
        weight, bias = self._head(u)
        return ops.shift_pair_logits(u, u if v is None else v, lengths, self.shift_win, weight, bias, self.backend)

    def nll(self, u: torch.Tensor, v: Optional[torch.Tensor], lengths: Lengths, sentiment: torch.Tensor,
            reduction: str = "sum") -> Tuple[torch.Tensor, torch.Tensor]:
        """The head and its loss fused (:func:`graphsmile.ops.shift_pair_nll`): ``(loss,
        confusion [2, 2])`` over the pairs with labels ``sentiment_i != sentiment_j``, without
        the ``[P, 2]`` logits. ``loss`` is the NLL summed over pairs (``reduction="sum"``) or
        their mean; float32 (float64 for float64 features)."""
        weight, bias = self._head(u)
        return ops.shift_pair_nll(u, u if v is None else v, lengths, self.shift_win, weight, bias, sentiment, reduction,
                                  self.backend)


# --- the model ----------------------------------------------------------------------------


_DDP_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _DDP_PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                changed = True
    return key


class GraphSmile(nn.Module):
    """GraphSmile (SPEC 6) for multimodal emotion recognition in conversation.

    Parameters (names as the original's): ``batchnorms_t.{0..3}`` (``BatchNorm1d(Dt)``),
    ``dim_layer_{t,v,a}.0`` (``Linear(in, H)``; text ``in`` = ``Dt``, or ``2*Dt``/``4*Dt`` for
    concat2/concat4), ``hetergconv_{tv,ta,va}`` (:class:`HeterGConvEdge` with
    ``heter_n_layers`` layers), ``modal_fusion.0`` (``Linear(H, H)``), ``emo_output``
    (``Linear(H, n_emotions)``), ``sen_output`` (``Linear(H, 3)``),
    ``senshift.shift_output_layer.0`` (``Linear(2H, 2)``).

    Text modes: ``textf{i}`` projects set ``i``; ``concat2``/``concat4`` project the
    concatenation of the first 2/4 sets (each batch-normalised by its own BatchNorm);
    ``sum2``/``sum4`` apply the one shared ``dim_layer_t`` to each of the first 2/4
    batch-normalised sets and average the results (the original's structure; dropout is drawn
    independently per set).
    """

    def __init__(self, config: Optional[GraphSmileConfig] = None):
        super().__init__()
        config = GraphSmileConfig() if config is None else config
        if not isinstance(config, GraphSmileConfig):
            raise TypeError(f"config must be a GraphSmileConfig, got {type(config).__name__}")
        self.config = config
        Dt, Dv, Da = config.feature_dims
        H, p = config.hidden_dim, config.drop
        self.text_sets = config.text_sets

        # Creation order = the original's, so a given seed draws the same initial values.
        self.batchnorms_t = nn.ModuleList(nn.BatchNorm1d(Dt) for _ in range(4))
        in_t = {"concat4": 4 * Dt, "concat2": 2 * Dt}.get(config.textf_mode, Dt)
        self.dim_layer_t = nn.Sequential(nn.Linear(in_t, H), nn.LeakyReLU(), nn.Dropout(p))
        self.dim_layer_v = nn.Sequential(nn.Linear(Dv, H), nn.LeakyReLU(), nn.Dropout(p))
        self.dim_layer_a = nn.Sequential(nn.Linear(Da, H), nn.LeakyReLU(), nn.Dropout(p))
        graph = dict(
            hidden_dim=H, dropout=p, win_p=config.win_p, win_f=config.win_f, edge_weights=config.edge_weights,
            edge_capacity=config.edge_capacity, num_modal=2, backend=config.backend,
        )
        self.hetergconv_tv = HeterGConvEdge(num_layers=config.heter_n_layers[0], **graph)
        self.hetergconv_ta = HeterGConvEdge(num_layers=config.heter_n_layers[1], **graph)
        self.hetergconv_va = HeterGConvEdge(num_layers=config.heter_n_layers[2], **graph)
        self.modal_fusion = nn.Sequential(nn.Linear(H, H), nn.LeakyReLU())
        self.emo_output = nn.Linear(H, config.num_emotions)
        self.sen_output = nn.Linear(H, 3)
        self.senshift = SenShiftFeat(H, config.shift_win, backend=config.backend)

        for i, bn in enumerate(self.batchnorms_t):
            if i not in self.text_sets:
                bn.requires_grad_(False)

    # --- input checks -------------------------------------------------------------------

    def _check_inputs(self, texts, visual, audio, umask, qmask, lengths) -> Tuple[int, int, List[int]]:
        cfg = self.config

        def check3(name, x, width, field):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a tensor [T, B, {field}], got {type(x).__name__}")
            if x.dim() != 3:
                raise ValueError(f"{name} must be time-major [T, B, {field}], got shape {tuple(x.shape)}")
            if x.shape[2] != width:
                raise ValueError(
                    f"{name} has feature width {x.shape[2]} but the config expects {field} = {width} "
                    f"(dataset {cfg.dataset!r}); set {field} in GraphSmileConfig to match the features"
                )

        check3("visual", visual, cfg.visual_dim, "dim_v")
        T, B = visual.shape[0], visual.shape[1]
        check3("audio", audio, cfg.audio_dim, "dim_a")
        named = [("visual", visual), ("audio", audio)]
        for i in self.text_sets:
            if texts[i] is None:
                raise ValueError(f"textf_mode={cfg.textf_mode!r} uses textf{i}, which is None")
            check3(f"textf{i}", texts[i], cfg.text_dim, "dim_t")
            named.append((f"textf{i}", texts[i]))
        for name, x in named:
            if tuple(x.shape[:2]) != (T, B):
                raise ValueError(
                    f"{name} has [T, B] = {list(x.shape[:2])} but visual has [T, B] = [{T}, {B}]; "
                    "all features must be padded to the same [T, B]"
                )
        if umask is not None:
            if not isinstance(umask, torch.Tensor) or tuple(umask.shape) != (T, B):
                shape = tuple(umask.shape) if isinstance(umask, torch.Tensor) else type(umask).__name__
                hint = " (it looks batch-major [B, T]; GraphSmile's umask is time-major [T, B])" if shape == (B, T) else ""
                raise ValueError(f"umask must be [T, B] = [{T}, {B}], got {shape}{hint}")
        if qmask is not None and isinstance(qmask, torch.Tensor) and (qmask.dim() < 2 or tuple(qmask.shape[:2]) != (T, B)):
            raise ValueError(f"qmask must be [T, B, S] with [T, B] = [{T}, {B}], got shape {tuple(qmask.shape)}")

        if lengths is None:
            lens = lengths_from_umask(umask) if umask is not None else [T] * B
        else:
            lens = lengths_to_list(lengths)
        if len(lens) != B:
            raise ValueError(f"lengths has {len(lens)} entries but the features hold B = {B} dialogues")
        if max(lens) > T:
            raise ValueError(f"the longest dialogue has {max(lens)} utterances but the features have only T = {T} time steps")
        return T, B, lens

    # --- forward ------------------------------------------------------------------------

    def _text(self, texts, lens: List[int], index: torch.Tensor, T: int, B: int) -> torch.Tensor:
        feats = []
        for i in self.text_sets:
            x, bn = texts[i], self.batchnorms_t[i]
            if self.config.bn_include_padding and bn.training:
                # The original's statistics: BatchNorm over all T*B rows, padding included.
                x = bn(x.reshape(T * B, x.shape[2])).index_select(0, index)
            else:
                x = bn(pack_padded(x, lens, index))
            feats.append(x)
        mode = self.config.textf_mode
        if mode.startswith("concat"):
            return self.dim_layer_t(torch.cat(feats, dim=-1))
        if mode.startswith("sum"):
            total = self.dim_layer_t(feats[0])
            for f in feats[1:]:
                total = total + self.dim_layer_t(f)
            return total / len(feats)
        return self.dim_layer_t(feats[0])

    def forward(
        self,
        textf0: Optional[torch.Tensor],
        textf1: Optional[torch.Tensor],
        textf2: Optional[torch.Tensor],
        textf3: Optional[torch.Tensor],
        visual: torch.Tensor,
        audio: torch.Tensor,
        umask: Optional[torch.Tensor] = None,
        qmask: Optional[torch.Tensor] = None,
        lengths: Optional[Lengths] = None,
        *,
        pack_index: Optional[torch.Tensor] = None,
        shift_sentiment: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Any, torch.Tensor]:
        """The original's call signature and outputs.

        Args:
            textf0..textf3: text feature sets ``[T, B, Dt]``, zero-padded (sets that
                ``textf_mode`` does not use may be ``None``).
            visual: ``[T, B, Dv]``; audio: ``[T, B, Da]``.
            umask: ``[T, B]`` utterance mask (1 at real utterances); used only to derive
                ``lengths`` when those are not given.
            qmask: ``[T, B, S]`` speaker one-hot; unused, as in the original.
            lengths: the ``B`` dialogue lengths (list of ints or 1-D tensor); default: from
                ``umask``, else every dialogue of length ``T``. A list of Python ints needs
                no device-to-host read (``umask`` or a tensor on the GPU does).
            pack_index: optional precomputed :func:`packed_index` of ``lengths`` (int64
                ``[N]`` on the features' device). Without it the index is built every forward
                from the host lengths, which on CUDA is a blocking host-to-device copy; the
                trainer's device-resident batches carry it (built once per epoch).
            shift_sentiment: optional packed sentiment labels (int ``[N]``, on the features'
                device). Given, the third output is the shift task's loss instead of its
                logits: ``(NLL summed over the P pairs, confusion [2, 2] int64 indexed [label,
                prediction])``, from :meth:`SenShiftFeat.nll` (the same math, without the
                ``[P, 2]`` logits: O(N + P/32) memory where those are 2P values, e.g. 4e8 pairs for one
                20,000-utterance dialogue with ``shift_win = -1``). The trainer's default.

        Returns:
            ``(emotion_logits [N, n_emotions], sentiment_logits [N, 3], shift_logits [P, 2],
            fused_features [N, H])``, rows in packed order (dialogue 0's utterances, then
            dialogue 1's, ...), shift pairs in the order of SPEC 4 (with ``shift_sentiment``:
            ``shift_logits`` replaced by ``(shift_nll_sum, shift_confusion)``).
        """
        texts = (textf0, textf1, textf2, textf3)
        T, B, lens = self._check_inputs(texts, visual, audio, umask, qmask, lengths)
        if pack_index is None:
            index = packed_index(lens, B, device=visual.device)
        else:
            # host-side checks only (shape, dtype, device): reading values would sync
            N = sum(lens)
            if (not isinstance(pack_index, torch.Tensor) or pack_index.dtype != torch.long
                    or tuple(pack_index.shape) != (N,) or pack_index.device != visual.device):
                raise ValueError(f"pack_index must be an int64 tensor [N] = [{N}] on {visual.device} (packed_index of "
                                 f"lengths), got {getattr(pack_index, 'dtype', type(pack_index).__name__)} "
                                 f"{tuple(getattr(pack_index, 'shape', ()))} on {getattr(pack_index, 'device', None)}")
            index = pack_index

        t = self._text(texts, lens, index, T, B)
        v = self.dim_layer_v(pack_padded(visual, lens, index))
        a = self.dim_layer_a(pack_padded(audio, lens, index))

        tv_t, tv_v = self.hetergconv_tv((t, v), lens)
        ta_t, ta_a = self.hetergconv_ta((t, a), lens)
        va_v, va_a = self.hetergconv_va((v, a), lens)

        f = self.modal_fusion  # the original's summation order
        fused = (f(tv_t) + f(ta_t) + f(tv_v) + f(va_v) + f(ta_a) + f(va_a)) / 6

        logit_emo = self.emo_output(fused)
        logit_sen = self.sen_output(fused)
        if shift_sentiment is not None:
            return logit_emo, logit_sen, self.senshift.nll(fused, fused, lens, shift_sentiment), fused
        logit_shift = self.senshift(fused, fused, lens)
        return logit_emo, logit_sen, logit_shift, fused

    def num_edges(self, lengths: Lengths) -> int:
        """``E`` per graph module for a batch with these lengths (must be ``<= edge_capacity``
        in ``per_edge`` mode)."""
        return self.hetergconv_tv.num_edges(lengths)

    def set_backend(self, backend: str) -> "GraphSmile":
        """Switches the graph ops' backend (one of ``graphsmile.ops.BACKENDS``) in place;
        ``self.config`` is updated to match. Returns ``self``."""
        self.config = self.config.replace(backend=backend)  # validates
        for m in (self.hetergconv_tv, self.hetergconv_ta, self.hetergconv_va, self.senshift):
            m.backend = backend
        return self

    # --- the original's state dicts -----------------------------------------------------

    def load_original_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> Dict[str, List[str]]:
        """Loads a state dict saved from the original GraphSmile (with or without the
        ``module.`` prefix of DDP, or ``_orig_mod.`` of ``torch.compile``).

        Shapes are checked first (``ValueError`` naming each key, the expected and the found
        shape). ``strict=True``: missing or unexpected keys raise ``KeyError`` listing them
        (a missing BatchNorm ``num_batches_tracked``, absent from old checkpoints, is
        tolerated); ``strict=False``: they are reported with a warning and skipped. Returns
        ``{"missing": [...], "unexpected": [...]}``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
        sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for k, v in state_dict.items():
            name = _strip_prefixes(k)
            if name in sd:
                raise ValueError(f"state_dict has key {name!r} twice (with and without a module./_orig_mod. prefix)")
            sd[name] = v
        own = self.state_dict()

        bad = []
        for k, v in sd.items():
            if k in own and tuple(v.shape) != tuple(own[k].shape):
                bad.append(f"{k}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}")
        if bad:
            hints = []
            if any(b.split(":")[0].endswith("edge_weight") for b in bad):
                hints.append(
                    "edge_weight: the original stores a per-edge vector of 500000 entries; use "
                    "edge_weights='per_edge' and edge_capacity equal to its length"
                )
            if any(b.startswith("dim_layer_") for b in bad):
                hints.append("dim_layer_*: check textf_mode, dim_t/dim_v/dim_a (dataset) and hidden_dim")
            raise ValueError(
                "shape mismatch between the state dict and GraphSmile(config):\n  " + "\n  ".join(bad)
                + ("\nhints:\n  " + "\n  ".join(hints) if hints else "")
            )

        missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected:
            msg = (
                f"state dict does not match GraphSmile(config): {len(missing)} missing key(s) {missing}, "
                f"{len(unexpected)} unexpected key(s) {unexpected}"
            )
            if strict:
                raise KeyError(msg)
            warnings.warn(msg + "; loading the rest (strict=False)")
        self.load_state_dict(OrderedDict((k, v) for k, v in sd.items() if k in own), strict=False)
        return {"missing": missing, "unexpected": unexpected}

    @classmethod
    def from_original_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], config: GraphSmileConfig, strict: bool = True
    ) -> "GraphSmile":
        """A model built from ``config`` with the weights of an original GraphSmile state dict
        (see :meth:`load_original_state_dict`). ``config`` must describe the original run
        (dataset or dims, ``textf_mode``, ``hidden_dim``, ``heter_n_layers``, ``win``,
        ``shift_win``; ``edge_weights='per_edge'``, ``edge_capacity=500000``)."""
        model = cls(config)
        model.load_original_state_dict(state_dict, strict=strict)
        return model

    def to_original_state_dict(self, ddp_prefix: bool = False) -> "OrderedDict[str, torch.Tensor]":
        """The state dict under the original's names (identical to ours), loadable into the
        original model; ``ddp_prefix=True`` prefixes ``module.``. Needs ``per_edge`` weights."""
        if self.config.edge_weights != "per_edge":
            raise ValueError("the original model has per-edge weights only; a model with edge_weights='relative' has no original equivalent")
        prefix = "module." if ddp_prefix else ""
        return OrderedDict((prefix + k, v) for k, v in self.state_dict().items())
