"""Synthetic feature files in the exact layouts of the four datasets, with a learnable signal.

The real feature files are not redistributable; :func:`synthesize` writes stand-ins that
:func:`graphsmile.data.load_dataset` (and the original's ``dataloader.py``) read exactly like
the real ones: same tuple order and length, dicts keyed by dialogue id, per-utterance lists of
1-D numpy vectors, IEMOCAP-style string ids and ``'M'``/``'F'`` speakers, float64 visual features
for IEMOCAP, MELD's integer ids / 9-dim one-hot speakers / stored sentiments / ``None`` 14th
element / all-zero visual vectors, CMU-MOSEI's continuous scores on the annotators' 1/3 grid
(exact 0 and exact bin edges included). At ``scale=1`` the dialogue counts, utterance counts,
length ranges and feature widths are the real ones (SPEC section 7); class proportions follow
the real ones in expectation.

The planted signal (what a working model can learn, and what it needs context and several
modalities for):

* **Labels** follow a per-speaker Markov process. A speaker keeps their previous emotion with
  probability ``0.7``; otherwise (``0.1``) they take the emotion of the previous utterance when
  it was someone else's (contagion), or draw a fresh one from the dialogue's own class prior (a
  Dirichlet draw around the dataset's class proportions, so dialogues have a mood).
* **Each modality** carries a noisy projection of the label: class prototype vectors plus
  unit Gaussian noise per component plus a per-dialogue offset. In each modality the classes
  come in confusable pairs (prototypes nearly equal), and the pairs differ between modalities
  (text pairs ``(0,1),(2,3),..``; audio ``(1,2),(3,4),..``; visual ``(i, i + C//2)``), so any
  single modality is ambiguous and two of them resolve each other.
* **Context-only utterances**: a quarter of the utterances where a speaker kept their previous
  emotion carry no label signal in any modality (prototype replaced by zero); only the
  dialogue context tells their label.

Everything is drawn from ``numpy.random.Generator`` streams derived from ``seed``, so a seed
gives a byte-identical file. Features are generated vectorised over all utterances at once;
the full-size IEMOCAP file (7,433 utterances, ~190 MB) takes a few seconds.

``dims=`` makes small test files; such a file no longer matches the dataset's real widths, so
it must be loaded with ``load_dataset(..., dims=the_same_dims)`` (or ``dims="infer"``).
"""

from __future__ import annotations

import math
import os
import pickle
import struct
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from .formats import DatasetFormat, dataset_format

__all__ = ["synthesize", "SynthesisInfo", "REAL_SIZES"]


@dataclass(frozen=True)
class _Split:
    name: str
    dialogues: int
    utterances: int


@dataclass(frozen=True)
class _Sizes:
    splits: tuple[_Split, ...]
    min_len: int
    max_len: int
    gamma_shape: float          # spread of the length distribution
    class_weights: tuple[float, ...]


#: Real sizes per dataset: splits (train [+ dev] + test), length range, class proportions.
REAL_SIZES: dict[str, _Sizes] = {
    "IEMOCAP": _Sizes((_Split("train", 120, 5810), _Split("test", 31, 1623)), 8, 110, 3.0,
                      (648, 1084, 1708, 1103, 1041, 1849)),
    "IEMOCAP4": _Sizes((_Split("train", 120, 3600), _Split("test", 31, 943)), 3, 90, 2.5,
                       (648, 1084, 1708, 1103)),
    # MELD: trainVid lists train (0..1038) and dev (1039..1152, one id absent) together
    "MELD": _Sizes((_Split("train", 1039, 9989), _Split("dev", 113, 1109),
                    _Split("test", 280, 2610)), 1, 33, 1.6,
                   (6436, 1636, 358, 1002, 2308, 361, 1607)),
    "CMUMOSEI7": _Sizes((_Split("train", 2549, 18198), _Split("test", 646, 4662)), 1, 60, 1.3,
                        (0.02, 0.07, 0.15, 0.22, 0.31, 0.18, 0.05)),
}

# the MELD dev id absent from the common file, as an offset from the first dev id
_MELD_MISSING_DEV_OFFSET = 110
# Upper bound on one split's dialogues (scale or n_dialogues): the features are built in memory,
# and 100,000 IEMOCAP-length dialogues are already about 120 GB of fp32 features.
MAX_SPLIT_DIALOGUES = 100_000

