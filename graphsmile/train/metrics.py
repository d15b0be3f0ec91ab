"""Metrics as the paper reports them: accuracy and weighted F1 (scikit-learn), in percent.

The original computes ``accuracy_score(labels, preds) * 100`` and
``f1_score(labels, preds, average="weighted") * 100`` over all utterances of a split, for the
emotion, sentiment and sentiment-shift tasks alike; so do we (the shift task over all
utterance pairs of its chunks).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

__all__ = ["acc_f1", "acc_f1_from_confusion", "confusion", "report", "report_dict", "mean_std", "summarise_seeds", "TASKS"]

#: The three tasks and their metric-name prefixes.
TASKS = ("emo", "sen", "sft")


def acc_f1(labels: np.ndarray, preds: np.ndarray) -> Dict[str, float]:
    """``{"acc": ..., "f1": ...}`` in percent (weighted F1; classes absent from both labels and
    predictions do not count, classes with no prediction give F1 0 without a warning).
    Empty inputs give NaN."""
    labels = np.asarray(labels).reshape(-1)
    preds = np.asarray(preds).reshape(-1)
    if labels.size != preds.size:
        raise ValueError(f"labels and preds must have the same length, got {labels.size} and {preds.size}")
    if labels.size == 0:
        return {"acc": float("nan"), "f1": float("nan")}
    # The confusion counts over the classes that occur, then the formulas of
    # acc_f1_from_confusion: scikit-learn's accuracy_score and weighted f1_score (a test checks
    # they agree), without its input validation, which took milliseconds per call and ran for
    # every task at every epoch's end.
    classes, index = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    C = classes.size
    cm = np.bincount(index[: labels.size] * C + index[labels.size:], minlength=C * C).reshape(C, C)
    return acc_f1_from_confusion(cm)


def acc_f1_from_confusion(cm) -> Dict[str, float]:
    """:func:`acc_f1` from a ``[C, C]`` confusion matrix (rows = true class, columns =
    predicted) instead of the label and prediction arrays: the shift task's metrics over P pairs
    need only these counts (:func:`graphsmile.ops.shift_pair_nll` returns them), not P-element
    arrays. Same semantics as scikit-learn's weighted F1 with ``zero_division=0``: classes that
    occur neither as label nor as prediction do not count. No pairs gives NaN."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be [C, C], got shape {cm.shape}")
    total = cm.sum()
    if total == 0:
        return {"acc": float("nan"), "f1": float("nan")}
    tp = np.diag(cm)
    support = cm.sum(1)
    predicted = cm.sum(0)
    # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (support + predicted); 0 where both are 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"acc": float(tp.sum() / total * 100.0), "f1": float((f1 * support).sum() / support.sum() * 100.0)}


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    return confusion_matrix(np.asarray(labels).reshape(-1), np.asarray(preds).reshape(-1),
                            labels=list(range(num_classes)))


def report(labels: np.ndarray, preds: np.ndarray, names: Sequence[str], digits: int = 4) -> str:
    """scikit-learn's classification report with class names (every class listed)."""
    return classification_report(np.asarray(labels).reshape(-1), np.asarray(preds).reshape(-1),
                                 labels=list(range(len(names))), target_names=list(names),
                                 digits=digits, zero_division=0)


def report_dict(labels: np.ndarray, preds: np.ndarray, names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """The classification report as a dict (for ``results.json``)."""
    return classification_report(np.asarray(labels).reshape(-1), np.asarray(preds).reshape(-1),
                                 labels=list(range(len(names))), target_names=list(names),
                                 output_dict=True, zero_division=0)


def mean_std(values: Iterable[float]) -> Dict[str, object]:
    """``{"mean", "std", "n", "values"}``; ``std`` is the sample standard deviation
    (``ddof=1``; 0 for a single value)."""
    v = [float(x) for x in values]
    finite = [x for x in v if math.isfinite(x)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "values": v}
    arr = np.asarray(finite, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": v}


def summarise_seeds(per_seed: Sequence[Mapping[str, object]]) -> Dict[str, Dict[str, object]]:
    """Mean ± std over seeds of every metric found in each run's ``"valid"`` and ``"test"``
    blocks (metrics at the best-validation epoch) and of the paper-protocol figure.

    Returns e.g. ``{"test_emo_f1": {"mean", "std", "n", "values"}, ...}``.
    """
    out: Dict[str, Dict[str, object]] = {}
    keys: List[str] = []
    for split in ("valid", "test"):
        for r in per_seed:
            for k in (r.get(split) or {}):
                name = f"{split}_{k}"
                if name not in keys and k not in ("dialogues", "utterances") and isinstance(r[split][k], (int, float)):
                    keys.append(name)
    for name in keys:
        split, k = name.split("_", 1)
        out[name] = mean_std((r.get(split) or {}).get(k, float("nan")) for r in per_seed)
    pp = [r.get("paper_protocol") or {} for r in per_seed]
    for k in ("test_emo_f1", "test_emo_acc"):
        if all(k in p for p in pp):
            out[f"paper_protocol_{k}"] = mean_std(p[k] for p in pp)
    return out


def fmt_pm(stat: Mapping[str, object], digits: int = 2) -> str:
    """``"72.81 ± 0.45"``; when some values were not finite (left out of the mean),
    ``"72.81 ± 0.45 (over 2 of 3 seeds; the others are not finite)"``."""
    text = f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    total = len(stat.get("values") or [])
    n = int(stat.get("n", total))
    if total and n < total:
        text += f" (over {n} of {total} seeds; the others are not finite)"
    return text
