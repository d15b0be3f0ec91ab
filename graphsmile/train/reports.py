"""What a run leaves behind for people: the per-epoch line, ``results.json``, PNG plots,
the classification report, and (optionally) TensorBoard scalars.

Plots use matplotlib's non-interactive Agg backend (no display needed).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from .checkpoint import atomic_write_text

__all__ = [
    "epoch_line",
    "to_jsonable",
    "write_json",
    "plot_learning_curves",
    "plot_confusion",
    "TensorBoardLogger",
]


def _f(v: Optional[float], digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def epoch_line(rec: Mapping[str, Any], epochs: int, is_best: bool) -> str:
    """One line per epoch: ``epoch 3/60 | train loss 2.914 acc 41.2 f1 40.9 | valid loss ...
    acc .. f1 .. | test acc .. f1 .. | 4.1 s *`` (``*``: new best validation F1). Accuracy and
    F1 are the emotion task's, in percent."""
    tr, va, te = rec.get("train") or {}, rec.get("valid") or {}, rec.get("test") or {}
    w = len(str(epochs))
    s = (f"epoch {rec['epoch']:>{w}d}/{epochs} | train loss {_f(tr.get('loss'), 4)} "
         f"acc {_f(tr.get('emo_acc'))} f1 {_f(tr.get('emo_f1'))}")
    if va:
        s += f" | valid loss {_f(va.get('loss'), 4)} acc {_f(va.get('emo_acc'))} f1 {_f(va.get('emo_f1'))}"
    s += f" | test acc {_f(te.get('emo_acc'))} f1 {_f(te.get('emo_f1'))} | {rec.get('time_s', 0.0):.1f} s"
    return s + (" *" if is_best else "")


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return to_jsonable(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    return obj


def write_json(path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path, best_epoch: Optional[int] = None,
                         title: str = "") -> None:
    """Loss, emotion accuracy and emotion weighted F1 per epoch for train / valid / test; a
    dashed line marks the selected (best validation) epoch."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("loss", "loss"), ("emo_acc", "emotion accuracy (%)"), ("emo_f1", "emotion weighted F1 (%)"))
    for ax, (key, label) in zip(axes, panels):
        for split, style in (("train", "-"), ("valid", "-"), ("test", "--")):
            ys = [(r.get(split) or {}).get(key) for r in history]
            if all(y is None for y in ys):
                continue
            ys = [np.nan if y is None else y for y in ys]
            ax.plot(ep, ys, style, marker="." if len(ep) < 40 else None, label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", linestyle=":", label=f"selected (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, names: Sequence[str], path, title: str = "") -> None:
    """Confusion matrix, rows normalised to recall (colour), raw counts in the cells."""
    plt = _plt()
    cm = np.asarray(cm)
    C = len(names)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    size = max(4.5, 0.8 * C + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    short = [n if len(n) <= 14 else n[:13] + "…" for n in names]
    ax.set_xticks(range(C), short, rotation=45, ha="right")
    ax.set_yticks(range(C), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(C):
        for j in range(C):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.55 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class TensorBoardLogger:
    """Scalars per epoch under ``<run>/tensorboard`` when TensorBoard is installed; otherwise a
    one-line notice on stderr and nothing else (training goes on)."""

    def __init__(self, logdir, enabled: bool = True):
        self.writer = None
        self.message = ""
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as e:  # ImportError, or tensorboard's own import errors
            self.message = (f"graphsmile: --tensorboard ignored: TensorBoard is not installed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); pip install tensorboard")
            print(self.message, file=sys.stderr)
            return
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(logdir))

    def log_epoch(self, rec: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for split in ("train", "valid", "test"):
            for k, v in (rec.get(split) or {}).items():
                if isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self.writer.add_scalar(f"{split}/{k}", v, rec["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def format_eval(name: str, m: Mapping[str, Any]) -> str:
    """``valid: loss 1.2345 | emotion acc 50.00 f1 49.00 | sentiment ... | shift ...``."""
    return (f"{name}: loss {_f(m.get('loss'), 4)} | emotion acc {_f(m.get('emo_acc'))} f1 {_f(m.get('emo_f1'))}"
            f" | sentiment acc {_f(m.get('sen_acc'))} f1 {_f(m.get('sen_f1'))}"
            f" | shift acc {_f(m.get('sft_acc'))} f1 {_f(m.get('sft_f1'))}")


def confusion_text(cm: np.ndarray, names: Sequence[str]) -> str:
    """The confusion matrix as an aligned text table (rows true, columns predicted)."""
    cm = np.asarray(cm)
    short = [n[:12] for n in names]
    w = max(6, max(len(s) for s in short) + 1, len(str(int(cm.max()) if cm.size else 0)) + 1)
    lines = ["true \\ pred".ljust(w) + "".join(s.rjust(w) for s in short)]
    for i, s in enumerate(short):
        lines.append(s.ljust(w) + "".join(str(int(v)).rjust(w) for v in cm[i]))
    return "\n".join(lines)


def list_files(root, names: List[str]) -> List[str]:
    """Those of ``names`` (relative to ``root``) that exist, as paths."""
    root = Path(root)
    return [str(root / n) for n in names if (root / n).exists()]
