"""Checkpoints: what a run saves, written atomically, and read back safely.

A graphsmile checkpoint is one ``torch.save`` file holding a plain dict (loadable with
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists and dicts only)::

    kind            "graphsmile.checkpoint"
    version         1
    model           the model's state dict (never DDP-prefixed)
    config          GraphSmileConfig.to_dict()
    dataset, class_names, sentiment_names
    epoch           number of completed epochs (None for a converted checkpoint)
    optimizer       AdamW state dict          (training checkpoints)
    loss            MultiTaskLoss state dict  (the "auto" weights; {} otherwise)
    best            best-so-far selection record (epoch, valid/test metrics)
    history         per-epoch metrics so far
    rng             per-rank RNG states (torch, cuda, numpy, python) at the end of ``epoch``
    sampler_epoch   the epoch the training sampler will be set to next
    train           the run's training options (seed, valid_from, data fingerprint, ...)
    source          where the weights came from (for converted checkpoints)

``last.pt`` is written after every epoch and ``best.pt`` at every new best validation epoch,
each through a temporary file in the same folder and ``os.replace``, so a crash never leaves
a half-written checkpoint behind.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..config import GraphSmileConfig

__all__ = [
    "CHECKPOINT_KIND",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_save",
    "atomic_write_text",
    "capture_rng_state",
    "restore_rng_state",
    "load_checkpoint",
    "config_from_checkpoint",
    "model_from_checkpoint",
    "read_original_state_dict",
    "infer_original_config",
]

CHECKPOINT_KIND = "graphsmile.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable graphsmile checkpoint (or original state dict)."""


# --- atomic writes ------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_save(obj: Any, path) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    _atomic_write(Path(path), lambda f: f.write(data))


# --- RNG state ----------------------------------------------------------------------------


def capture_rng_state(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """The torch (CPU and, when ``device`` is CUDA, that device's), numpy and Python RNG states,
    in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None,
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    return state


def restore_rng_state(state: Mapping[str, Any], device: Optional[torch.device] = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if state.get("cuda") is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu().to(torch.uint8), device)
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# --- reading ------------------------------------------------------------------------------


def _torch_load(path: Path, map_location, weights_only: bool = True, mmap: bool = False,
                trust_hint: str = "") -> Any:
    """torch.load with errors naming ``path``; ``trust_hint`` ends the message for a file that
    holds pickled objects (how the caller can allow them, if it can)."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        for cand in ("best.pt", "last.pt"):
            if (path / cand).is_file():
                raise CheckpointError(f"{path} is a directory; did you mean {path / cand}?")
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        # mmap: tensors stay on disk until touched (only the zip format supports it)
        mmap = mmap and zipfile.is_zipfile(path)
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as e:
        if weights_only and "weights_only" in str(e):
            raise CheckpointError(
                f"{path}: holds pickled Python objects, not just tensors (e.g. a whole nn.Module); "
                f"re-save it with torch.save(model.state_dict()){trust_hint}") from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from None
    except PermissionError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e.strerror})") from None
    except Exception as e:  # unpickling garbage can raise nearly anything
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {msg})") from None


