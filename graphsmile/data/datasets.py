"""Reading and validating GraphSmile feature pickles (SPEC section 7).

:func:`load_dataset` reads one pickle in any of the four layouts of
:data:`graphsmile.data.formats.FORMATS`, checks it thoroughly, converts every feature matrix to
float32 once, and returns the train / valid / test splits as :class:`DialogueDataset` objects
whose items are :class:`Dialogue` records (ready-made tensors, no work per ``__getitem__``).

Anything wrong with a file raises :class:`DataFormatError` (a ``ValueError``) whose message
names the file, the dialogue id and the field, and says what was expected. A missing file
raises ``FileNotFoundError``.

Split protocol: the test set is ``testVid``. The validation set is the first
``int(valid_fraction * len(trainVid))`` ids of ``trainVid`` (the original's
``get_train_valid_sampler``: ``int`` rounds down, so 120 training dialogues give 12 for
validation), training uses the rest. If ``trainVid`` is pickled as a set its iteration order is
not reproducible across processes (string hashing is randomised), so sets are sorted first.
For MELD, ``valid_from="validVid"`` takes the validation dialogues from the 14th element; in the
common file that element is ``None``, and then MELD's dev ids (1039..1152, as listed in
``trainVid``) are used.

Security note: unpickling runs code named in the file. Only load files you trust.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .formats import (
    FORMATS,
    DatasetFormat,
    dataset_format,
    mosei_emotion_bins,
    mosei_sentiment,
    sentiment_from_emotion,
)

__all__ = [
    "DataFormatError",
    "Dialogue",
    "DialogueDataset",
    "DatasetSplits",
    "load_dataset",
    "MELD_DEV_IDS",
]

#: MELD's dev dialogue ids in the common file (one of them is absent there).
MELD_DEV_IDS = range(1039, 1153)

_VALID_FROM = ("train10", "validVid", "none")


class DataFormatError(ValueError):
    """A feature file that does not match its dataset's layout.

    Attributes:
        path: the file.
        dialogue: the offending dialogue id, when one is to blame.
        field: the tuple element (e.g. ``"videoAudio"``), when one is to blame.
    """

    def __init__(self, message: str, *, path: str | PathLike | None = None,
                 dialogue: Any = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.dialogue = dialogue
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if dialogue is not None:
            where.append(f"dialogue {dialogue!r}")
        if field is not None:
            where.append(field)
        super().__init__(": ".join(where + [message]))


@dataclass
class Dialogue:
    """One dialogue of ``L`` utterances, as tensors ready to batch.

    Attributes:
        id: the dialogue id (a string, or an int for MELD).
        text: four float32 ``[L, Dt]`` text feature sets. For IEMOCAP4 and CMUMOSEI7 (one stored
            text set) the four entries are the same tensor object.
        visual: float32 ``[L, Dv]``.
        audio: float32 ``[L, Da]``.
        speakers: float32 ``[L, S]`` one-hot (``S = 2``: ``'M' -> [1, 0]``, ``'F' -> [0, 1]``;
            ``S = 9`` for MELD, as stored).
        emotion: int64 ``[L]`` emotion class indices.
        sentiment: int64 ``[L]`` sentiment indices (see ``DatasetFormat.sentiment_names``).
        transcript: the ``L`` utterance strings.
        score: float32 ``[L]`` continuous labels (CMUMOSEI7 only, else ``None``).
    """

    id: Hashable
    text: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    visual: torch.Tensor
    audio: torch.Tensor
    speakers: torch.Tensor
    emotion: torch.Tensor
    sentiment: torch.Tensor
    transcript: list[str]
    score: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.emotion.shape[0])

    @property
    def length(self) -> int:
        """Number of utterances ``L``."""
        return len(self)


class DialogueDataset(Dataset):
    """A list of :class:`Dialogue` records; ``ds[i]`` returns the ``i``-th one (no copy).

    Batch with :func:`graphsmile.data.collate_dialogues`; group by length with
    :class:`graphsmile.data.BucketBatchSampler` (``lengths`` is what it needs).
    """

    def __init__(self, dialogues: Sequence[Dialogue], name: str = ""):
        self.dialogues = list(dialogues)
        self.name = name

    def __len__(self) -> int:
        return len(self.dialogues)

    def __getitem__(self, index: int) -> Dialogue:
        return self.dialogues[index]

    def __iter__(self):
        return iter(self.dialogues)

    @property
    def ids(self) -> list:
        """Dialogue ids, in dataset order."""
        return [d.id for d in self.dialogues]

    @property
    def lengths(self) -> list[int]:
        """Utterance count of each dialogue, in dataset order."""
        return [len(d) for d in self.dialogues]

    @property
    def num_utterances(self) -> int:
        """Total utterance count ``N``."""
        return sum(self.lengths)

    def emotion_counts(self, num_classes: int) -> np.ndarray:
        """Utterances per emotion class, int64 ``[num_classes]`` (e.g. for class weights)."""
        if not self.dialogues:
            return np.zeros(num_classes, dtype=np.int64)
        labels = torch.cat([d.emotion for d in self.dialogues]).numpy()
        return np.bincount(labels, minlength=num_classes).astype(np.int64)

    def __repr__(self) -> str:
        return (f"DialogueDataset({self.name!r}, {len(self)} dialogues, "
                f"{self.num_utterances} utterances)")


@dataclass
class DatasetSplits:
    """The result of :func:`load_dataset`.

    Attributes:
        dataset: canonical dataset name.
        path: the file read.
        train, valid, test: the splits (``valid`` may be empty, e.g. ``valid_from="none"``).
        class_names: emotion class names, index order.
        sentiment_names: sentiment names, index order.
        dims: feature widths ``(text, visual, audio)``.
        num_emotions: number of emotion classes.
        num_speakers: speaker one-hot width ``S``.
        valid_from: how the validation split was made.
    """

    dataset: str
    path: str
    train: DialogueDataset
    valid: DialogueDataset
    test: DialogueDataset
    class_names: tuple[str, ...]
    sentiment_names: tuple[str, ...]
    dims: tuple[int, int, int]
    num_emotions: int
    num_speakers: int
    valid_from: str = "train10"

    def summary(self) -> str:
        """One line per split: dialogues, utterances, length range."""
        lines = [f"{self.dataset} ({self.path}); dims text/visual/audio = "
                 f"{self.dims[0]}/{self.dims[1]}/{self.dims[2]}; "
                 f"{self.num_emotions} emotions: {', '.join(self.class_names)}"]
        for name in ("train", "valid", "test"):
            ds = getattr(self, name)
            ln = ds.lengths
            rng = f"lengths {min(ln)}-{max(ln)} (mean {np.mean(ln):.1f})" if ln else "empty"
            lines.append(f"  {name:5s}: {len(ds):5d} dialogues, {ds.num_utterances:6d} "
                         f"utterances, {rng}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# reading


def _read_pickle(path: Path, fmt: DatasetFormat) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{fmt.name} feature file not found: {path}")
    if path.is_dir():
        raise DataFormatError("is a directory, expected a pickle file", path=path)
    try:
        with open(path, "rb") as f:
            # latin1: the common files were pickled by Python 2 (str and numpy buffers);
            # for Python 3 pickles the encoding changes nothing.
            return pickle.load(f, encoding="latin1")
    except OSError as e:
        raise DataFormatError(f"cannot read the file: {e}", path=path) from e
    except Exception as e:  # unpickling garbage can raise nearly anything
        raise DataFormatError(
            f"not a readable pickle ({type(e).__name__}: {e}); expected a pickled "
            f"{fmt.tuple_len}-tuple in the {fmt.name} layout", path=path) from e


def _layout_hint(n: int) -> str:
    same = [f.name for f in FORMATS.values() if f.tuple_len == n]
    if same:
        return f" (that is the length of the {' / '.join(same)} layout)"
    return ""


def _id_list(value: Any, field_name: str, path: Path) -> list:
    """A list of dialogue ids from trainVid/testVid/validVid; sets are sorted (see module doc)."""
    if isinstance(value, (set, frozenset)):
        try:
            ids = sorted(value)
        except TypeError:
            ids = sorted(value, key=repr)
    elif isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise DataFormatError(f"expected a list of dialogue ids, got an array of shape "
                                  f"{value.shape}", path=path, field=field_name)
        ids = value.tolist()
    elif isinstance(value, (list, tuple, range)):
        ids = list(value)
    else:
        raise DataFormatError(f"expected a list of dialogue ids, got {type(value).__name__}",
                              path=path, field=field_name)
    ids = [int(v) if isinstance(v, np.integer) else v for v in ids]
    seen: set = set()
    for v in ids:
        try:
            if v in seen:
                raise DataFormatError(f"dialogue id {v!r} is listed twice", path=path,
                                      field=field_name)
            seen.add(v)
        except TypeError:
            raise DataFormatError(f"dialogue id {v!r} is not hashable", path=path,
                                  field=field_name) from None
    return ids


def _fmt_ids(ids: Sequence, limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _check_ids_present(raw: dict, fmt: DatasetFormat, ids: list, list_name: str,
                       path: Path) -> None:
    for name in fmt.dict_fields:
        d = raw[name]
        missing = [v for v in ids if v not in d]
        if missing:
            raise DataFormatError(
                f"{len(missing)} dialogue id(s) listed in {list_name} are missing from this "
                f"dict (element {fmt.index(name)} of the {fmt.name} tuple): {_fmt_ids(missing)}",
                path=path, field=name)


def _int_labels(value: Any, n_classes: int, field_name: str, vid: Any, path: Path
                ) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise DataFormatError(f"cannot read labels: {e}", path=path, dialogue=vid,
                              field=field_name) from e
    if arr.ndim != 1:
        raise DataFormatError(f"expected a flat list of labels, got shape {arr.shape}",
                              path=path, dialogue=vid, field=field_name)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"label {arr[i].item()!r} at utterance {i} is not an "
                                  f"integer class index", path=path, dialogue=vid,
                                  field=field_name)
    elif arr.dtype.kind not in "iu" and arr.size:
        raise DataFormatError(f"expected integer class indices, got dtype {arr.dtype}",
                              path=path, dialogue=vid, field=field_name)
    # range-check before the cast: a float like 1e20 (or a uint64 above 2^63) would wrap in int64
    out = (arr < 0) | (arr >= n_classes)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataFormatError(f"label {arr[i].item()!r} at utterance {i} is out of range "
                              f"0..{n_classes - 1}", path=path, dialogue=vid, field=field_name)
    return arr.astype(np.int64)


def _score_labels(value: Any, vid: Any, path: Path) -> np.ndarray:
    try:
        raw = np.asarray(value)
    except Exception as e:
        raise DataFormatError(f"expected continuous scores in [-3, 3]: {e}", path=path,
                              dialogue=vid, field="videoLabels") from e
    if raw.dtype.kind not in "fiu":   # a float64 conversion would silently take strings and bools
        raise DataFormatError(f"expected continuous scores in [-3, 3] (numbers), got dtype {raw.dtype}",
                              path=path, dialogue=vid, field="videoLabels")
    arr = raw.astype(np.float64)
    if arr.ndim != 1:
        raise DataFormatError(f"expected a flat list of scores, got shape {arr.shape}",
                              path=path, dialogue=vid, field="videoLabels")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"score {arr[i].item()!r} at utterance {i} is not finite", path=path,
                              dialogue=vid, field="videoLabels")
    out = (arr < -3.0) | (arr > 3.0)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataFormatError(f"score {arr[i].item()!r} at utterance {i} is outside [-3, 3]",
                              path=path, dialogue=vid, field="videoLabels")
    return arr


def _feature_matrix(value: Any, dim: int | None, n: int, field_name: str, vid: Any,
                    path: Path, expect_msg: str = "") -> np.ndarray:
    """``[n, dim]`` float32 from a list of vectors / a 2-D array of real numbers (no copy if
    already a float32 array)."""
    try:
        raw = np.asarray(value)
        kind = raw.dtype.kind
        if kind in "fiu" and isinstance(value, (list, tuple)):
            # a row of bools (or complex numbers) would be promoted with its float neighbours
            kind = next((k for k in (np.asarray(row).dtype.kind for row in value) if k not in "fiu"), kind)
        elif kind == "O" and any(isinstance(e, (str, bytes, bool, np.bool_, complex, np.complexfloating))
                                 for e in raw.reshape(-1)):
            kind = "U"
        if kind in "fiu":
            with np.errstate(over="ignore"):     # float64 beyond float32 -> inf, reported below
                arr = raw.astype(np.float32, copy=False)
        elif kind == "O":                        # e.g. vectors of mixed dtypes
            with np.errstate(over="ignore"):
                arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as e:
        sizes = None
        try:
            sizes = sorted({int(np.size(v)) for v in value})
        except Exception:
            pass
        if sizes is not None and len(sizes) > 1:
            msg = f"utterance feature vectors have different lengths {sizes}"
        else:
            msg = f"cannot convert to a float matrix ({e})"
        raise DataFormatError(msg, path=path, dialogue=vid, field=field_name) from e
    if kind not in "fiuO":
        # numbers only: numpy would also parse strings ('0.5'), take bools and drop imaginary parts
        what = {"b": "bool", "c": "complex", "S": "bytes"}.get(kind, "string")
        raise DataFormatError(f"features must be real numbers, got {what} values", path=path, dialogue=vid,
                              field=field_name)
    if arr.ndim != 2:
        raise DataFormatError(f"expected one feature vector per utterance ([L, D] matrix), "
                              f"got shape {arr.shape}", path=path, dialogue=vid,
                              field=field_name)
    if arr.shape[0] != n:
        raise DataFormatError(f"has {arr.shape[0]} utterances but videoLabels has {n}",
                              path=path, dialogue=vid, field=field_name)
    if dim is not None and arr.shape[1] != dim:
        raise DataFormatError(f"vectors are {arr.shape[1]}-dim, expected {dim}{expect_msg}",
                              path=path, dialogue=vid, field=field_name)
    finite = np.isfinite(arr)
    if not finite.all():
        i, j = (int(k[0]) for k in np.nonzero(~finite))
        raise DataFormatError(
            f"non-finite value {arr[i, j].item()!r} at utterance {i}, component {j} (NaN/inf, or a "
            f"float64 beyond the float32 range)", path=path, dialogue=vid, field=field_name)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr).copy()
    return arr


def _speaker_matrix(value: Any, n: int, fmt: DatasetFormat, vid: Any, path: Path
                    ) -> np.ndarray:
    name = "videoSpeakers"
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise DataFormatError(f"cannot read speakers: {e}", path=path, dialogue=vid,
                              field=name) from e
    if arr.dtype.kind in "USO" and arr.ndim == 1:
        if fmt.speaker_dim != 2:
            raise DataFormatError(f"expected {fmt.speaker_dim}-dim one-hot speaker vectors, "
                                  f"got strings", path=path, dialogue=vid, field=name)
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "latin1")
        elif arr.dtype.kind == "O":
            arr = np.array([x.decode("latin1") if isinstance(x, bytes) else str(x)
                            for x in arr.tolist()])
        if arr.shape[0] != n:
            raise DataFormatError(f"has {arr.shape[0]} utterances but videoLabels has {n}",
                                  path=path, dialogue=vid, field=name)
        is_m = arr == "M"
        if fmt.strict_speakers:
            bad = ~(is_m | (arr == "F"))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataFormatError(f"speaker {arr[i].item()!r} at utterance {i}: expected "
                                      f"'M' or 'F'", path=path, dialogue=vid, field=name)
        # as the original: 'M' -> [1, 0], everything else -> [0, 1]
        return np.stack([is_m, ~is_m], axis=1).astype(np.float32)
    return _feature_matrix(value, fmt.speaker_dim, n, name, vid, path,
                           f" (one-hot speaker vectors for {fmt.name})")


def _transcript(value: Any, n: int, vid: Any, path: Path) -> list[str]:
    if (isinstance(value, str) or not isinstance(value, (Sequence, np.ndarray))
            or (isinstance(value, np.ndarray) and value.ndim != 1)):
        kind = (f"an array of shape {value.shape}" if isinstance(value, np.ndarray)
                else type(value).__name__)
        raise DataFormatError(f"expected a list of {n} utterance strings, got {kind}",
                              path=path, dialogue=vid, field="videoSentence")
    if len(value) != n:
        raise DataFormatError(f"has {len(value)} utterances but videoLabels has {n}",
                              path=path, dialogue=vid, field="videoSentence")
    return [s.decode("latin1") if isinstance(s, bytes) else str(s) for s in value]


def _convert_dialogue(vid: Any, raw: dict, fmt: DatasetFormat, dims: tuple[int, int, int],
                      path: Path) -> Dialogue:
    score_t = None
    if fmt.continuous_labels:
        score = _score_labels(raw["videoLabels"][vid], vid, path)
        emotion = mosei_emotion_bins(score)
        sentiment = mosei_sentiment(score)
        score_t = torch.from_numpy(score.astype(np.float32))
    else:
        emotion = _int_labels(raw["videoLabels"][vid], fmt.num_emotions, "videoLabels", vid,
                              path)
        if "videoSentiments" in raw:
            sentiment = _int_labels(raw["videoSentiments"][vid], 3, "videoSentiments", vid,
                                    path)
            if sentiment.shape[0] != emotion.shape[0]:
                raise DataFormatError(f"has {sentiment.shape[0]} utterances but videoLabels "
                                      f"has {emotion.shape[0]}", path=path, dialogue=vid,
                                      field="videoSentiments")
        else:
            sentiment = sentiment_from_emotion(fmt, emotion)
    n = int(emotion.shape[0])
    if n == 0:
        raise DataFormatError("empty dialogue (0 utterances)", path=path, dialogue=vid,
                              field="videoLabels")

    dt, dv, da = dims
    hint = (f" (dims text/visual/audio = {dt}/{dv}/{da}"
            + (f", the real {fmt.name} widths" if tuple(dims) == fmt.dims else
               ", as passed in dims=") + "; a file written by synthesize(dims=...) must be "
            "loaded with the same dims=, or dims='infer')")
    texts = [torch.from_numpy(_feature_matrix(raw[f][vid], dt, n, f, vid, path, hint))
             for f in fmt.text_fields]
    text = tuple(texts) if len(texts) == 4 else (texts[0],) * 4
    visual = _feature_matrix(raw["videoVisual"][vid], dv, n, "videoVisual", vid, path, hint)
    audio = _feature_matrix(raw["videoAudio"][vid], da, n, "videoAudio", vid, path, hint)
    speakers = _speaker_matrix(raw["videoSpeakers"][vid], n, fmt, vid, path)
    transcript = _transcript(raw["videoSentence"][vid], n, vid, path)
    return Dialogue(
        id=vid, text=text, visual=torch.from_numpy(visual), audio=torch.from_numpy(audio),
        speakers=torch.from_numpy(speakers), emotion=torch.from_numpy(emotion),
        sentiment=torch.from_numpy(sentiment), transcript=transcript, score=score_t)


def _infer_dims(raw: dict, fmt: DatasetFormat, vid: Any, path: Path) -> tuple[int, int, int]:
    out = []
    for name in (fmt.text_fields[0], "videoVisual", "videoAudio"):
        try:
            arr = np.asarray(raw[name][vid], dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise DataFormatError(f"cannot infer the feature width: {e}", path=path,
                                  dialogue=vid, field=name) from e
        if arr.ndim != 2:
            raise DataFormatError(f"expected one feature vector per utterance, got shape "
                                  f"{arr.shape}", path=path, dialogue=vid, field=name)
        out.append(int(arr.shape[1]))
    return out[0], out[1], out[2]


def load_dataset(path: str | PathLike, dataset: str, *, valid_from: str = "train10",
                 valid_fraction: float = 0.1,
                 dims: tuple[int, int, int] | str | None = None) -> DatasetSplits:
    """Read, validate and split one feature pickle.

    Args:
        path: the pickle file.
        dataset: ``"IEMOCAP"``, ``"IEMOCAP4"``, ``"MELD"`` or ``"CMUMOSEI7"``
            (case-insensitive).
        valid_from: ``"train10"`` (default): validation = the first
            ``int(valid_fraction * len(trainVid))`` ids of ``trainVid``, training = the rest;
            ``"validVid"`` (MELD only): validation = the 14th element (MELD's dev ids
            1039..1152 found in ``trainVid`` when that element is ``None``), training =
            ``trainVid`` without them; ``"none"``: training = all of ``trainVid``, empty
            validation.
        valid_fraction: fraction of ``trainVid`` used by ``"train10"``.
        dims: expected ``(text, visual, audio)`` widths. ``None``: the dataset's real widths
            (:attr:`DatasetFormat.dims`); a tuple: those widths (needed for files written by
            ``synthesize(dims=...)``); ``"infer"``: take them from the first dialogue and
            require every dialogue to match.

    Returns:
        :class:`DatasetSplits`; every dialogue's features are float32 tensors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: anything about the file does not match the layout (the message names
            the file, the dialogue and the field).
        ValueError: bad arguments.
    """
    fmt = dataset_format(dataset)
    if valid_from not in _VALID_FROM:
        raise ValueError(f"valid_from must be one of {_VALID_FROM}, got {valid_from!r}")
    if valid_from == "validVid" and "validVid" not in fmt.fields:
        raise ValueError(f"valid_from='validVid' needs a file with a validVid element (MELD); "
                         f"{fmt.name} has none, use 'train10'")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if dims is not None and dims != "infer":
        if (not isinstance(dims, (tuple, list)) or len(dims) != 3
                or not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims)):
            raise ValueError(f"dims must be None, 'infer' or three positive ints "
                             f"(text, visual, audio), got {dims!r}")
        dims = tuple(int(d) for d in dims)

    path = Path(path)
    obj = _read_pickle(path, fmt)
    if not isinstance(obj, (tuple, list)):
        raise DataFormatError(f"expected a pickled {fmt.tuple_len}-tuple in the {fmt.name} "
                              f"layout, got {type(obj).__name__}", path=path)
    if len(obj) != fmt.tuple_len:
        raise DataFormatError(
            f"the pickled tuple has {len(obj)} elements{_layout_hint(len(obj))}; {fmt.name} "
            f"expects {fmt.tuple_len}: {', '.join(fmt.fields)}", path=path)
    raw = dict(zip(fmt.fields, obj))
    for name in fmt.dict_fields:
        if not isinstance(raw[name], Mapping):
            raise DataFormatError(
                f"element {fmt.index(name)} should be a dict keyed by dialogue id, got "
                f"{type(raw[name]).__name__}; is this really a {fmt.name} file?", path=path,
                field=name)

    train_ids = _id_list(raw["trainVid"], "trainVid", path)
    test_ids = _id_list(raw["testVid"], "testVid", path)
    overlap = set(train_ids) & set(test_ids)
    if overlap:
        raise DataFormatError(f"{len(overlap)} dialogue id(s) are in both trainVid and "
                              f"testVid: {_fmt_ids(sorted(overlap, key=repr))}", path=path,
                              field="testVid")
    _check_ids_present(raw, fmt, train_ids, "trainVid", path)
    _check_ids_present(raw, fmt, test_ids, "testVid", path)

    if valid_from == "train10":
        split = int(valid_fraction * len(train_ids))
        valid_ids, fit_ids = train_ids[:split], train_ids[split:]
    elif valid_from == "none":
        valid_ids, fit_ids = [], train_ids
    else:
        vv = raw["validVid"]
        if vv is None:
            valid_ids = [v for v in train_ids
                         if isinstance(v, int) and v in MELD_DEV_IDS]
            if not valid_ids:
                raise DataFormatError(
                    "validVid is None and trainVid holds no MELD dev ids (1039..1152); use "
                    "valid_from='train10'", path=path, field="validVid")
        else:
            valid_ids = _id_list(vv, "validVid", path)
            if not valid_ids:   # asked for validVid's split: an empty one would silently drop selection
                raise DataFormatError("validVid is empty; use valid_from='train10' (the first 10% of "
                                      "trainVid) or 'none' (no validation split)", path=path, field="validVid")
            bad = set(valid_ids) & set(test_ids)
            if bad:
                raise DataFormatError(f"{len(bad)} dialogue id(s) are in both validVid and "
                                      f"testVid: {_fmt_ids(sorted(bad, key=repr))}",
                                      path=path, field="validVid")
            _check_ids_present(raw, fmt, valid_ids, "validVid", path)
        vset = set(valid_ids)
        fit_ids = [v for v in train_ids if v not in vset]

    if dims == "infer":
        first = (train_ids or test_ids or [None])[0]
        if first is None:
            raise DataFormatError("trainVid and testVid are both empty", path=path)
        dims = _infer_dims(raw, fmt, first, path)
    elif dims is None:
        dims = fmt.dims

    cache: dict = {}

    def build(ids: list, name: str) -> DialogueDataset:
        out = []
        for vid in ids:
            if vid not in cache:
                cache[vid] = _convert_dialogue(vid, raw, fmt, dims, path)
            out.append(cache[vid])
        return DialogueDataset(out, name=name)

    return DatasetSplits(
        dataset=fmt.name, path=str(path), train=build(fit_ids, "train"),
        valid=build(valid_ids, "valid"), test=build(test_ids, "test"),
        class_names=fmt.class_names, sentiment_names=fmt.sentiment_names, dims=dims,
        num_emotions=fmt.num_emotions, num_speakers=fmt.speaker_dim, valid_from=valid_from)
