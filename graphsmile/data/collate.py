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
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["Batch", "collate_dialogues", "BucketBatchSampler", "make_dataloader"]


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
        if bucket_batches is not None and bucket_batches < 1:
            raise ValueError(f"bucket_batches must be None or >= 1, got {bucket_batches!r}")
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

    def __iter__(self):
        batches = self.global_batches()
        nb = len(batches)
        per = self._num_per_rank(nb)
        total = per * self.num_replicas
        if nb == 0:
            return iter([])
        if total > nb:   # pad by cycling from the start
            batches = batches + [batches[i % nb] for i in range(total - nb)]
        batches = batches[:total]
        return iter(batches[self.rank::self.num_replicas])

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