def load_checkpoint(path, map_location="cpu", mmap: bool = False) -> Dict[str, Any]:
    """Read a graphsmile checkpoint (safely: ``weights_only=True``) and check its kind.
    ``mmap=True`` (CPU only) leaves the tensors on disk until they are read: for looking at a
    checkpoint's metadata without reading its weights.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a checkpoint, or not one of ours (an original state dict must go
            through ``graphsmile convert-checkpoint`` first).
    """
    path = Path(path)
    obj = _torch_load(path, map_location, mmap=mmap)
    if not isinstance(obj, dict) or obj.get("kind") != CHECKPOINT_KIND:
        if isinstance(obj, Mapping) and any(isinstance(k, str) and ("hetergconv_" in k or k.startswith("module.")) for k in obj):
            raise CheckpointError(f"{path}: this is a state dict of the original GraphSmile, not a graphsmile "
                                  "checkpoint; convert it first: graphsmile convert-checkpoint "
                                  f"{path} OUT.pt --dataset NAME")
        raise CheckpointError(f"{path}: not a graphsmile checkpoint (no kind={CHECKPOINT_KIND!r} entry)")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not a version graphsmile "
                              f"writes (an int from 1 to {CHECKPOINT_VERSION})")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this graphsmile "
                              f"understands ({CHECKPOINT_VERSION}); upgrade graphsmile")
    for key in ("model", "config"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    obj["path"] = str(path)
    return obj


def config_from_checkpoint(ckpt: Mapping[str, Any]) -> GraphSmileConfig:
    """The :class:`GraphSmileConfig` stored in a checkpoint."""
    try:
        return GraphSmileConfig.from_dict(ckpt["config"], strict=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: invalid stored config ({e})") from None


def model_from_checkpoint(ckpt: Mapping[str, Any], backend: Optional[str] = None):
    """A :class:`~graphsmile.model.GraphSmile` built from the checkpoint's config with its
    weights (in eval mode). ``backend`` overrides the stored op backend."""
    from ..model import GraphSmile

    cfg = config_from_checkpoint(ckpt)
    if backend is not None:
        cfg = cfg.replace(backend=backend)
    model = GraphSmile(cfg)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:400]
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: weights do not fit the stored config ({first})") from None
    model.eval()
    return model


# --- the original's state dicts -----------------------------------------------------------


def read_original_state_dict(path, trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """A state dict saved by the original GraphSmile (``.pt``/``.pth``): a plain state dict,
    a DDP one (``module.`` prefixes, removed later by the model), or a dict wrapping it under
    ``"model"``/``"state_dict"``/``"model_state_dict"``. A pickled whole model needs
    ``trust_pickle=True`` (it runs code from the file and needs the original's classes
    importable)."""
    path = Path(path)
    obj = _torch_load(path, "cpu", weights_only=not trust_pickle,
                      trust_hint=", or pass --trust_pickle if you trust the file (unpickling runs code "
                                 "named in it)")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and obj.get("kind") == CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: already a graphsmile checkpoint; nothing to convert")
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path}: expected a state dict (parameter names -> tensors), got {type(obj).__name__}")
    return dict(obj)


def _strip(k: str) -> str:
    while True:
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p):]
                break
        else:
            return k


def infer_original_config(sd: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """What the shapes of an original state dict tell about its config: ``hidden_dim``,
    ``heter_n_layers``, ``n_emotions``, ``edge_capacity``, the feature widths ``dim_t`` (per
    text set), ``dim_v``, ``dim_a`` and the text projection's input width ``text_in``.
    Windows, ``shift_win`` and dropout are not recoverable from weights."""
    s = {_strip(k): v for k, v in sd.items()}
    out: Dict[str, Any] = {}
    w = s.get("emo_output.weight")
    if w is not None and w.dim() == 2:
        out["n_emotions"], out["hidden_dim"] = int(w.shape[0]), int(w.shape[1])
    layers = []
    for mod in ("tv", "ta", "va"):
        idx = {int(m.group(1)) for k in s for m in [re.match(rf"hetergconv_{mod}\.hetergcn_layers\.(\d+)\.", k)] if m}
        layers.append(max(idx) + 1 if idx else 0)
    out["heter_n_layers"] = tuple(layers)
    ew = s.get("hetergconv_tv.edge_weight")
    if ew is not None and ew.dim() == 1:
        out["edge_capacity"] = int(ew.shape[0])
    bn = s.get("batchnorms_t.0.weight")
    if bn is not None:
        out["dim_t"] = int(bn.shape[0])
    for m, key in (("v", "dim_v"), ("a", "dim_a"), ("t", "text_in")):
        lw = s.get(f"dim_layer_{m}.0.weight")
        if lw is not None and lw.dim() == 2:
            out[key] = int(lw.shape[1])
    return out


def describe_checkpoint(ckpt: Mapping[str, Any]) -> List[str]:
    """Human-readable lines about a checkpoint (for ``evaluate``/``predict``)."""
    cfg = ckpt.get("config", {})
    ep = ckpt.get("epoch")
    best = ckpt.get("best") or {}
    lines = [f"checkpoint {ckpt.get('path', '?')}: {cfg.get('dataset')} model, hidden {cfg.get('hidden_dim')}, "
             f"layers {cfg.get('heter_n_layers')}, window {cfg.get('win')}, textf_mode {cfg.get('textf_mode')}"
             + (f", trained {ep} epoch(s)" if ep is not None else "")
             + (f", best validation epoch {best.get('epoch')}" if best.get("epoch") else "")]
    src = ckpt.get("source")
    if src:
        lines.append(f"  converted from {src}")
    return lines
