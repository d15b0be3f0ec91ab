"""Configuration of the GraphSmile model and of its training (SPEC 6 and 10).

:class:`GraphSmileConfig` keeps the option names of the original ``run.py`` (``dataset``,
``textf_mode``, ``hidden_dim``, ``win``, ``heter_n_layers``, ``drop``, ``shift_win``, ``lr``,
``l2``, ``batch_size``, ``epochs``, ``loss_type``, ``lambd``) and adds what our implementation
needs (``edge_weights``, ``edge_capacity``, ``backend``, ``bn_include_padding``). Its defaults
are the original's argparse defaults; :meth:`GraphSmileConfig.preset` gives the paper's settings
per dataset.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from .ops import BACKENDS as _BACKENDS

__all__ = [
    "DATASETS",
    "DATASET_DIMS",
    "DATASET_EMOTIONS",
    "EDGE_WEIGHT_MODES",
    "LOSS_TYPES",
    "PRESETS",
    "SHIFT_LOSSES",
    "TEXTF_MODES",
    "GraphSmileConfig",
]

#: Feature widths (text, visual, audio) of the common pre-extracted feature files (SPEC 7).
DATASET_DIMS: Dict[str, Tuple[int, int, int]] = {
    "IEMOCAP": (1024, 342, 1582),
    "IEMOCAP4": (1024, 512, 100),
    "MELD": (1024, 342, 300),
    "CMUMOSEI7": (1024, 35, 384),
}
#: Number of emotion classes per dataset (CMUMOSEI7: 7 sentiment-score bins).
DATASET_EMOTIONS: Dict[str, int] = {"IEMOCAP": 6, "IEMOCAP4": 4, "MELD": 7, "CMUMOSEI7": 7}
DATASETS = tuple(DATASET_DIMS)

#: ``textf_mode`` -> indices of the text feature sets it uses.
TEXTF_MODES: Dict[str, Tuple[int, ...]] = {
    "textf0": (0,),
    "textf1": (1,),
    "textf2": (2,),
    "textf3": (3,),
    "concat2": (0, 1),
    "concat4": (0, 1, 2, 3),
    "sum2": (0, 1),
    "sum4": (0, 1, 2, 3),
}
EDGE_WEIGHT_MODES = ("per_edge", "relative")
#: How the trainer computes the sentiment-shift loss (``GraphSmileConfig.shift_loss``).
SHIFT_LOSSES = ("fused", "logits")
LOSS_TYPES = ("emo_sen_sft", "emo_sen", "emo_sft", "emo", "sen_sft", "sen", "epoch", "auto")

#: The paper's settings (arXiv 2407.21536v2 Table III; hidden sizes and epochs from the
#: original README's commands). ``l2`` stays at the code's default 1e-4: the paper states 1e-3
#: but the README commands never set ``--l2``. ``lambd[0]`` (emotion) is 1.0 everywhere.
PRESETS: Dict[str, Dict[str, Any]] = {
    "IEMOCAP": dict(lr=1e-4, batch_size=16, drop=0.2, heter_n_layers=(7, 7, 7), win=(17, 17), shift_win=19,
                    lambd=(1.0, 1.0, 0.7), hidden_dim=512, epochs=120),
    "IEMOCAP4": dict(lr=3e-4, batch_size=16, drop=0.2, heter_n_layers=(4, 4, 4), win=(5, 5), shift_win=10,
                     lambd=(1.0, 0.6, 0.6), hidden_dim=256, epochs=120),
    "MELD": dict(lr=7e-5, batch_size=16, drop=0.2, heter_n_layers=(5, 5, 5), win=(3, 3), shift_win=3,
                 lambd=(1.0, 0.5, 0.2), hidden_dim=384, epochs=50),
    "CMUMOSEI7": dict(lr=8e-5, batch_size=32, drop=0.4, heter_n_layers=(2, 2, 2), win=(5, 5), shift_win=2,
                      lambd=(1.0, 0.8, 1.0), hidden_dim=256, epochs=60),
}


def _plain(v: Any) -> Any:
    """numpy (or other numbers-ABC) integer and real scalars as Python ``int`` / ``float``, also
    inside lists and tuples: a config built from numpy values (a sweep's grid) then validates,
    compares and serialises like one built from literals."""
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class GraphSmileConfig:
    """Every setting of one GraphSmile model and its training run.

    Model:
        dataset: ``"IEMOCAP"``, ``"IEMOCAP4"``, ``"MELD"`` or ``"CMUMOSEI7"``; sets the feature
            widths and the number of emotion classes unless those are given.
        textf_mode: which text feature sets feed the text projection: ``textf0..textf3`` (one),
            ``concat2``/``concat4`` (the first 2/4 concatenated, one projection of width
            ``2*Dt``/``4*Dt``), ``sum2``/``sum4`` (the shared projection applied to each of the
            first 2/4 and averaged).
        hidden_dim: ``H``, the width of every node feature.
        win: ``(win_p, win_f)``: past/future window of the cross-modal edges, each ``-1``
            (whole dialogue) or ``>= 0``.
        heter_n_layers: ``(K_tv, K_ta, K_va)``, graph layers of the three graph modules (>= 0).
        drop: dropout probability (projections and the graph modules' output terms).
        shift_win: chunk size of the sentiment-shift pairs, ``-1`` (whole dialogue) or ``> 0``.
        dim_t, dim_v, dim_a: feature widths; ``None`` = the dataset's (:data:`DATASET_DIMS`).
        n_emotions: emotion classes; ``None`` = the dataset's (:data:`DATASET_EMOTIONS`).
        edge_weights: ``"per_edge"`` (the original: a vector of ``edge_capacity`` weights,
            edge ``e`` of the batch uses entry ``e``) or ``"relative"`` (ours: one weight per
            modality pair and window offset, ``[2, 1, win_p + win_f + 1]``; finite windows only).
        edge_capacity: length of the per-edge weight vector (the original: 500,000). A batch
            with more edges fails with a clear error.
        backend: backend of the graph ops (``graphsmile.ops.BACKENDS``), ``"auto"`` picks the
            fastest for the tensors' device.
        bn_include_padding: ``True`` (the original, default): in training mode the text
            BatchNorms' batch statistics, and so their running statistics, also cover the
            padded positions (the original normalises the padded ``[T*B, Dt]`` tensor), so a
            dialogue's training-mode output depends on its batch's padding. ``False`` (ours,
            opt-in): real utterances only. Eval mode gives the same outputs for the same
            weights and running statistics, but a model trained one way has other statistics.

    Training (used by the trainer, not by the model):
        lr, l2: AdamW (amsgrad) learning rate and weight decay.
        batch_size: dialogues per batch.
        epochs: number of epochs (also ``E`` of the ``"epoch"`` loss weighting).
        loss_type: one of :data:`LOSS_TYPES` (see :mod:`graphsmile.losses`).
        lambd: ``(l_emo, l_sen, l_shift)`` loss weights.
        shift_loss: how the trainer computes the sentiment-shift loss: ``"fused"`` (default:
            :func:`graphsmile.ops.shift_pair_nll`, the head and its NLL in one pass with O(N)
            memory; the metrics come from its confusion counts) or ``"logits"`` (the
            original's way: the ``[P, 2]`` logits, then log_softmax and NLL; O(P) memory).
            The same math; results differ only by floating-point rounding.

    Defaults are the original ``run.py``'s argparse defaults; :meth:`preset` gives the paper's
    per-dataset settings. Lists are normalised to tuples; everything is validated on creation.
    """

    dataset: str = "IEMOCAP"
    textf_mode: str = "textf0"
    hidden_dim: int = 256
    win: Tuple[int, int] = (17, 17)
    heter_n_layers: Tuple[int, int, int] = (6, 6, 6)
    drop: float = 0.3
    shift_win: int = 12
    dim_t: Optional[int] = None
    dim_v: Optional[int] = None
    dim_a: Optional[int] = None
    n_emotions: Optional[int] = None
    edge_weights: str = "per_edge"
    edge_capacity: int = 500_000
    backend: str = "auto"
    bn_include_padding: bool = True
    # training
    lr: float = 1e-5
    l2: float = 1e-4
    batch_size: int = 32
    epochs: int = 100
    loss_type: str = "emo_sen_sft"
    lambd: Tuple[float, float, float] = field(default=(1.0, 1.0, 1.0))
    shift_loss: str = "fused"

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _plain(getattr(self, f.name)))
        if self.dataset not in DATASET_DIMS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)}")
        if self.textf_mode not in TEXTF_MODES:
            raise ValueError(f"unknown textf_mode {self.textf_mode!r}; choose one of {list(TEXTF_MODES)}")
        if not _is_int(self.hidden_dim) or self.hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be a positive int, got {self.hidden_dim!r}")

        self.win = self._int_tuple("win", self.win, 2)
        for name, w in zip(("win_p", "win_f"), self.win):
            if w < -1:
                raise ValueError(f"win: {name} must be -1 (whole dialogue) or >= 0, got {w}")
        self.heter_n_layers = self._int_tuple("heter_n_layers", self.heter_n_layers, 3)
        if any(k < 0 for k in self.heter_n_layers):
            raise ValueError(f"heter_n_layers must be 3 ints >= 0 (layers of the tv, ta, va graphs), got {self.heter_n_layers}")

        if not _is_real(self.drop) or not 0.0 <= self.drop < 1.0:
            raise ValueError(f"drop must be a probability in [0, 1), got {self.drop!r}")
        if not _is_int(self.shift_win) or not (self.shift_win == -1 or self.shift_win > 0):
            raise ValueError(f"shift_win must be -1 (whole dialogue) or an int > 0, got {self.shift_win!r}")

        for name in ("dim_t", "dim_v", "dim_a"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None (= the dataset's), got {v!r}")
        if self.n_emotions is not None and (not _is_int(self.n_emotions) or self.n_emotions < 2):
            raise ValueError(f"n_emotions must be an int >= 2 or None (= the dataset's), got {self.n_emotions!r}")

        if self.edge_weights not in EDGE_WEIGHT_MODES:
            raise ValueError(f"unknown edge_weights {self.edge_weights!r}; choose one of {list(EDGE_WEIGHT_MODES)}")
        if self.edge_weights == "relative" and min(self.win) < 0:
            raise ValueError(
                f"edge_weights='relative' needs finite windows (win_p, win_f >= 0), got win={self.win}; "
                "use edge_weights='per_edge' for unbounded windows"
            )
        if not _is_int(self.edge_capacity) or self.edge_capacity <= 0:
            raise ValueError(f"edge_capacity must be a positive int, got {self.edge_capacity!r}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {list(_BACKENDS)}")
        if not isinstance(self.bn_include_padding, bool):
            raise ValueError(f"bn_include_padding must be a bool, got {self.bn_include_padding!r}")

        if not _is_real(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not _is_real(self.l2) or self.l2 < 0:
            raise ValueError(f"l2 must be a number >= 0, got {self.l2!r}")
        if not _is_int(self.batch_size) or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not _is_int(self.epochs) or self.epochs <= 0:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; choose one of {list(LOSS_TYPES)}")
        lambd = tuple(self.lambd) if isinstance(self.lambd, (list, tuple)) else None
        if lambd is None or len(lambd) != 3 or not all(_is_real(v) for v in lambd):
            raise ValueError(f"lambd must be 3 numbers (emotion, sentiment, shift weights), got {self.lambd!r}")
        self.lambd = tuple(float(v) for v in lambd)
        if self.shift_loss not in SHIFT_LOSSES:
            raise ValueError(f"unknown shift_loss {self.shift_loss!r}; choose one of {list(SHIFT_LOSSES)}")

    @staticmethod
    def _int_tuple(name: str, value, n: int) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != n or not all(_is_int(v) for v in value):
            raise ValueError(f"{name} must be {n} ints, got {value!r}")
        return tuple(int(v) for v in value)

    # --- resolved values ---------------------------------------------------------------------

    @property
    def win_p(self) -> int:
        return self.win[0]

    @property
    def win_f(self) -> int:
        return self.win[1]

    @property
    def text_dim(self) -> int:
        """``Dt``: ``dim_t`` or the dataset's."""
        return self.dim_t if self.dim_t is not None else DATASET_DIMS[self.dataset][0]

    @property
    def visual_dim(self) -> int:
        """``Dv``: ``dim_v`` or the dataset's."""
        return self.dim_v if self.dim_v is not None else DATASET_DIMS[self.dataset][1]

    @property
    def audio_dim(self) -> int:
        """``Da``: ``dim_a`` or the dataset's."""
        return self.dim_a if self.dim_a is not None else DATASET_DIMS[self.dataset][2]

    @property
    def feature_dims(self) -> Tuple[int, int, int]:
        """``(Dt, Dv, Da)``, the original's ``embedding_dims``."""
        return (self.text_dim, self.visual_dim, self.audio_dim)

    @property
    def num_emotions(self) -> int:
        """``n_emotions`` or the dataset's."""
        return self.n_emotions if self.n_emotions is not None else DATASET_EMOTIONS[self.dataset]

    @property
    def text_sets(self) -> Tuple[int, ...]:
        """Indices of the text feature sets ``textf_mode`` uses."""
        return TEXTF_MODES[self.textf_mode]

    # --- construction / serialisation --------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides) -> "GraphSmileConfig":
        """The paper's settings for ``name`` (one of :data:`DATASETS`), with ``overrides``
        applied on top (e.g. ``preset("MELD", hidden_dim=16, dim_t=8)``).

        Settings: ``textf_mode="textf0"``, ``loss_type="emo_sen_sft"``, ``l2=1e-4``, and per
        dataset (lr, batch, dropout, layers, window, shift window, lambd, hidden, epochs):
        IEMOCAP 1e-4, 16, 0.2, 7, 17, 19, (1, 1, 0.7), 512, 120; IEMOCAP4 3e-4, 16, 0.2, 4, 5,
        10, (1, 0.6, 0.6), 256, 120; MELD 7e-5, 16, 0.2, 5, 3, 3, (1, 0.5, 0.2), 384, 50;
        CMUMOSEI7 8e-5, 32, 0.4, 2, 5, 2, (1, 0.8, 1), 256, 60 (epochs from the original
        README's commands).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
        kw: Dict[str, Any] = dict(dataset=name, textf_mode="textf0", loss_type="emo_sen_sft", l2=1e-4)
        kw.update(PRESETS[name])
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown GraphSmileConfig field(s) {unknown}")
        kw.update(overrides)
        return cls(**kw)

    def replace(self, **changes) -> "GraphSmileConfig":
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict (tuples become lists), as stored in checkpoints."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], strict: bool = True) -> "GraphSmileConfig":
        """Inverse of :meth:`to_dict`. Unknown keys raise (``strict=True``) or are ignored;
        missing keys take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and strict:
            raise ValueError(f"unknown GraphSmileConfig field(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k in names})