# Markov process
_P_STAY = 0.7            # keep own previous emotion
_P_FOLLOW = 0.1          # take the previous (other speaker's) emotion
_P_FOLLOW_FIRST = 0.3    # ... on a speaker's first utterance
_Q_CONTEXT = 0.25        # fraction of "stay" utterances whose own signal is removed
_DIRICHLET = 8.0         # concentration of the per-dialogue class prior
_LABEL_TRIES = 24        # label draws to pick the closest class proportions from
# features: prototype separation per modality (text, visual, audio), within-pair spread,
# per-dialogue offset norm; noise is N(0, 1) per component
_SEP = (3.0, 2.2, 2.6)
_PAIR_EPS = 0.35
_OFFSET = 1.0
_MELD_ZERO_VISUAL = 0.35     # fraction of MELD utterances with an all-zero visual vector

_WORDS = ("i", "you", "we", "it", "that", "know", "really", "just", "what", "okay", "yeah",
          "no", "well", "think", "going", "right", "mean", "want", "here", "there", "the",
          "a", "and", "so", "but", "don't", "can't", "now", "never", "always", "maybe",
          "café", "déjà", "naïve", "señor", "über", "fiancée", "oh", "hey", "please")


@dataclass
class SynthesisInfo:
    """What :func:`synthesize` wrote.

    Attributes:
        path: the file.
        dataset: canonical dataset name.
        seed: the seed.
        dims: feature widths ``(text, visual, audio)`` written.
        ids: dialogue ids per split (``"train"``, ``"test"``, and ``"dev"`` for MELD, whose
            ``trainVid`` lists train then dev).
        lengths: utterance counts per split, aligned with ``ids``.
        class_counts: utterances per emotion class (int64 ``[C]``; CMUMOSEI7: per bin).
        n_context_only: utterances whose own label signal was removed.
    """

    path: str
    dataset: str
    seed: int
    dims: tuple[int, int, int]
    ids: dict[str, list] = field(default_factory=dict)
    lengths: dict[str, list[int]] = field(default_factory=dict)
    class_counts: np.ndarray | None = None
    n_context_only: int = 0

    @property
    def n_utterances(self) -> int:
        """Total utterances written."""
        return int(sum(sum(v) for v in self.lengths.values()))

    @property
    def n_dialogues(self) -> int:
        """Total dialogues written."""
        return int(sum(len(v) for v in self.ids.values()))


# ---------------------------------------------------------------------------------------------
# sizes and ids


def _fit_lengths(rng: np.random.Generator, n: int, total: int, lo: int, hi: int,
                 shape: float) -> np.ndarray:
    """``n`` lengths in ``[lo, hi]`` summing exactly to ``total`` (clamped to what is feasible);
    gamma-distributed around the mean; with ``n >= 10`` one is ``lo`` and one is ``hi``."""
    total = int(min(max(total, n * lo), n * hi))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    mean = total / n
    if hi == lo or mean <= lo:
        x = np.full(n, lo, dtype=np.int64)
    else:
        x = lo + rng.gamma(shape, (mean - lo) / shape, size=n)
        x = np.clip(np.rint(x), lo, hi).astype(np.int64)
    free = np.ones(n, dtype=bool)
    if n >= 10 and hi > lo and (n - 2) * lo <= total - lo - hi <= (n - 2) * hi:
        i, j = rng.choice(n, size=2, replace=False)
        x[i], x[j] = lo, hi
        free[[i, j]] = False
    diff = total - int(x.sum())
    while diff != 0:
        room = (x < hi) if diff > 0 else (x > lo)
        cand = np.flatnonzero(room & free)
        if cand.size == 0:          # only the pinned extremes can move
            cand = np.flatnonzero(room)
        pick = rng.choice(cand, size=min(abs(diff), cand.size), replace=False)
        x[pick] += 1 if diff > 0 else -1
        diff = total - int(x.sum())
    return x


