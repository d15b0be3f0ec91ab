"""The four pickle layouts GraphSmile reads, and the label derivations of SPEC section 7.

Every feature file is one pickle of a tuple whose elements are listed, in order, by
:attr:`DatasetFormat.fields`. Dict elements are keyed by dialogue id and hold one entry per
utterance. This module only describes the layouts and derives labels; reading and validating a
file is :mod:`graphsmile.data.datasets`, writing a synthetic one is
:mod:`graphsmile.data.synthetic`.

Label conventions (indices kept exactly as stored in the common files):

=========  ===========================================================  =====================
dataset    emotion classes                                              sentiment (3 classes)
=========  ===========================================================  =====================
IEMOCAP    0 happy, 1 sad, 2 neutral, 3 angry, 4 excited, 5 frustrated   {1,3,5}->0, {2}->1,
                                                                        {0,4}->2
IEMOCAP4   0 happy, 1 sad, 2 neutral, 3 angry                            {1,3}->0, {2}->1,
                                                                        {0}->2
MELD       0 neutral, 1 surprise, 2 fear, 3 sadness, 4 joy, 5 disgust,  stored in the file
           6 anger                                                      (0 neutral,
                                                                        1 positive, 2 negative)
CMUMOSEI7  7 bins of a continuous score in [-3, 3] (see                 < 0 -> 0, == 0 -> 1,
           :func:`mosei_emotion_bins`)                                  > 0 -> 2
=========  ===========================================================  =====================

For IEMOCAP, IEMOCAP4 and CMUMOSEI7 the sentiment indices mean 0 negative, 1 neutral,
2 positive; MELD's stored ones mean 0 neutral, 1 positive, 2 negative
(:attr:`DatasetFormat.sentiment_names` gives the right names for each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATASET_NAMES",
    "DatasetFormat",
    "FORMATS",
    "dataset_format",
    "sentiment_from_emotion",
    "mosei_emotion_bins",
    "mosei_sentiment",
]


@dataclass(frozen=True)
class DatasetFormat:
    """The layout of one dataset's feature pickle.

    Attributes:
        name: canonical dataset name (``"IEMOCAP"``, ``"IEMOCAP4"``, ``"MELD"``, ``"CMUMOSEI7"``).
        fields: the names of the pickled tuple's elements, in order.
        dims: feature widths ``(text, visual, audio)`` of the common files.
        class_names: display name of each emotion index.
        sentiment_names: display name of each sentiment index.
        text_fields: the text feature elements (four, or one that stands for all four).
        speaker_dim: width ``S`` of the per-utterance speaker one-hot vectors.
        continuous_labels: labels are scores in ``[-3, 3]`` binned into classes (CMUMOSEI7).
        strict_speakers: speakers must be ``'M'``/``'F'`` strings (or ``[L, 2]`` one-hot rows);
            when False, any string other than ``'M'`` maps to ``[0, 1]`` as in the original.
    """

    name: str
    fields: tuple[str, ...]
    dims: tuple[int, int, int]
    class_names: tuple[str, ...]
    sentiment_names: tuple[str, ...]
    text_fields: tuple[str, ...]
    speaker_dim: int
    continuous_labels: bool = False
    strict_speakers: bool = True

    @property
    def tuple_len(self) -> int:
        """Number of elements of the pickled tuple."""
        return len(self.fields)

    @property
    def num_emotions(self) -> int:
        """Number of emotion classes."""
        return len(self.class_names)

    @property
    def dict_fields(self) -> tuple[str, ...]:
        """Elements that are dicts keyed by dialogue id and read by the loader."""
        return tuple(f for f in self.fields
                     if f not in ("videoIDs", "trainVid", "testVid", "validVid"))

    def index(self, field: str) -> int:
        """Position of ``field`` in the pickled tuple."""
        return self.fields.index(field)


_SENT_NEG_NEU_POS = ("negative", "neutral", "positive")

FORMATS: dict[str, DatasetFormat] = {
    "IEMOCAP": DatasetFormat(
        name="IEMOCAP",
        fields=("videoIDs", "videoSpeakers", "videoLabels", "videoText0", "videoText1",
                "videoText2", "videoText3", "videoAudio", "videoVisual", "videoSentence",
                "trainVid", "testVid"),
        dims=(1024, 342, 1582),
        class_names=("happy", "sad", "neutral", "angry", "excited", "frustrated"),
        sentiment_names=_SENT_NEG_NEU_POS,
        text_fields=("videoText0", "videoText1", "videoText2", "videoText3"),
        speaker_dim=2,
    ),
    "IEMOCAP4": DatasetFormat(
        name="IEMOCAP4",
        fields=("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio",
                "videoVisual", "videoSentence", "trainVid", "testVid"),
        dims=(1024, 512, 100),
        class_names=("happy", "sad", "neutral", "angry"),
        sentiment_names=_SENT_NEG_NEU_POS,
        text_fields=("videoText",),
        speaker_dim=2,
    ),
    "MELD": DatasetFormat(
        name="MELD",
        fields=("videoIDs", "videoSpeakers", "videoLabels", "videoSentiments", "videoText0",
                "videoText1", "videoText2", "videoText3", "videoAudio", "videoVisual",
                "videoSentence", "trainVid", "testVid", "validVid"),
        dims=(1024, 342, 300),
        class_names=("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
        sentiment_names=("neutral", "positive", "negative"),
        text_fields=("videoText0", "videoText1", "videoText2", "videoText3"),
        speaker_dim=9,
    ),
    "CMUMOSEI7": DatasetFormat(
        name="CMUMOSEI7",
        fields=("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio",
                "videoVisual", "videoSentence", "trainVid", "testVid"),
        dims=(1024, 35, 384),
        class_names=("strongly negative [-3,-2)", "negative [-2,-1)",
                     "weakly negative [-1,0)", "neutral (0)", "weakly positive (0,1]",
                     "positive (1,2]", "strongly positive (2,3]"),
        sentiment_names=_SENT_NEG_NEU_POS,
        text_fields=("videoText",),
        speaker_dim=2,
        continuous_labels=True,
        strict_speakers=False,
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(FORMATS)

_ALIASES = {"IEMOCAP6": "IEMOCAP", "CMUMOSEI": "CMUMOSEI7", "MOSEI7": "CMUMOSEI7"}


def dataset_format(dataset: str | DatasetFormat) -> DatasetFormat:
    """Look up a layout by name (case-insensitive; ``IEMOCAP6`` and ``CMUMOSEI`` are aliases).

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(dataset, DatasetFormat):
        return dataset
    key = str(dataset).upper().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[key]


