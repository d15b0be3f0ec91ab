"""Batching dialogues: padded time-major tensors for the model, packed labels for the losses.

:func:`collate_dialogues` turns a list of :class:`~graphsmile.data.datasets.Dialogue` into a
:class:`Batch`. Feature tensors follow the original's layout, time-major and zero-padded to the
longest dialogue ``T``: ``[T, B, D]``. Labels come twice: packed (``[N]``, dialogue-major, no
padding, which is what the losses and the model's packed node order use) and padded
(``[T, B]``, filled with ``-1``).

Shapes of the original's ``collate_fn`` (lijfrank-open/GraphSmile ``dataloader.py``): it calls
``pad_sequence`` *without* ``batch_first`` for every tensor, so ``qmask`` is ``[T, B, S]`` and
``umask`` and both label tensors are ``[T, B]`` (its trainer reads ``umask[:, j]`` for dialogue
``j``). Earlier ERC code (DialogueGCN, MMGCN) made ``umask`` ``[B, T]``; GraphSmile does not,
and neither do we. The original pads labels with 0; :meth:`Batch.original_tuple` reproduces that.

:class:`BucketBatchSampler` groups dialogues of similar length (less padding), deterministically
for a seed and epoch, and splits the batches evenly over DDP ranks.

:class:`DeviceDialogues` is the device-resident alternative to a ``DataLoader``: a whole split
packed once into ``[N_total + 1, D]`` tensors on the training device (the extra row is the
zero padding), with batches gathered by index (:meth:`DeviceDialogues.plan`). Its batches hold
the same values as :func:`collate_dialogues`'s, bit for bit, without per-batch collation,
host-to-device copies or device-to-host reads.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from ..ops.index import host_to_device

__all__ = ["Batch", "collate_dialogues", "BucketBatchSampler", "make_dataloader", "DeviceBatch", "DeviceDialogues",
           "DevicePlan", "shift_pair_counts_np", "shift_pairs_np"]


@dataclass
class Batch:
    """``B`` dialogues of lengths ``lengths`` (``T = max(lengths)``, ``N = sum(lengths)``).

    Attributes:
        textf0, textf1, textf2, textf3: float32 ``[T, B, Dt]``, zero-padded. When the dataset
            has one text set (IEMOCAP4, CMUMOSEI7) the four are the same tensor object.
        visual: float32 ``[T, B, Dv]``.
        audio: float32 ``[T, B, Da]``.
        qmask: float32 ``[T, B, S]`` speaker one-hot, zero rows at padding.
        umask: float32 ``[T, B]``, 1 at real utterances, 0 at padding.
        emotion: int64 ``[N]`` packed emotion labels (dialogue 0's utterances, then
            dialogue 1's, ...).
        sentiment: int64 ``[N]`` packed sentiment labels.
        emotion_padded: int64 ``[T, B]``, ``-1`` at padding.
        sentiment_padded: int64 ``[T, B]``, ``-1`` at padding.
        lengths: the ``B`` dialogue lengths (Python ints, every one ``>= 1``).
        ids: the ``B`` dialogue ids.
        score: float32 ``[N]`` packed continuous labels (CMUMOSEI7), else ``None``.
    """

    textf0: torch.Tensor
    textf1: torch.Tensor
    textf2: torch.Tensor
    textf3: torch.Tensor
    visual: torch.Tensor
    audio: torch.Tensor
    qmask: torch.Tensor
    umask: torch.Tensor
    emotion: torch.Tensor
    sentiment: torch.Tensor
    emotion_padded: torch.Tensor
    sentiment_padded: torch.Tensor
    lengths: list[int]
    ids: list[Hashable]
    score: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """``B``."""
        return len(self.lengths)

    @property
    def num_utterances(self) -> int:
        """``N = sum(lengths)``."""
        return int(sum(self.lengths))

    @property
    def max_len(self) -> int:
        """``T = max(lengths)``."""
        return int(self.umask.shape[0])

    def model_inputs(self) -> tuple:
        """The model's positional arguments, in the original's forward order:
        ``(textf0, textf1, textf2, textf3, visual, audio, umask, qmask, lengths)``."""
        return (self.textf0, self.textf1, self.textf2, self.textf3, self.visual, self.audio,
                self.umask, self.qmask, self.lengths)

    def original_tuple(self) -> list:
        """The list the original's ``collate_fn`` returned: ``[textf0, textf1, textf2, textf3,
        visual, audio, qmask [T,B,S], umask [T,B], labels_emotion [T,B], labels_sentiment [T,B],
        ids]``, labels padded with 0 as there."""
        return [self.textf0, self.textf1, self.textf2, self.textf3, self.visual, self.audio,
                self.qmask, self.umask, self.emotion_padded.clamp_min(0),
                self.sentiment_padded.clamp_min(0), list(self.ids)]

    def _map(self, fn) -> "Batch":
        moved: dict[int, torch.Tensor] = {}   # keep shared tensors (one text set) shared

        def go(t):
            if not isinstance(t, torch.Tensor):
                return t
            if id(t) not in moved:
                moved[id(t)] = fn(t)
            return moved[id(t)]

        return Batch(**{f.name: go(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device`` (lengths and ids stay Python lists)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Pinned copy; ``DataLoader(pin_memory=True)`` calls this."""
        return self._map(lambda t: t.pin_memory())