def _iemocap_ids(rng: np.random.Generator, n: int, sessions: tuple[int, ...]) -> list[str]:
    pool = []
    for s in sessions:
        for g in "FM":
            pool += [f"Ses{s:02d}{g}_impro{k:02d}" for k in range(1, 9)]
            pool += [f"Ses{s:02d}{g}_script{a:02d}_{b}" for a in range(1, 4) for b in range(1, 4)]
    k = 9
    while len(pool) < n:
        pool += [f"Ses{s:02d}{g}_impro{k:02d}" for s in sessions for g in "FM"]
        k += 1
    pick = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[i] for i in pick]


def _youtube_ids(rng: np.random.Generator, n: int, taken: set) -> list[str]:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    out: list[str] = []
    while len(out) < n:
        for row in alphabet[rng.integers(0, 64, size=(n - len(out), 11))]:
            s = "".join(row)
            if s not in taken:
                taken.add(s)
                out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# speakers and labels


def _speakers(rng: np.random.Generator, fmt: DatasetFormat, lengths: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Speaker index per utterance, padded ``[nb, T]``, and speakers per dialogue ``[nb]``."""
    nb, T = len(lengths), int(lengths.max())
    if fmt.name == "MELD":
        n_spk = rng.choice(np.arange(1, 6), size=nb, p=[0.12, 0.48, 0.25, 0.10, 0.05])
        n_spk = np.minimum(n_spk, np.maximum(lengths, 1))
        p_switch = 0.65
        first = np.zeros(nb, dtype=np.int64)
    elif fmt.name == "CMUMOSEI7":
        n_spk = np.ones(nb, dtype=np.int64)
        p_switch = 0.0
        first = np.zeros(nb, dtype=np.int64)
    else:
        n_spk = np.full(nb, 2, dtype=np.int64)
        p_switch = 0.8
        first = rng.integers(0, 2, size=nb)
    switch = rng.random((nb, T)) < p_switch
    switch[:, 0] = False
    step = rng.integers(1, np.maximum(n_spk, 2)[:, None], size=(nb, T))
    step = np.where(switch & (n_spk[:, None] > 1), step, 0)
    spk = (first[:, None] + np.cumsum(step, axis=1)) % n_spk[:, None]
    return spk.astype(np.int64), n_spk


def _labels(rng: np.random.Generator, lengths: np.ndarray, spk: np.ndarray,
            weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-speaker Markov labels ``[nb, T]`` (``-1`` at padding) and the context-only mask.

    The loop runs over time steps, vectorised over dialogues."""
    nb, T = spk.shape
    C = len(weights)
    prior = rng.dirichlet(_DIRICHLET * weights, size=nb)                  # [nb, C]
    cum = np.cumsum(prior, axis=1)
    fresh = (rng.random((nb, T))[:, :, None] > cum[:, None, :]).sum(-1)
    fresh = np.minimum(fresh, C - 1)
    r = rng.random((nb, T))
    u = rng.random((nb, T))
    lab = np.full((nb, T), -1, dtype=np.int64)
    ctx = np.zeros((nb, T), dtype=bool)
    state = np.full((nb, int(spk.max()) + 1), -1, dtype=np.int64)
    for t in range(T):
        a = np.flatnonzero(lengths > t)
        s = spk[a, t]
        own = state[a, s]
        if t > 0:
            prv = lab[a, t - 1]
            other = spk[a, t - 1] != s
        else:
            prv = np.full(a.size, -1, dtype=np.int64)
            other = np.zeros(a.size, dtype=bool)
        rt = r[a, t]
        has_own = own >= 0
        stay = has_own & (rt < _P_STAY)
        follow = other & np.where(has_own, (rt >= _P_STAY) & (rt < _P_STAY + _P_FOLLOW),
                                  rt < _P_FOLLOW_FIRST)
        y = np.where(stay, own, np.where(follow, prv, fresh[a, t]))
        lab[a, t] = y
        ctx[a, t] = stay & (u[a, t] < _Q_CONTEXT)
        state[a, s] = y
    return lab, ctx


def _mosei_scores(rng: np.random.Generator, bins: np.ndarray) -> np.ndarray:
    """Continuous scores on the 1/3 grid inside each bin (bin 3 is exactly 0; the grid includes
    the edges -2, -1, 1, 2, which land in bins 1, 2, 4, 5)."""
    grid = np.array([[-3, -8 / 3, -7 / 3], [-2, -5 / 3, -4 / 3], [-1, -2 / 3, -1 / 3],
                     [0, 0, 0], [1 / 3, 2 / 3, 1], [4 / 3, 5 / 3, 2], [7 / 3, 8 / 3, 3]])
    return grid[bins, rng.integers(0, 3, size=bins.shape)]


# ---------------------------------------------------------------------------------------------
# features


def _pair_groups(C: int, modality: int) -> np.ndarray:
    """Group index per class: classes paired within a modality share (almost) one prototype.
    Text pairs (2i, 2i+1), visual (i, i + C//2), audio (2i+1, 2i+2 mod C): no pair is shared by
    two modalities for C = 4, 6, 7."""
    if modality == 0:
        pairs = [(2 * i, 2 * i + 1) for i in range(C // 2)]
    elif modality == 1:
        pairs = [(i, i + C // 2) for i in range(C // 2)]
    else:
        pairs = [(2 * i + 1, (2 * i + 2) % C) for i in range(C // 2)]
    group = np.arange(C)
    for a, b in pairs:
        group[b] = group[a]
    return np.unique(group, return_inverse=True)[1]


def _directions(rng: np.random.Generator, k: int, D: int, orthonormal: bool = True
                ) -> np.ndarray:
    """``k`` unit vectors in ``R^D``, orthonormal when asked and ``k <= D``; float64 ``[k, D]``."""
    g = rng.standard_normal((D, k))
    if orthonormal and k <= D:
        q, _ = np.linalg.qr(g)
        return q[:, :k].T.copy()
    return (g / np.linalg.norm(g, axis=0, keepdims=True)).T.copy()


def _prototypes(rng: np.random.Generator, C: int, D: int, modality: int, sep: float
                ) -> np.ndarray:
    """Class prototypes ``[C + 1, D]`` float32; the last row (no signal) is zero."""
    group = _pair_groups(C, modality)
    n_groups = int(group.max()) + 1
    dirs = _directions(rng, n_groups + C, D) if n_groups + C <= D else None
    if dirs is None:
        g = _directions(rng, n_groups, D)
        d = _directions(rng, C, D)
    else:
        g, d = dirs[:n_groups], dirs[n_groups:]
    protos = sep * g[group] + (_PAIR_EPS * sep) * d
    return np.vstack([protos, np.zeros((1, D))]).astype(np.float32)


def _modality(rng: np.random.Generator, protos: np.ndarray, yi: np.ndarray, dia: np.ndarray,
              nb: int, signal: float) -> np.ndarray:
    """``[N, D]`` float32: N(0,1) noise + signal * prototype + per-dialogue offset."""
    N, D = yi.shape[0], protos.shape[1]
    x = rng.standard_normal((N, D), dtype=np.float32)
    x += np.float32(signal) * protos[yi]
    offsets = _directions(rng, nb, D, orthonormal=False) * (_OFFSET * rng.random((nb, 1)))
    x += offsets.astype(np.float32)[dia]
    return x


def _rows_by_dialogue(x: np.ndarray, bounds: np.ndarray, dtype=None) -> list[list[np.ndarray]]:
    if dtype is not None:
        x = x.astype(dtype)
    return [list(block) for block in np.split(x, bounds)]


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    counts = rng.integers(2, 12, size=n)
    words = np.array(_WORDS, dtype=object)[rng.integers(0, len(_WORDS), size=int(counts.sum()))]
    ends = np.cumsum(counts)
    starts = ends - counts
    return [" ".join(words[s:e]).capitalize() + "." for s, e in zip(starts, ends)]


# ---------------------------------------------------------------------------------------------
# Python-2 style pickling (for tests of the latin1 path)


class _Py2Pickler(pickle._Pickler):   # the pure-Python pickler, whose dispatch we can extend
    """Writes ``str`` as Python 2 byte strings (``SHORT_BINSTRING``/``BINSTRING``, latin1), as
    the common files' Python 2 pickles do; reading them back needs ``encoding="latin1"``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: str) -> None:
        data = obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str


# ---------------------------------------------------------------------------------------------


def _split_counts(sizes: _Sizes, scale: float, n_dialogues) -> list[int]:
    if n_dialogues is not None:
        counts = [int(n_dialogues)] if np.isscalar(n_dialogues) else [int(v) for v in n_dialogues]
        if len(counts) != len(sizes.splits):
            names = ", ".join(s.name for s in sizes.splits)
            raise ValueError(f"n_dialogues needs one count per split ({names}), got "
                             f"{n_dialogues!r}")
        if min(counts) < 1:
            raise ValueError(f"n_dialogues must be >= 1 per split, got {n_dialogues!r}")
        if max(counts) > MAX_SPLIT_DIALOGUES:
            raise ValueError(f"n_dialogues: at most {MAX_SPLIT_DIALOGUES:,} per split are allowed "
                             f"(the features are built in memory), got {n_dialogues!r}")
        return counts
    if not (math.isfinite(float(scale)) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    counts = [s.dialogues * float(scale) for s in sizes.splits]
    if not all(c <= MAX_SPLIT_DIALOGUES for c in counts):
        raise ValueError(f"scale {scale!r} asks for {max(counts):.3g} dialogues in one split; at "
                         f"most {MAX_SPLIT_DIALOGUES:,} per split are allowed (the features are "
                         f"built in memory)")
    return [max(1, int(round(c))) for c in counts]


def synthesize(dataset: str, path: str | PathLike, seed: int = 0, scale: float = 1.0, *,
               dims: tuple[int, int, int] | None = None, length: int | None = None,
               min_len: int | None = None, max_len: int | None = None,
               mean_len: float | None = None,
               n_dialogues: int | tuple[int, ...] | None = None,
               meld_valid_vid: bool = False, signal: float = 1.0, protocol: int = 4,
               py2_strings: bool = False) -> SynthesisInfo:
    """Write a synthetic feature pickle in ``dataset``'s exact layout.

    Args:
        dataset: ``"IEMOCAP"``, ``"IEMOCAP4"``, ``"MELD"`` or ``"CMUMOSEI7"``.
        path: output file (parent folders are created; written atomically).
        seed: everything is a deterministic function of ``(dataset, seed, arguments)``.
        scale: multiplies the real number of dialogues of every split (at least 1 each, at
            most ``MAX_SPLIT_DIALOGUES`` = 100,000: the file is built in memory); utterance
            totals follow so that mean lengths stay real.
        dims: feature widths ``(text, visual, audio)``; default the real ones. With another
            value the file is only loadable with ``load_dataset(..., dims=dims)``.
        length: make every dialogue exactly this long (e.g. 1000 for benchmarks).
        min_len, max_len: length range (default the real one); the real mean is kept when it
            fits, else clipped into the range.
        mean_len: mean dialogue length (default the real one).
        n_dialogues: dialogues per split, overriding ``scale``: ``(train, test)``, or
            ``(train, dev, test)`` for MELD.
        meld_valid_vid: MELD only: write the dev ids as the 14th element instead of ``None``
            (the common file has ``None``). MELD ids keep the real ranges (train from 0, dev
            from 1039, test from 1153) unless the counts exceed the real ones; only then
            does ``load_dataset(valid_from="validVid")`` need ``meld_valid_vid=True``.
        signal: multiplies the class prototypes (0 gives pure noise features).
        protocol: pickle protocol (4 default; use 2 for a Python-2-readable file).
        py2_strings: write strings as Python 2 byte strings (implies protocol 2; slow, meant for
            small test files); such a file needs ``encoding="latin1"``, as the real ones.

    Returns:
        :class:`SynthesisInfo` (ids, lengths, class counts).
    """
    fmt = dataset_format(dataset)
    sizes = REAL_SIZES[fmt.name]
    if dims is None:
        dims = fmt.dims
    if (not isinstance(dims, (tuple, list)) or len(dims) != 3
            or not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims)):
        raise ValueError(f"dims must be three positive ints (text, visual, audio), got {dims!r}")
    dims = tuple(int(d) for d in dims)
    if meld_valid_vid and fmt.name != "MELD":
        raise ValueError("meld_valid_vid only applies to MELD")
    if not math.isfinite(float(signal)) or signal < 0:
        raise ValueError(f"signal must be a finite number >= 0, got {signal!r}")
    if mean_len is not None and not (math.isfinite(float(mean_len)) and mean_len >= 1):
        raise ValueError(f"mean_len must be a finite number >= 1, got {mean_len!r}")

    custom_len = any(v is not None for v in (length, min_len, max_len, mean_len))
    lo, hi = sizes.min_len, sizes.max_len
    if length is not None:
        lo = hi = int(length)
    else:
        if min_len is not None:
            lo = int(min_len)
            hi = max(hi, lo) if max_len is None else hi
        if max_len is not None:
            hi = int(max_len)
            lo = min(lo, hi) if min_len is None else lo
    if lo < 1 or hi < lo:
        raise ValueError(f"need 1 <= min_len <= max_len, got {lo}..{hi}")

    counts = _split_counts(sizes, scale, n_dialogues)
    root = np.random.SeedSequence([int(seed), list(REAL_SIZES).index(fmt.name)])
    r_len, r_ids, r_spk, r_lab, r_proto, r_feat, r_misc = (
        np.random.default_rng(s) for s in root.spawn(7))

    # ---- dialogue lengths and ids per split
    split_lengths = []
    for sp, n in zip(sizes.splits, counts):
        if custom_len:
            mean = mean_len if mean_len is not None else sp.utterances / sp.dialogues
            total = round(min(max(mean, lo), hi) * n)
        else:
            total = round(sp.utterances * n / sp.dialogues)
        split_lengths.append(_fit_lengths(r_len, n, total, lo, hi, sizes.gamma_shape))

    if fmt.name in ("IEMOCAP", "IEMOCAP4"):
        ids = [_iemocap_ids(r_ids, counts[0], (1, 2, 3, 4)), _iemocap_ids(r_ids, counts[1], (5,))]
    elif fmt.name == "MELD":
        # the real id ranges (train from 0, dev from 1039, test from 1153) whenever the
        # counts fit in them, so that the dev ids are recognisable as in the common file
        n_tr, n_dev, n_te = counts
        real = [s.dialogues for s in sizes.splits]
        dev0 = real[0] if n_tr <= real[0] and n_dev <= real[1] else n_tr
        dev = list(range(dev0, dev0 + n_dev + 1))
        del dev[min(_MELD_MISSING_DEV_OFFSET, n_dev)]
        test0 = dev0 + (real[1] + 1 if dev0 == real[0] else n_dev + 1)
        ids = [list(range(n_tr)), dev, list(range(test0, test0 + n_te))]
    else:
        taken: set = set()
        ids = [_youtube_ids(r_ids, n, taken) for n in counts]

    lengths = np.concatenate(split_lengths)
    all_ids = [v for part in ids for v in part]
    nb = len(all_ids)
    N = int(lengths.sum())
    bounds = np.cumsum(lengths)[:-1]

    # ---- speakers and labels (packed in dialogue-major order)
    spk_pad, _ = _speakers(r_spk, fmt, lengths)
    weights = np.asarray(sizes.class_weights, dtype=np.float64)
    weights = weights / weights.sum()
    valid = np.arange(spk_pad.shape[1])[None, :] < lengths[:, None]
    # Persistence and per-dialogue moods make the class counts of one draw vary a lot around
    # the target proportions; keep the closest of a few draws (cheap: one loop over T each).
    best = None
    for _ in range(int(np.clip(4000 // spk_pad.shape[1], 1, _LABEL_TRIES))):
        lab_pad, ctx_pad = _labels(r_lab, lengths, spk_pad, weights)
        err = np.abs(np.bincount(lab_pad[valid], minlength=len(weights)) / N - weights).sum()
        if best is None or err < best[0]:
            best = (err, lab_pad, ctx_pad)
    _, lab_pad, ctx_pad = best
    y, spk, ctx = lab_pad[valid], spk_pad[valid], ctx_pad[valid]
    dia = np.repeat(np.arange(nb), lengths)
    C = fmt.num_emotions
    yi = np.where(ctx, C, y)                    # row C of the prototypes is zero

    # ---- features
    protos = [_prototypes(r_proto, C, dims[m], m, _SEP[m]) for m in range(3)]
    text_sets = [_modality(r_feat, protos[0], yi, dia, nb, signal)
                 for _ in range(len(fmt.text_fields))]
    visual = _modality(r_feat, protos[1], yi, dia, nb, signal)
    audio = _modality(r_feat, protos[2], yi, dia, nb, signal)
    if fmt.name == "MELD":
        visual[r_misc.random(N) < _MELD_ZERO_VISUAL] = 0.0

    # ---- per-dialogue python structures, in the original's layout
    def per_dialogue(values: list) -> dict:
        return dict(zip(all_ids, values))

    fields: dict[str, object] = {}
    if fmt.name == "MELD":
        onehot = np.eye(fmt.speaker_dim, dtype=np.int64)[spk]
        fields["videoSpeakers"] = per_dialogue([b.tolist() for b in np.split(onehot, bounds)])
        fields["videoIDs"] = per_dialogue([list(range(int(n))) for n in lengths])
    else:
        if fmt.name == "CMUMOSEI7":
            gender = np.where(r_misc.random(nb) < 0.5, "M", "F")[dia]
            letters = gender
        else:
            letters = np.array(["M", "F"])[spk]
        fields["videoSpeakers"] = per_dialogue([b.tolist() for b in np.split(letters, bounds)])
        fields["videoIDs"] = per_dialogue(
            [[f"{vid}_{s}{i:03d}" for i, s in enumerate(b.tolist())]
             for vid, b in zip(all_ids, np.split(letters, bounds))])

    if fmt.continuous_labels:
        scores = _mosei_scores(r_misc, y)
        fields["videoLabels"] = per_dialogue([b.tolist() for b in np.split(scores, bounds)])
    else:
        fields["videoLabels"] = per_dialogue([b.tolist() for b in np.split(y, bounds)])
    if fmt.name == "MELD":
        # 0 neutral, 1 positive, 2 negative; surprise is either
        sent_of = np.array([0, 1, 2, 2, 1, 2, 2])
        sent = np.where((y == 1) & (r_misc.random(N) < 0.55), 2, sent_of[y])
        fields["videoSentiments"] = per_dialogue([b.tolist() for b in np.split(sent, bounds)])

    for name, x in zip(fmt.text_fields, text_sets):
        fields[name] = per_dialogue(_rows_by_dialogue(x, bounds))
    fields["videoAudio"] = per_dialogue(_rows_by_dialogue(audio, bounds))
    # IEMOCAP's real visual features are float64
    fields["videoVisual"] = per_dialogue(_rows_by_dialogue(
        visual, bounds, np.float64 if fmt.name == "IEMOCAP" else None))
    sentences = _sentences(r_misc, N)
    fields["videoSentence"] = per_dialogue(
        [sentences[s:e] for s, e in zip(np.r_[0, bounds], np.r_[bounds, N])])

    if fmt.name in ("IEMOCAP", "IEMOCAP4"):
        train_vid = [ids[0][i] for i in r_misc.permutation(len(ids[0]))]
        fields["trainVid"], fields["testVid"] = train_vid, list(ids[1])
    elif fmt.name == "MELD":
        fields["trainVid"] = ids[0] + ids[1]
        fields["testVid"] = list(ids[2])
        fields["validVid"] = list(ids[1]) if meld_valid_vid else None
    else:
        fields["trainVid"], fields["testVid"] = list(ids[0]), list(ids[1])

    obj = tuple(fields[name] for name in fmt.fields)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if py2_strings:
                _Py2Pickler(f, protocol=2).dump(obj)
            else:
                pickle.dump(obj, f, protocol=protocol)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

    offsets = np.r_[0, np.cumsum([len(p) for p in ids])]
    return SynthesisInfo(
        path=str(path), dataset=fmt.name, seed=int(seed), dims=dims,
        ids={sp.name: list(part) for sp, part in zip(sizes.splits, ids)},
        lengths={sp.name: lengths[offsets[i]:offsets[i + 1]].tolist()
                 for i, sp in enumerate(sizes.splits)},
        class_counts=np.bincount(y, minlength=C).astype(np.int64),
        n_context_only=int(ctx.sum()))