# emotion index -> sentiment index, as the original's dataloader.py derives it
_SENTIMENT_LUT = {
    "IEMOCAP": np.array([2, 0, 1, 0, 2, 0], dtype=np.int64),   # {1,3,5}->0 {2}->1 {0,4}->2
    "IEMOCAP4": np.array([2, 0, 1, 0], dtype=np.int64),        # {1,3}->0 {2}->1 {0}->2
}


def sentiment_from_emotion(dataset: str | DatasetFormat, emotion: np.ndarray) -> np.ndarray:
    """Sentiment labels derived from emotion labels (IEMOCAP, IEMOCAP4).

    Args:
        dataset: ``"IEMOCAP"`` or ``"IEMOCAP4"`` (MELD stores its sentiments; CMUMOSEI7 derives
            them from the scores with :func:`mosei_sentiment`).
        emotion: integer labels ``[L]`` within ``[0, num_emotions)``.

    Returns:
        int64 ``[L]``: 0 negative, 1 neutral, 2 positive.
    """
    fmt = dataset_format(dataset)
    if fmt.name not in _SENTIMENT_LUT:
        raise ValueError(f"{fmt.name} sentiments are not derived from emotion labels")
    return _SENTIMENT_LUT[fmt.name][np.asarray(emotion, dtype=np.int64)]


def mosei_emotion_bins(score: np.ndarray) -> np.ndarray:
    """CMUMOSEI7's 7 classes from continuous scores, exactly as the original bins them.

    ``< -2 -> 0``, ``[-2, -1) -> 1``, ``[-1, 0) -> 2``, ``== 0 -> 3``, ``(0, 1] -> 4``,
    ``(1, 2] -> 5``, ``> 2 -> 6``. Note the asymmetry: the negative bins are closed on the left,
    the positive ones on the right, so ``-1 -> 1`` but ``1 -> 4``.

    Args:
        score: finite floats ``[L]`` (validated by the loader; NaN would land in bin 6).

    Returns:
        int64 ``[L]``.
    """
    a = np.asarray(score, dtype=np.float64)
    neg = np.digitize(a, [-2.0, -1.0], right=False)          # <-2:0, [-2,-1):1, >=-1:2
    pos = 4 + np.digitize(a, [1.0, 2.0], right=True)         # <=1:4, (1,2]:5, >2:6
    return np.where(a < 0, neg, np.where(a > 0, pos, 3)).astype(np.int64)


def mosei_sentiment(score: np.ndarray) -> np.ndarray:
    """CMUMOSEI7 sentiment: ``< 0 -> 0`` (negative), ``== 0 -> 1``, ``> 0 -> 2``; int64 ``[L]``."""
    a = np.asarray(score, dtype=np.float64)
    return (np.sign(a) + 1).astype(np.int64)