def _pad(tensors: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    return pad_sequence(tensors, batch_first=False, padding_value=value)


def collate_dialogues(dialogues: Sequence) -> Batch:
    """Pad a list of dialogues into a :class:`Batch` (the ``collate_fn`` for a DataLoader).

    One ``pad_sequence`` per field; no Python loop over utterances.

    Args:
        dialogues: ``B >= 1`` :class:`~graphsmile.data.datasets.Dialogue` records.

    Returns:
        :class:`Batch` with ``[T, B, D]`` features, ``[T, B]`` masks and padded labels, ``[N]``
        packed labels.
    """
    ds = list(dialogues)
    if not ds:
        raise ValueError("collate_dialogues needs at least one dialogue")
    lengths = [len(d) for d in ds]
    if min(lengths) < 1:
        bad = ds[lengths.index(min(lengths))].id
        raise ValueError(f"dialogue {bad!r} has no utterances")

    texts: list[torch.Tensor] = [_pad([d.text[0] for d in ds])]
    for k in (1, 2, 3):
        if all(d.text[k] is d.text[0] for d in ds):
            texts.append(texts[0])
        elif all(d.text[k] is d.text[k - 1] for d in ds):
            texts.append(texts[k - 1])
        else:
            texts.append(_pad([d.text[k] for d in ds]))

    len_t = torch.tensor(lengths, dtype=torch.int64)
    T = max(lengths)
    umask = (torch.arange(T).unsqueeze(1) < len_t.unsqueeze(0)).to(torch.float32)
    emotion = [d.emotion for d in ds]
    sentiment = [d.sentiment for d in ds]
    has_score = all(d.score is not None for d in ds)
    return Batch(
        textf0=texts[0], textf1=texts[1], textf2=texts[2], textf3=texts[3],
        visual=_pad([d.visual for d in ds]),
        audio=_pad([d.audio for d in ds]),
        qmask=_pad([d.speakers for d in ds]),
        umask=umask,
        emotion=torch.cat(emotion),
        sentiment=torch.cat(sentiment),
        emotion_padded=_pad(emotion, -1),
        sentiment_padded=_pad(sentiment, -1),
        lengths=lengths,
        ids=[d.id for d in ds],
        score=torch.cat([d.score for d in ds]) if has_score else None,
    )


class BucketBatchSampler(Sampler):
    """Batches of dialogues of similar length, deterministic for ``(seed, epoch)``, DDP-aware.

    Each epoch (``shuffle=True``): permute all dialogues with a generator seeded by
    ``(seed, epoch)``; cut the permutation into mega-chunks of ``batch_size * bucket_batches``
    dialogues; sort each chunk by length (longest first, stable); cut the result into batches
    of ``batch_size`` (only the very last batch can be short; ``drop_last`` drops it); then
    shuffle the batches in groups of ``num_replicas`` consecutive ones, so that the batches the
    ranks run at the same step have similar lengths. ``shuffle=False``: the same without the
    permutations (chunks are consecutive in dataset order). ``bucket_batches=None`` or ``1``
    disables the sorting (plain random batches).

    DDP: every rank builds the same global list; rank ``r`` takes batches ``r, r + R, ...``.
    To give every rank the same number of batches, ``drop_last=True`` drops the surplus
    batches, otherwise the list is padded by repeating batches from its start (so a few
    dialogues are seen twice in that epoch, as with ``DistributedSampler``).

    Args:
        lengths: utterance count of each dialogue (``DialogueDataset.lengths``).
        batch_size: dialogues per batch.
        shuffle: reshuffle every epoch.
        seed: base seed (the same on every rank).
        drop_last: drop the short last batch and the batches beyond an even split.
        num_replicas: number of DDP ranks ``R``.
        rank: this rank, ``0 <= rank < R``.
        bucket_batches: batches per mega-chunk (larger: less padding, less randomness).

    Call :meth:`set_epoch` before each epoch (the original never reached its samplers).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, *, num_replicas: int = 1,
                 rank: int = 0, bucket_batches: int | None = 50):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        if bucket_batches is not None and (not isinstance(bucket_batches, (int, np.integer))
                                           or isinstance(bucket_batches, bool) or bucket_batches < 1):
            raise ValueError(f"bucket_batches must be None or an int >= 1, got {bucket_batches!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if (self.lengths < 0).any():
            raise ValueError("lengths must be non-negative")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.bucket_batches = bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call on every rank, before iterating)."""
        self.epoch = int(epoch)

    def global_batches(self) -> list[list[int]]:
        """The batches of all ranks for the current epoch, in step order, before the rank split
        and before padding/trimming to a multiple of ``num_replicas``."""
        n = len(self.lengths)
        bs = self.batch_size
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket_batches is not None and self.bucket_batches > 1:
            chunk = bs * self.bucket_batches
            parts = []
            for s in range(0, n, chunk):
                idx = order[s:s + chunk]
                parts.append(idx[np.argsort(-self.lengths[idx], kind="stable")])
            order = np.concatenate(parts) if parts else order
        batches = [order[s:s + bs].tolist() for s in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        if self.shuffle and batches:
            R = self.num_replicas
            groups = [batches[s:s + R] for s in range(0, len(batches), R)]
            batches = [b for g in rng.permutation(len(groups)) for b in groups[g]]
        return batches

    def _num_per_rank(self, nb: int) -> int:
        if self.drop_last:
            return nb // self.num_replicas
        return math.ceil(nb / self.num_replicas)

    def padded_batches(self) -> list[list[int]]:
        """The batches of all ranks for the current epoch after padding/trimming to a multiple
        of ``num_replicas``: step ``i`` of rank ``r`` runs entry ``i * num_replicas + r``
        (what lets a rank know the global batch of a step without communicating)."""
        batches = self.global_batches()
        nb = len(batches)
        if nb == 0:
            return []
        total = self._num_per_rank(nb) * self.num_replicas
        if total > nb:   # pad by cycling from the start
            batches = batches + [batches[i % nb] for i in range(total - nb)]
        return batches[:total]

    def __iter__(self):
        return iter(self.padded_batches()[self.rank::self.num_replicas])

    def __len__(self) -> int:
        n = len(self.lengths)
        nb = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return self._num_per_rank(nb)


def make_dataloader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                    drop_last: bool = False, bucket_batches: int | None = 50,
                    num_replicas: int = 1, rank: int = 0, num_workers: int = 0,
                    pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` over a :class:`~graphsmile.data.datasets.DialogueDataset` yielding
    :class:`Batch` objects, batched by a :class:`BucketBatchSampler` (reach it as
    ``loader.batch_sampler`` to call ``set_epoch``)."""
    sampler = BucketBatchSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last, num_replicas=num_replicas, rank=rank,
                                 bucket_batches=bucket_batches)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_dialogues,
                      num_workers=num_workers, pin_memory=pin_memory)


# --- device-resident splits ---------------------------------------------------------------


def shift_pair_counts_np(lengths, shift_win: int) -> np.ndarray:
    """Shift pairs of each dialogue (SPEC 4: sum over its chunks of size^2), int64 ``[n]``,
    vectorised over dialogues. ``shift_win``: ``-1`` (whole dialogue) or ``> 0``."""
    L = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if shift_win == -1:
        return L * L
    if isinstance(shift_win, bool) or not isinstance(shift_win, (int, np.integer)) or shift_win < 1:
        raise ValueError(f"shift_win must be -1 (whole dialogue) or an int > 0, got {shift_win!r}")
    w = int(shift_win)
    return (L // w) * w * w + (L % w) ** 2


def shift_pairs_np(lengths, shift_win: int) -> tuple[np.ndarray, np.ndarray]:
    """The shift pairs of SPEC 4 as two int64 ``[P]`` arrays ``(i, j)`` of packed utterance ids:
    dialogue by dialogue, chunk by chunk, ``i`` outer, ``j`` inner (the order of
    :func:`graphsmile.ops.shift_pair_index`, in numpy so that this module needs no op)."""
    L = np.asarray(lengths, dtype=np.int64).reshape(-1)
    shift_pair_counts_np(L, shift_win)  # validates shift_win
    N = int(L.sum())
    first = np.cumsum(L) - L
    dia = np.repeat(np.arange(L.size, dtype=np.int64), L)
    local = np.arange(N, dtype=np.int64) - first[dia]
    w = L[dia] if shift_win == -1 else np.full(N, int(shift_win), dtype=np.int64)
    chunk0 = (local // w) * w                         # local index of the chunk's first utterance
    size = np.minimum(w, L[dia] - chunk0)             # utterance i pairs with every j of its chunk
    i = np.repeat(np.arange(N, dtype=np.int64), size)
    j = _ranges(first[dia] + chunk0, size)
    return i, j


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + c) for s, c in zip(starts, counts))``, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(counts) - counts           # where each range begins in the output
    return np.repeat(starts - first, counts) + np.arange(total, dtype=np.int64)


@dataclass
class DeviceBatch:
    """One batch gathered from a :class:`DeviceDialogues` store: ``B`` dialogues,
    ``T = max(lengths)``, ``N = sum(lengths)``, ``P`` shift pairs. Every tensor is on the
    store's device; ``lengths`` and ``ids`` are host lists, so nothing has to be read back.

    Attributes:
        texts: four entries ``[T, B, Dt]`` (zero-padded, time-major, as :class:`Batch`) or
            ``None`` for the text sets the store does not keep (sets the model's
            ``textf_mode`` does not read; the model accepts ``None`` there).
        visual: ``[T, B, Dv]``; audio: ``[T, B, Da]``.
        emotion, sentiment: int64 ``[N]`` packed labels.
        shift_labels: int64 ``[P]`` sentiment-shift pair labels
            (:func:`graphsmile.ops.shift_pair_labels` of ``sentiment``), or ``None`` when the
            store keeps none (``DeviceDialogues(shift_labels=False)``: the fused shift loss
            needs only ``sentiment``).
        pack_index: int64 ``[N]``, the model's packing index (:func:`graphsmile.model.packed_index`
            of ``lengths``): entry ``s_b + t`` is ``t * B + b``.
        lengths: the ``B`` dialogue lengths (Python ints); ids: the ``B`` dialogue ids;
        indices: the ``B`` dataset indices.
        num_pairs: ``P``.
    """

    texts: tuple
    visual: torch.Tensor
    audio: torch.Tensor
    emotion: torch.Tensor
    sentiment: torch.Tensor
    shift_labels: Optional[torch.Tensor]
    pack_index: torch.Tensor
    lengths: list[int]
    ids: list
    indices: list[int]
    num_pairs: int

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def num_utterances(self) -> int:
        """``N = sum(lengths)``."""
        return int(sum(self.lengths))

    def model_inputs(self) -> tuple:
        """The model's positional arguments ``(textf0, textf1, textf2, textf3, visual, audio,
        umask, qmask, lengths)``; ``umask`` and ``qmask`` are ``None`` (the model reads
        ``umask`` only to derive lengths, which are given, and never reads ``qmask``). Pass
        ``pack_index=self.pack_index`` too, so that the model builds no index on the host."""
        return (*self.texts, self.visual, self.audio, None, None, self.lengths)


@dataclass
class _PlanEntry:
    lengths: list[int]
    indices: list[int]
    T: int
    N: int
    P: int
    offsets: tuple  # (src, pack, rows, pairs) slices into the plan's index tensor
    rows: np.ndarray   # host copy: packed rows of the split (labels for metrics)
    pairs: np.ndarray  # host copy: rows of the split's packed shift labels (empty without them)


class DevicePlan:
    """The index tensors of a list of batches, uploaded in one copy (:meth:`DeviceDialogues.plan`).

    Iterating yields one :class:`DeviceBatch` per batch, gathered on the device when it is
    reached (one ``index_select`` per feature tensor and label), so only one padded batch is
    alive at a time. ``len(plan)`` is the number of batches; ``plan.entries[i].rows`` /
    ``.pairs`` are the host (numpy) copies of batch ``i``'s label rows and shift-pair rows,
    for metrics that need the labels without reading them back from the device.
    """

    def __init__(self, store: "DeviceDialogues", entries: list[_PlanEntry], index: torch.Tensor):
        self.store = store
        self.entries = entries
        self.index = index   # int64 [sum over batches of T*B + 2N + P] on the store's device

    def __len__(self) -> int:
        return len(self.entries)

    def batch(self, i: int) -> DeviceBatch:
        """Gather batch ``i``."""
        e = self.entries[i]
        st = self.store
        src, pack, rows, pairs = (self.index[a:b] for a, b in e.offsets)
        B = len(e.lengths)
        gathered: dict[int, torch.Tensor] = {}   # a text set shared by several slots is gathered once

        def pad(x: torch.Tensor | None):
            if x is None:
                return None
            if id(x) not in gathered:
                gathered[id(x)] = x.index_select(0, src).view(e.T, B, x.shape[1])
            return gathered[id(x)]

        return DeviceBatch(
            texts=tuple(pad(t) for t in st.texts), visual=pad(st.visual), audio=pad(st.audio),
            emotion=st.emotion.index_select(0, rows), sentiment=st.sentiment.index_select(0, rows),
            shift_labels=st.shift_labels.index_select(0, pairs) if st.shift_labels is not None else None, pack_index=pack,
            lengths=e.lengths, ids=[st.ids[j] for j in e.indices], indices=e.indices, num_pairs=e.P)

    def __iter__(self) -> Iterator[DeviceBatch]:
        for i in range(len(self.entries)):
            yield self.batch(i)


class DeviceDialogues:
    """A whole split kept on ``device``, packed once; batches are gathered with index tensors.

    Layout (``N_total`` utterances of the split, dialogue after dialogue; one extra zero row
    at index ``N_total`` that every padding position of a batch points to):

    - ``texts``: four entries ``[N_total + 1, Dt]`` or ``None`` (only the sets in
      ``text_sets`` are kept; entries of sets that are the same tensor in every dialogue,
      e.g. IEMOCAP4's single text set, share one tensor), ``visual`` ``[N_total + 1, Dv]``,
      ``audio`` ``[N_total + 1, Da]``;
    - ``emotion``, ``sentiment``: int64 ``[N_total]``; ``shift_labels``: int64 ``[P_total]``, the
      split's shift-pair labels for ``shift_win``, dialogue after dialogue (pairs never cross
      dialogues, so a batch's labels are a gather of its dialogues' segments), or ``None``
      with ``shift_labels=False`` (then ``shift_labels_np`` is ``None`` too);
    - host (numpy) copies: ``lengths``, ``starts``, ``pair_counts``, ``pair_starts``,
      ``emotion_np``, ``sentiment_np``, ``shift_labels_np``.

    A batch gathered from here holds exactly the values :func:`collate_dialogues` gives
    (zeros at padding), so a model computes bitwise the same outputs from it.

    Args:
        dataset: a :class:`~graphsmile.data.datasets.DialogueDataset` (at least one dialogue).
        device: where to keep it.
        shift_win: the model's sentiment-shift chunk size (``-1`` or ``> 0``).
        text_sets: indices of the text feature sets to keep (default all four; the trainer
            passes the model's ``config.text_sets``).
        shift_labels: keep the ``[P_total]`` shift-pair labels (the ``"logits"`` shift loss
            needs them; the fused one computes them from ``sentiment``, and with
            ``shift_win = -1`` they are quadratic in the dialogue lengths).
    """

    def __init__(self, dataset, device, *, shift_win: int, text_sets: Sequence[int] = (0, 1, 2, 3),
                 shift_labels: bool = True):
        ds = list(dataset)
        if not ds:
            raise ValueError("DeviceDialogues needs a dataset with at least one dialogue")
        bad = [k for k in text_sets if k not in (0, 1, 2, 3)]
        if bad:
            raise ValueError(f"text_sets must be indices in 0..3, got {list(text_sets)}")
        self.device = torch.device(device)
        self.shift_win = int(shift_win)
        self.ids = [d.id for d in ds]
        self.lengths = np.asarray([len(d) for d in ds], dtype=np.int64)
        if self.lengths.min() < 1:
            raise ValueError(f"dialogue {self.ids[int(np.argmin(self.lengths))]!r} has no utterances")
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.num_utterances = int(self.lengths.sum())
        self.pad_row = self.num_utterances
        self.pair_counts = shift_pair_counts_np(self.lengths, self.shift_win)
        self.pair_starts = np.cumsum(self.pair_counts) - self.pair_counts
        self.text_sets = tuple(sorted(set(int(k) for k in text_sets)))

        def packed(tensors):
            x = torch.cat([*tensors, tensors[0].new_zeros(1, tensors[0].shape[1])])
            return x.to(self.device)

        texts: list[torch.Tensor | None] = [None] * 4
        for k in self.text_sets:
            same = next((j for j in self.text_sets if j < k and all(d.text[k] is d.text[j] for d in ds)), None)
            texts[k] = texts[same] if same is not None else packed([d.text[k] for d in ds])
        self.texts = tuple(texts)
        self.visual = packed([d.visual for d in ds])
        self.audio = packed([d.audio for d in ds])
        emotion = torch.cat([d.emotion for d in ds])
        sentiment = torch.cat([d.sentiment for d in ds])
        self.emotion_np, self.sentiment_np = emotion.numpy(), sentiment.numpy()
        self.emotion, self.sentiment = emotion.to(self.device), sentiment.to(self.device)
        self.shift_labels_np: Optional[np.ndarray] = None
        self.shift_labels: Optional[torch.Tensor] = None
        if shift_labels:
            pi, pj = shift_pairs_np(self.lengths, self.shift_win)
            self.shift_labels_np = (self.sentiment_np[pi] != self.sentiment_np[pj]).astype(np.int8)
            self.shift_labels = torch.from_numpy(self.shift_labels_np.astype(np.int64)).to(self.device)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Device memory held by the store."""
        seen, total = set(), 0
        for t in (*self.texts, self.visual, self.audio, self.emotion, self.sentiment, self.shift_labels):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total

    @staticmethod
    def estimate_bytes(dataset, dims: Sequence[int], num_text_sets: int, shift_win: int, shift_labels: bool = True) -> int:
        """Device bytes a store of ``dataset`` would take (``dims``: text, visual, audio widths;
        ``num_text_sets``: text sets kept; ``shift_labels``: whether it keeps the pair labels),
        without building it."""
        lens = np.asarray(dataset.lengths, dtype=np.int64)
        n = int(lens.sum()) + 1
        feats = n * (num_text_sets * dims[0] + dims[1] + dims[2]) * 4
        pairs = 8 * int(shift_pair_counts_np(lens, shift_win).sum()) if shift_labels else 0
        return int(feats + 16 * n + pairs)

    def plan(self, batches: Sequence[Sequence[int]]) -> DevicePlan:
        """The index tensors of ``batches`` (lists of dataset indices, e.g. one epoch of a
        :class:`BucketBatchSampler`), built with numpy on the host and uploaded in one copy
        (pinned memory, asynchronous on CUDA). Per batch: the gather rows of the padded
        ``[T * B]`` layout (``s_b + t`` for ``t < L_b``, else the zero row), the model's packing
        index, the packed label rows and the shift-pair label rows."""
        entries: list[_PlanEntry] = []
        chunks: list[np.ndarray] = []
        pos = 0
        for batch in batches:
            idx = np.asarray(batch, dtype=np.int64).reshape(-1)
            if idx.size == 0:
                raise ValueError("a batch needs at least one dialogue")
            if idx.min() < 0 or idx.max() >= len(self.ids):
                raise IndexError(f"batch {batch!r} has indices outside 0..{len(self.ids) - 1}")
            L, s0 = self.lengths[idx], self.starts[idx]
            B, T, N = idx.size, int(L.max()), int(L.sum())
            t = np.arange(T, dtype=np.int64)[:, None]
            src = np.where(t < L[None, :], s0[None, :] + t, self.pad_row).reshape(-1)   # [T*B], time-major
            first = np.cumsum(L) - L                                                # s_b within the batch
            dia = np.repeat(np.arange(B, dtype=np.int64), L)
            local = np.arange(N, dtype=np.int64) - first[dia]
            pack = local * B + dia
            rows = s0[dia] + local
            P = int(self.pair_counts[idx].sum())
            pairs = _ranges(self.pair_starts[idx], self.pair_counts[idx]) if self.shift_labels is not None else np.zeros(0, np.int64)
            offs = []
            for a in (src, pack, rows, pairs):
                offs.append((pos, pos + a.size))
                pos += a.size
            chunks += [src, pack, rows, pairs]
            entries.append(_PlanEntry(lengths=L.tolist(), indices=idx.tolist(), T=T, N=N, P=P,
                                      offsets=tuple(offs), rows=rows, pairs=pairs))
        host = torch.from_numpy(np.concatenate(chunks) if chunks else np.zeros(0, np.int64))
        index = host_to_device(host, self.device)  # pinned + non-blocking on CUDA: no host sync
        return DevicePlan(self, entries, index)
