"""Training and evaluation of GraphSmile: one process or torchrun DDP, checkpoints, resume.

:class:`Trainer` owns one seed's run (model, AdamW, the multi-task loss, the samplers);
:func:`fit` drives it epoch by epoch, writing ``last.pt`` / ``best.pt`` and the reports;
:func:`run_training` is what ``graphsmile train`` calls (output folder, data, several seeds).

Protocol (SPEC 8, fixing the original):

* **Model selection on validation.** After every epoch the model is evaluated on the
  validation split (the first 10% of ``trainVid`` by default) and on the test split. The
  selected epoch is the one with the best *validation* weighted F1 of the emotion task (ties:
  the earliest); the reported test metrics are those of that epoch. The original's figure,
  the best test F1 over all epochs, is reported too, labelled "paper protocol (selected on
  test)": it is optimistic and not a valid estimate.
* **Metrics** per epoch and split: loss, accuracy and weighted F1 (scikit-learn, percent) of
  the emotion, sentiment and sentiment-shift tasks, over the whole split. The shift task's come
  from its ``[2, 2]`` confusion counts (:func:`metrics.acc_f1_from_confusion`), accumulated
  on the device, never from per-pair arrays.
* **Shift loss** (``config.shift_loss``): ``"fused"`` (default) asks the model for the shift
  NLL and confusion counts directly (:func:`graphsmile.ops.shift_pair_nll`, no ``[P, 2]`` logits);
  ``"logits"`` takes the ``[P, 2]`` logits and computes log_softmax and NLL as the original.
* **Determinism.** Everything is seeded (Python, numpy, torch); the training batches of epoch
  ``e`` are a function of ``(seed, e)`` only (:class:`graphsmile.data.BucketBatchSampler`);
  checkpoints hold the RNG states. On the CPU an interrupted run continued with ``--resume``
  ends with bitwise the same weights and metrics as an uninterrupted one.

Distributed training (``torchrun --nproc_per_node K -m graphsmile train ...``):

* **Batch size.** ``batch_size`` is per process: the global batch of one optimiser step is
  ``batch_size x world_size`` dialogues (the learning rate is not rescaled). Each rank takes
  every ``world_size``-th batch of the same global, length-bucketed batch list of the epoch
  (``set_epoch`` is called every epoch; when the batch count does not divide evenly, a few
  batches from the start are repeated so that every rank steps equally often, as with
  ``DistributedSampler``).
* **Gradients equal the global batch's.** Each loss term is computed as a sum over the rank's
  utterances (or shift pairs) divided by the count over all ranks, times ``world_size``, so
  that DDP's gradient average is exactly the gradient of the mean loss over the global batch
  (plain per-rank means would weight utterances of short batches more). BatchNorm statistics
  stay per rank unless ``sync_bn`` (CUDA only); with ``edge_weights="per_edge"`` a dialogue's
  edges use weight entries that depend on its position in its rank's batch (the original's
  design), so only ``"relative"`` weights give rank-independent edge-weight gradients.
* **Evaluation** is sharded: rank ``r`` evaluates every ``world_size``-th batch of the split
  (no repeats), predictions are gathered with ``all_gather_object``, metrics are computed over
  the whole split. Rank 0 writes every file.

Data path (``data_on_device``; default: on for CUDA when the data fits, see :class:`Trainer`):

* **Loader** (off): a ``DataLoader`` collates every batch on the host, copies it to the device,
  and every step reads its loss, predictions and labels back (``.item()``/``.cpu()``): several
  host syncs per batch.
* **Device-resident** (on): each split is packed once onto the device
  (:class:`graphsmile.data.collate.DeviceDialogues`); an epoch's batches (the same sampler,
  so the same batches in the same order, and the same DDP sharding) are gathered there from
  index tensors built on the host with numpy and uploaded in one copy per epoch; the host
  lengths travel with them, and so does the model's packing index, so the forward reads
  nothing back; DDP's global loss counts come from the sampler's batch list, not from an
  all-reduce. Per-step losses and predictions stay on the device until the epoch's last step,
  then come back in two copies (the losses are checked for finiteness there); labels for the
  metrics come from host copies. Evaluation works the same way, with its index tensors
  uploaded once per split.
  Losses, metrics and weights are bitwise those of the loader path on the CPU (a test checks
  it). A non-finite loss is detected at the end of the epoch (the error names the epoch, the
  batch and its dialogues); the weights have then taken the remaining steps of that epoch,
  but ``last.pt`` still holds the previous epoch.
* CUDA graphs are not used: every batch has its own shapes (``T``, ``B``, ``N``, edge and pair
  counts depend on the dialogue lengths, and the graph ops upload per-batch metadata from the
  host), so a captured graph would only replay for a batch of identical lengths.
  ``compile=True`` wraps the model in ``torch.compile`` (optional, not the default; new shapes
  mean recompilations, see :class:`Trainer`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import __version__
from ..config import GraphSmileConfig
from ..data import BucketBatchSampler, DatasetSplits, collate_dialogues
from ..data.collate import DeviceDialogues, DevicePlan, shift_pair_counts_np
from ..losses import MultiTaskLoss, nll_loss
from ..model import GraphSmile
from ..ops import num_shift_pairs, shift_pair_labels
from ..ops.reference import nll_from_logits
from . import metrics as M
from .checkpoint import (
    CHECKPOINT_KIND,
    CHECKPOINT_VERSION,
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from .distributed import DistContext
from .reports import (
    TensorBoardLogger,
    confusion_text,
    epoch_line,
    format_eval,
    plot_confusion,
    plot_learning_curves,
    write_json,
)

__all__ = [
    "SELECTION",
    "PAPER_PROTOCOL",
    "RUN_MARKERS",
    "DEFAULT_BUCKET_BATCHES",
    "RESUMABLE_CONFIG_CHANGES",
    "check_resumable",
    "EvalOutput",
    "Trainer",
    "TrainOptions",
    "combine_parts",
    "data_fingerprint",
    "fit",
    "run_training",
    "seed_everything",
    "shift_pair_counts",
]

SELECTION = "best validation weighted F1 of the emotion task (ties: earliest epoch); test metrics at that epoch"
SELECTION_NO_VALID = "last epoch (there is no validation split: --valid_from none, or too few training dialogues)"
PAPER_PROTOCOL = "paper protocol (selected on test)"
PAPER_PROTOCOL_NOTE = ("the best test weighted F1 over all epochs, as the original code reports it; the epoch is "
                       "chosen on the test set, so this figure is optimistic and not a valid estimate")
#: Files whose presence marks a folder as holding a run (``train`` refuses to write there
#: without ``--resume`` or ``--overwrite``).
RUN_MARKERS = ("run.json", "results.json", "last.pt", "best.pt")
# Training batches per length-sorted chunk (BucketBatchSampler); runs recorded before the option
# existed used it too.
DEFAULT_BUCKET_BATCHES = 50


# --- small helpers ------------------------------------------------------------------------


@contextlib.contextmanager
def float32_matmul_precision(precision: str):
    """Within the block, ``torch.set_float32_matmul_precision(precision)``; the previous
    setting is restored after it (also on an error)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def check_tf32_device(device: torch.device) -> None:
    """Raise ``ValueError`` unless ``device`` is a CUDA device with TF32 tensor cores (compute
    capability 8.0 or newer)."""
    if device.type != "cuda":
        raise ValueError(f"tf32 needs a CUDA device (TF32 is a tensor-core format of NVIDIA GPUs from compute "
                         f"capability 8.0 on), the device is {device}")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise ValueError(f"tf32 needs compute capability 8.0 or newer, {device} ({torch.cuda.get_device_name(device)}) "
                         f"has {major}.{minor}")


def _with_matmul_precision(method):
    """Runs a :class:`Trainer` method under its :meth:`Trainer.matmul_precision` (the backward
    inside it too: the setting is global, not thread-local, so autograd's threads see it)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.matmul_precision():
            return method(self, *args, **kwargs)

    return run


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def shift_pair_counts(lengths: Sequence[int], shift_win: int) -> List[int]:
    """Number of shift pairs of each dialogue (SPEC 4: sum over chunks of size^2)."""
    out = []
    for L in lengths:
        w = L if shift_win == -1 else shift_win
        out.append((L // w) * w * w + (L % w) ** 2)
    return out


def combine_parts(loss_fn: MultiTaskLoss, parts: Mapping[str, torch.Tensor], epoch: Optional[int]) -> torch.Tensor:
    """``loss_fn``'s combination of already-computed task losses ``parts``
    (``"emo"``, ``"sen"``, ``"sft"``), exactly as :meth:`MultiTaskLoss.forward` combines its
    means (a test checks the two agree for every ``loss_type``). Used where the parts are not
    plain per-batch means: the DDP-weighted training loss and whole-split evaluation losses."""
    l0, l1, l2 = loss_fn.lambd
    t = loss_fn.loss_type
    if t == "emo_sen_sft":
        return l0 * parts["emo"] + l1 * parts["sen"] + l2 * parts["sft"]
    if t == "emo_sen":
        return l0 * parts["emo"] + l1 * parts["sen"]
    if t == "emo_sft":
        return l0 * parts["emo"] + l2 * parts["sft"]
    if t == "emo":
        return parts["emo"]
    if t == "sen_sft":
        return l1 * parts["sen"] + l2 * parts["sft"]
    if t == "sen":
        return parts["sen"]
    if t == "epoch":
        if epoch is None:
            raise ValueError("loss_type='epoch' needs the current epoch (0-based)")
        r = epoch / loss_fn.epochs
        return r * (l0 * parts["emo"]) + (1 - r) * (l1 * parts["sen"] + l2 * parts["sft"])
    if t == "auto":
        return loss_fn.awl(parts["emo"], parts["sen"], parts["sft"])
    raise ValueError(f"unknown loss_type {t!r}")


def make_optimizer(params, config: GraphSmileConfig) -> torch.optim.AdamW:
    """The original's optimiser, ``AdamW(params, lr=config.lr, weight_decay=config.l2,
    amsgrad=True)``, with torch's fused kernel (``fused=True``) where the parameters' device has
    one (CUDA; the CPU since torch 2.4).

    Why fused: the step is one multi-tensor kernel over every parameter, where the default is
    about ten ``_foreach`` ops on CUDA and a Python loop of ops over the ~60 parameters on the
    CPU (1,135 ops per step; bench/host.py). A small training step is bound by host time, and
    this was the largest share of it after the graph ops. The update is the same formula;
    its rounding may differ from the loop's in the last bits. ``params``: parameters or
    parameter groups, all on one device."""
    params = list(params)  # a generator would be spent by the first attempt
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.l2, amsgrad=True, fused=True)
    except RuntimeError:  # no fused kernel for this device (or these dtypes): torch's default
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.l2, amsgrad=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping ``optimizer``'s kernel choice (``fused``,
    ``foreach``): a checkpoint's parameter groups carry the choice of the machine that wrote it
    (a fused CUDA run resumed where there is no fused kernel, or a checkpoint from before
    :func:`make_optimizer`)."""
    kernel = [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for g, (fused, foreach) in zip(optimizer.param_groups, kernel):
        g["fused"], g["foreach"] = fused, foreach


def data_fingerprint(splits: DatasetSplits) -> Dict[str, Any]:
    """What identifies the data a run was trained on: dialogue/utterance counts per split and a
    hash of the ordered dialogue ids and lengths (checked when a run is resumed)."""
    h = hashlib.sha1()
    out: Dict[str, Any] = {"dataset": splits.dataset, "dims": list(splits.dims), "valid_from": splits.valid_from}
    for name in ("train", "valid", "test"):
        ds = getattr(splits, name)
        h.update(f"{name}:{ds.ids!r}:{ds.lengths!r};".encode())
        out[name] = {"dialogues": len(ds), "utterances": ds.num_utterances}
    out["sha1"] = h.hexdigest()
    return out


def _tqdm(progress: bool, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress, dynamic_ncols=True, **kw)


# --- evaluation output --------------------------------------------------------------------


@dataclass
class EvalOutput:
    """Predictions and metrics of one split.

    Attributes:
        metrics: ``loss``, ``loss_emo``, ``loss_sen``, ``loss_sft``, ``emo_acc``, ``emo_f1``,
            ``sen_acc``, ``sen_f1``, ``sft_acc``, ``sft_f1`` (accuracy and F1 in percent),
            ``dialogues``, ``utterances``.
        ids, lengths: the dialogues in dataset order.
        emo_labels, sen_labels: int64 ``[N]``, packed in dataset order.
        emo_probs: float32 ``[N, n_emotions]``; sen_probs: float32 ``[N, 3]``.
        sft_confusion: int64 ``[2, 2]`` sentiment-shift pair counts, rows = label (0: same
            sentiment, 1: shift), columns = prediction; summed over all pairs of the split.
    """

    metrics: Dict[str, float]
    ids: List[Any] = field(default_factory=list)
    lengths: List[int] = field(default_factory=list)
    emo_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    emo_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    sen_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sen_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    sft_confusion: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), np.int64))

    @property
    def emo_preds(self) -> np.ndarray:
        return self.emo_probs.argmax(-1) if self.emo_probs.size else np.zeros(0, np.int64)

    @property
    def sen_preds(self) -> np.ndarray:
        return self.sen_probs.argmax(-1) if self.sen_probs.size else np.zeros(0, np.int64)


# --- the trainer --------------------------------------------------------------------------


class Trainer:
    """One seed's training run of GraphSmile.

    Args:
        config: model and training settings (lr, l2, batch_size, epochs, loss_type, lambd).
        splits: the data (:func:`graphsmile.data.load_dataset`).
        seed: seeds model initialisation, dropout and the batch order.
        ctx: the distributed context (default: one process).
        device: where to train.
        amp: ``"none"`` or ``"bf16"`` (``torch.autocast`` with bfloat16; meant for CUDA).
        num_workers: DataLoader worker processes.
        max_train_batches: stop each training epoch after this many batches (quick runs).
        sync_bn: use SyncBatchNorm across ranks (CUDA + DDP only).
        progress: show tqdm bars (rank 0 only).
        bucket_batches: training batches of similar length (:class:`BucketBatchSampler`: each
            epoch's shuffled dialogues sorted by length in chunks of this many batches; less
            padding); ``None``: plain random batches, as the original. Evaluation always runs
            consecutive batches in dataset order, as the original's.
        data_on_device: keep the splits on ``device`` and gather batches there, with no host
            sync inside an epoch (see the module docstring). ``None`` (default): on when
            ``device`` is CUDA and the three splits take at most a quarter of its free memory,
            off otherwise (on the CPU the loader path, with ``num_workers``, can overlap
            collation with compute). Results are the same either way (bitwise on the CPU).
        compile: wrap the model in ``torch.compile`` for training and evaluation: ``True``
            (inductor) or a backend name (e.g. ``"aot_eager"``); off by default. The first
            batches of new shapes recompile (dynamo then marks the varying sizes dynamic);
            inductor's first epoch is slow (minutes on a small CPU). State dicts and
            checkpoints are unaffected (the wrappers share the parameters).
        tf32: run fp32 matrix products on tensor cores in TF32 (10-bit mantissa products,
            fp32 accumulation: ``torch.set_float32_matmul_precision("high")``) while training
            and evaluating, restoring the previous setting after each call; CUDA devices of
            compute capability 8.0 or newer only. Off by default, as torch and the original:
            fp32 products in full precision. ``False`` leaves torch's setting as it is.

    The optimiser is ``AdamW(amsgrad=True, lr=lr, weight_decay=l2)`` over the trainable model
    parameters, plus the ``auto`` loss weights (created once, in the loss module) with weight
    decay 0; torch's fused kernel where the device has one (:func:`make_optimizer`).
    """

    def __init__(self, config: GraphSmileConfig, splits: DatasetSplits, *, seed: int = 0,
                 ctx: Optional[DistContext] = None, device: torch.device = torch.device("cpu"),
                 amp: str = "none", num_workers: int = 0, max_train_batches: Optional[int] = None,
                 sync_bn: bool = False, progress: bool = False, bucket_batches: Optional[int] = DEFAULT_BUCKET_BATCHES,
                 data_on_device: Optional[bool] = None, compile: Any = False, tf32: bool = False):
        if amp not in ("none", "bf16"):
            raise ValueError(f"amp must be 'none' or 'bf16', got {amp!r}")
        if not isinstance(tf32, bool):
            raise ValueError(f"tf32 must be True or False, got {tf32!r}")
        if tf32:
            check_tf32_device(torch.device(device))
        if max_train_batches is not None and max_train_batches < 1:
            raise ValueError(f"max_train_batches must be >= 1, got {max_train_batches}")
        if tuple(config.feature_dims) != tuple(splits.dims):
            raise ValueError(f"the config expects feature widths (text, visual, audio) {config.feature_dims} "
                             f"but the data has {tuple(splits.dims)}")
        if config.num_emotions != splits.num_emotions:
            raise ValueError(f"the config has {config.num_emotions} emotion classes, the {splits.dataset} data "
                             f"{splits.num_emotions}")
        self.config = config
        self.splits = splits
        self.seed = int(seed)
        self.ctx = ctx or DistContext()
        self.device = torch.device(device)
        self.amp = amp
        self.tf32 = tf32
        self.num_workers = int(num_workers)
        self.max_train_batches = max_train_batches
        self.progress = bool(progress) and self.ctx.is_main
        self.bucket_batches = bucket_batches
        self.fused_shift = config.shift_loss == "fused"

        seed_everything(self.seed)
        model = GraphSmile(config).to(self.device)
        if sync_bn:
            if not (self.ctx.distributed and self.device.type == "cuda"):
                raise ValueError("sync_bn needs DDP on CUDA devices (SyncBatchNorm has no CPU implementation)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.loss_fn = MultiTaskLoss.from_config(config).to(self.device)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": config.l2}]
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "weight_decay": 0.0})
        self.optimizer = make_optimizer(groups, config)

        self.ddp: Optional[nn.Module] = None
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            unused = set(self.loss_fn.needs) != {"emo", "sen", "sft"}
            self.ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           find_unused_parameters=unused)
            # decorrelate dropout across ranks (model init above was identical on every rank)
            torch.manual_seed(self.seed + 7919 * self.ctx.rank)

        self.sampler = BucketBatchSampler(splits.train.lengths, config.batch_size, shuffle=True, seed=self.seed,
                                          num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                          bucket_batches=bucket_batches)
        self.train_loader = DataLoader(splits.train, batch_sampler=self.sampler, collate_fn=collate_dialogues,
                                       num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        if data_on_device not in (None, True, False):
            raise ValueError(f"data_on_device must be None (auto), True or False, got {data_on_device!r}")
        self.data_on_device, self.data_on_device_reason = self._resolve_data_on_device(data_on_device)
        self._stores: List[Tuple[Any, DeviceDialogues]] = []    # (dataset, its store), splits only
        self._eval_plans: List[Tuple[Any, DevicePlan]] = []
        if self.data_on_device and len(splits.train):
            self._store(splits.train)      # fail early (e.g. out of memory), not at the first epoch
        if not (isinstance(compile, bool) or (isinstance(compile, str) and compile)):
            raise ValueError(f"compile must be True, False or a torch.compile backend name, got {compile!r}")
        self.compiled = compile
        # the modules the steps call: torch.compile's wrappers share the parameters, and
        # state dicts, checkpoints and DDP keep using self.model / self.ddp
        self._train_net, self._eval_net = self.net, self.model
        if compile:
            kw = {} if compile is True else {"backend": compile}
            self._train_net = torch.compile(self.net, **kw)
            self._eval_net = torch.compile(self.model, **kw)
        self.epoch = 0                     # completed epochs
        self.history: List[Dict[str, Any]] = []
        self.best: Optional[Dict[str, Any]] = None
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.best_loss_state: Dict[str, torch.Tensor] = {}

    @property
    def selection(self) -> str:
        """How the reported epoch is chosen (:data:`SELECTION`, or the last epoch without a
        validation split)."""
        return SELECTION if len(self.splits.valid) else SELECTION_NO_VALID

    # --- pieces -----------------------------------------------------------------------------

    @property
    def net(self) -> nn.Module:
        """The module to call for training steps (the DDP wrapper when distributed)."""
        return self.ddp if self.ddp is not None else self.model

    def autocast(self):
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def matmul_precision(self):
        """The fp32 matmul precision of the run's training and evaluation calls (``tf32``)."""
        return float32_matmul_precision("high") if self.tf32 else contextlib.nullcontext()

    # --- the device-resident data path -------------------------------------------------------

    def _resolve_data_on_device(self, want: Optional[bool]) -> Tuple[bool, str]:
        if want is not None:
            return bool(want), "requested" if want else "turned off"
        if self.device.type != "cuda":
            return False, f"auto: off on {self.device.type} (the loader path)"
        sets = len(self.config.text_sets)
        need = sum(DeviceDialogues.estimate_bytes(ds, self.splits.dims, sets, self.config.shift_win,
                                                  shift_labels=not self.fused_shift)
                   for ds in (self.splits.train, self.splits.valid, self.splits.test) if len(ds))
        free, _ = torch.cuda.mem_get_info(self.device)
        # a quarter of the free memory at most: activations of the largest batch need the rest
        if need <= free // 4:
            return True, f"auto: {need / 2**20:.0f} MiB of data, {free / 2**20:.0f} MiB free"
        return False, f"auto: off, {need / 2**20:.0f} MiB of data > a quarter of {free / 2**20:.0f} MiB free"

    def _store(self, dataset) -> DeviceDialogues:
        """The device store of ``dataset`` (kept for the three splits, built for others)."""
        for ds, st in self._stores:
            if ds is dataset:
                return st
        st = DeviceDialogues(dataset, self.device, shift_win=self.config.shift_win, text_sets=self.config.text_sets,
                             shift_labels=not self.fused_shift)
        if any(dataset is d for d in (self.splits.train, self.splits.valid, self.splits.test)):
            self._stores.append((dataset, st))
        return st

    def _eval_plan(self, dataset, shard: List[List[int]]) -> DevicePlan:
        """The uploaded index tensors of this rank's evaluation batches (fixed: built once)."""
        for ds, plan in self._eval_plans:
            if ds is dataset:
                return plan
        plan = self._store(dataset).plan(shard)
        if any(dataset is d for d in (self.splits.train, self.splits.valid, self.splits.test)):
            self._eval_plans.append((dataset, plan))
        return plan

    @staticmethod
    def _loader_seed_draw() -> None:
        # Creating a DataLoader iterator draws its base seed from torch's global CPU generator
        # (even with num_workers=0). The device path draws it too, so that dropout masks, RNG
        # states in checkpoints and hence results are identical on both paths.
        torch.empty((), dtype=torch.int64).random_()

    def _global_counts(self, steps: int) -> List[Tuple[float, float]]:
        """DDP: utterances and shift pairs of the global batch (all ranks) of each of the
        epoch's first ``steps`` steps, from the sampler's batch list: every rank knows every
        rank's batches, so the loss needs no all-reduce (and no read-back) of the counts."""
        R = self.ctx.world_size
        padded = self.sampler.padded_batches()
        lens = np.asarray(self.splits.train.lengths, dtype=np.int64)
        pairs = shift_pair_counts_np(lens, self.config.shift_win)
        out = []
        for i in range(steps):
            group = np.concatenate([np.asarray(b, dtype=np.int64) for b in padded[i * R:(i + 1) * R]])
            out.append((float(lens[group].sum()), float(pairs[group].sum())))
        return out

    def _forward(self, net: nn.Module, inputs: tuple, sentiment: torch.Tensor,
                 pack_index: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Any]:
        """``net``'s emotion and sentiment logits and its shift output: with the fused shift
        loss ``(NLL sum, confusion)`` (the model is given ``sentiment``), else the ``[P, 2]``
        logits."""
        kw: Dict[str, Any] = {}
        if pack_index is not None:
            kw["pack_index"] = pack_index
        if self.fused_shift:
            kw["shift_sentiment"] = sentiment
        emo, sen, sft, _ = net(*inputs, **kw)
        return emo, sen, sft

    def _shift_terms(self, sft: Any, labels: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(NLL summed over the batch's pairs, confusion [2, 2] int64)``, both on the device:
        the fused output as it is, or computed from the ``[P, 2]`` logits and the pair
        ``labels`` (log_softmax in float32 or wider, argmax for the predictions)."""
        return sft if self.fused_shift else nll_from_logits(sft, labels)

    def loss(self, emo: torch.Tensor, sen: torch.Tensor, sft_sum: torch.Tensor, y_emo: torch.Tensor,
             y_sen: torch.Tensor, num_pairs: int, epoch: int,
             counts: Optional[Tuple[float, float]] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The training loss of one step and its detached local parts (per-rank means and their
        combination, for reporting). ``sft_sum``: the shift NLL summed over the batch's
        ``num_pairs`` pairs (:meth:`_shift_terms`). One process: the means combined as
        :class:`MultiTaskLoss` combines them (:func:`combine_parts`). DDP: each term is
        ``sum over local rows / count over all ranks x world_size``, so that DDP's averaged
        gradient is the global batch's (see the module docstring). ``counts``: the global
        batch's ``(utterances, shift pairs)`` when known on the host (the device path);
        otherwise they are all-reduced and read back (a sync)."""
        if not self.ctx.distributed:
            parts = {"emo": nll_loss(emo, y_emo), "sen": nll_loss(sen, y_sen), "sft": sft_sum / max(num_pairs, 1)}
            total = combine_parts(self.loss_fn, parts, epoch)
            local = {k: v.detach() for k, v in parts.items()}
            local["total"] = total.detach()
            return total, local
        R = self.ctx.world_size
        if counts is None:
            c = torch.tensor([float(y_emo.numel()), float(num_pairs)], dtype=torch.float64, device=self.device)
            self.ctx.all_reduce_sum(c)
            n_glob, p_glob = c.tolist()
        else:
            n_glob, p_glob = counts
        sums = {
            "emo": F.nll_loss(F.log_softmax(emo.float(), -1), y_emo, reduction="sum"),
            "sen": F.nll_loss(F.log_softmax(sen.float(), -1), y_sen, reduction="sum"),
            "sft": sft_sum,
        }
        parts = {"emo": sums["emo"] * (R / n_glob), "sen": sums["sen"] * (R / n_glob), "sft": sums["sft"] * (R / p_glob)}
        total = combine_parts(self.loss_fn, parts, epoch)
        with torch.no_grad():
            local = {"emo": sums["emo"].detach() / max(y_emo.numel(), 1), "sen": sums["sen"].detach() / max(y_sen.numel(), 1),
                     "sft": sums["sft"].detach() / max(num_pairs, 1)}
            local["total"] = combine_parts(self.loss_fn, local, epoch).detach()
        return total, local

    def _sync_loss_grads(self) -> None:
        if not self.ctx.distributed:
            return
        for p in self.loss_fn.parameters():
            if p.grad is not None:
                self.ctx.all_reduce_sum(p.grad)
                p.grad /= self.ctx.world_size

    @_with_matmul_precision
    def forward_backward(self, batch, epoch: int) -> Dict[str, Any]:
        """One training step's forward and backward (no optimiser step). Returns the detached
        local loss parts, predictions and labels."""
        batch = batch.to(self.device, non_blocking=True)
        with self.autocast():
            emo, sen, sft = self._forward(self._train_net, batch.model_inputs(), batch.sentiment)
        y_sft = None if self.fused_shift else shift_pair_labels(batch.sentiment, batch.lengths, self.config.shift_win)
        sft_sum, sft_cm = self._shift_terms(sft, y_sft)
        num_pairs = num_shift_pairs(batch.lengths, self.config.shift_win)
        total, parts = self.loss(emo, sen, sft_sum, batch.emotion, batch.sentiment, num_pairs, epoch)
        finite = bool(torch.isfinite(total))
        # every rank decides together, before backward's gradient all-reduce: a rank raising
        # alone would leave the others waiting in it
        self._raise_non_finite(epoch, None if finite else (0, total.item(), "", list(batch.ids[:4])))
        total.backward()
        self._sync_loss_grads()
        return {
            "parts": {k: float(v) for k, v in parts.items()},
            "n": batch.num_utterances,
            "emo": (batch.emotion.cpu().numpy(), emo.detach().argmax(-1).cpu().numpy()),
            "sen": (batch.sentiment.cpu().numpy(), sen.detach().argmax(-1).cpu().numpy()),
            "sft_cm": sft_cm.cpu().numpy().astype(np.int64),
        }

    @_with_matmul_precision
    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One epoch of training (``epoch`` is 0-based). Returns the epoch's training metrics
        over all ranks: utterance-weighted mean loss (and its parts) and acc/F1 of the three
        tasks, computed on the training-mode predictions. Runs the device-resident path when
        ``self.data_on_device`` (same results; see the module docstring)."""
        self.model.train()
        self.sampler.set_epoch(epoch)
        if self.data_on_device:
            local, loss_sums, n_utt, batches = self._train_epoch_device(epoch)
        else:
            local, loss_sums, n_utt, batches = self._train_epoch_loader(epoch)
        gathered = self.ctx.all_gather_object({"arrays": local, "loss": loss_sums, "n": n_utt, "batches": batches})
        arrays = {k: np.concatenate([g["arrays"][k] for g in gathered]) for k in local if k != "sft_cm"}
        sft_cm = sum(g["arrays"]["sft_cm"] for g in gathered)
        n_all = sum(g["n"] for g in gathered)
        res: Dict[str, float] = {}
        for k in ("total", "emo", "sen", "sft"):
            s = sum(g["loss"][k] for g in gathered)
            res["loss" if k == "total" else f"loss_{k}"] = s / n_all if n_all else float("nan")
        for task in ("emo", "sen", "sft"):
            m = M.acc_f1(arrays[f"{task}_y"], arrays[f"{task}_p"]) if task != "sft" else M.acc_f1_from_confusion(sft_cm)
            res[f"{task}_acc"], res[f"{task}_f1"] = m["acc"], m["f1"]
        res["batches"] = sum(g["batches"] for g in gathered)
        res["utterances"] = n_all
        return res

    def _train_epoch_loader(self, epoch: int):
        """The DataLoader path: host collation, a host-to-device copy and reads per batch.
        Returns ``(label/prediction arrays, utterance-weighted loss sums, utterances, batches)``."""
        total = len(self.sampler) if self.max_train_batches is None else min(len(self.sampler), self.max_train_batches)
        acc: Dict[str, List[np.ndarray]] = {k: [] for k in ("emo_y", "emo_p", "sen_y", "sen_p")}
        sft_cm = np.zeros((2, 2), np.int64)
        loss_sums = {"total": 0.0, "emo": 0.0, "sen": 0.0, "sft": 0.0}
        n_utt = 0
        batches = 0
        bar = _tqdm(self.progress, total=total, desc=f"epoch {epoch + 1} train", leave=False, unit="batch")
        try:
            for i, batch in enumerate(self.train_loader):
                if self.max_train_batches is not None and i >= self.max_train_batches:
                    break
                self.optimizer.zero_grad(set_to_none=True)
                out = self.forward_backward(batch, epoch)
                self.optimizer.step()
                n = out["n"]
                for k in loss_sums:
                    loss_sums[k] += out["parts"].get(k, float("nan")) * n
                n_utt += n
                batches += 1
                for task in ("emo", "sen"):
                    acc[f"{task}_y"].append(out[task][0])
                    acc[f"{task}_p"].append(out[task][1])
                sft_cm += out["sft_cm"]
                bar.update(1)
                bar.set_postfix(loss=f"{out['parts']['total']:.4f}")
        finally:
            bar.close()
        local = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in acc.items()}
        local["sft_cm"] = sft_cm
        return local, loss_sums, n_utt, batches

    @_with_matmul_precision
    def device_step(self, batch, epoch: int, counts: Optional[Tuple[float, float]] = None):
        """One training step's forward and backward on a device-resident batch
        (:class:`graphsmile.data.collate.DeviceBatch`), with no device-to-host read.
        ``counts``: DDP's global ``(utterances, shift pairs)`` of the step.

        Returns ``(stats, emo_pred, sen_pred, sft_confusion)``, all on the device: ``stats`` is
        ``[5]``: the loss that was back-propagated, then the detached parts ``total``,
        ``emo``, ``sen``, ``sft`` (NaN for a part the loss type does not compute); the
        predictions are int64 ``[N]``, ``[N]``; the shift confusion counts int64 ``[2, 2]``."""
        with self.autocast():
            emo, sen, sft = self._forward(self._train_net, batch.model_inputs(), batch.sentiment, batch.pack_index)
        sft_sum, sft_cm = self._shift_terms(sft, batch.shift_labels)
        total, parts = self.loss(emo, sen, sft_sum, batch.emotion, batch.sentiment, batch.num_pairs, epoch, counts=counts)
        total.backward()
        self._sync_loss_grads()
        nan = None
        vals = [total.detach()]
        for k in ("total", "emo", "sen", "sft"):
            if k in parts:
                vals.append(parts[k])
            else:
                nan = total.detach().new_full((), float("nan")) if nan is None else nan
                vals.append(nan)
        stats = torch.stack(vals)
        return stats, emo.detach().argmax(-1), sen.detach().argmax(-1), sft_cm

    def _raise_non_finite(self, epoch: int, found: Optional[Tuple[int, float, str, list]]) -> None:
        """Raise one FloatingPointError, the same on every rank, if some rank's training loss was
        not finite. ``found``: this rank's first such step ``(step, loss, where, dialogue ids)``
        or ``None``. Under DDP the earliest step is reported (lowest rank on a tie): a NaN
        gradient averaged into every rank's weights makes the others' later losses NaN too."""
        if not self.ctx.any_true(found is not None, self.device):
            return
        reports = self.ctx.all_gather_object(found)
        step, rank, (_, loss, where, ids) = min((r[0], k, r) for k, r in enumerate(reports) if r is not None)
        on_rank = f" on rank {rank}" if self.ctx.distributed else ""
        err = FloatingPointError(f"non-finite training loss {loss} at epoch {epoch + 1}{on_rank} ({where}dialogues "
                                 f"{ids}...); try a lower --lr")
        err.same_on_every_rank = True   # graphsmile's CLI prints it once
        raise err

    def _train_epoch_device(self, epoch: int):
        """The device-resident path (``data_on_device``): the same batches as the loader path
        (this rank's share of the sampler's list), gathered on the device; the epoch's only
        device-to-host reads come after the last step. Same return value as
        :meth:`_train_epoch_loader`, and the same numbers."""
        batches = list(iter(self.sampler))
        if self.max_train_batches is not None:
            batches = batches[: self.max_train_batches]
        counts = self._global_counts(len(batches)) if self.ctx.distributed else [None] * len(batches)
        self._loader_seed_draw()
        plan = self._store(self.splits.train).plan(batches)   # one upload of the epoch's index tensors
        stats: List[torch.Tensor] = []
        preds: Dict[str, List[torch.Tensor]] = {"emo": [], "sen": [], "sft_cm": []}
        bar = _tqdm(self.progress, total=len(plan), desc=f"epoch {epoch + 1} train", leave=False, unit="batch")
        try:
            for i, batch in enumerate(plan):
                self.optimizer.zero_grad(set_to_none=True)
                st, pe, ps, pf = self.device_step(batch, epoch, counts[i])
                self.optimizer.step()
                stats.append(st)
                preds["emo"].append(pe)
                preds["sen"].append(ps)
                preds["sft_cm"].append(pf)
                bar.update(1)   # no loss in the bar: showing it would read it back every batch
        finally:
            bar.close()
        store = plan.store
        # --- the end of the epoch: one read of the losses, one of the predictions
        rows = torch.stack(stats).tolist() if stats else []
        first_bad = next((i for i, row in enumerate(rows) if not math.isfinite(row[0])), None)
        found = None
        if first_bad is not None:
            ids = [store.ids[j] for j in plan.entries[first_bad].indices]
            found = (first_bad, rows[first_bad][0], f"batch {first_bad + 1} of {len(rows)}, ", ids[:4])
        self._raise_non_finite(epoch, found)
        loss_sums = {"total": 0.0, "emo": 0.0, "sen": 0.0, "sft": 0.0}
        n_utt = 0
        for row, e in zip(rows, plan.entries):
            # the loader path's arithmetic, in the same order: float(part) * n, summed in doubles
            for k, v in zip(("total", "emo", "sen", "sft"), row[1:]):
                loss_sums[k] += v * e.N
            n_utt += e.N
        local: Dict[str, np.ndarray] = {}
        if rows:
            cm = torch.stack(preds["sft_cm"]).sum(0).view(-1)
            flat = torch.cat(preds["emo"] + preds["sen"] + [cm]).cpu().numpy()   # one read
            n_all = sum(e.N for e in plan.entries)
            local["emo_p"], local["sen_p"] = flat[:n_all], flat[n_all:2 * n_all]
            local["sft_cm"] = flat[2 * n_all:].reshape(2, 2).astype(np.int64)
            all_rows = np.concatenate([e.rows for e in plan.entries])
            local["emo_y"], local["sen_y"] = store.emotion_np[all_rows], store.sentiment_np[all_rows]
        else:
            local = {k: np.zeros(0, np.int64) for k in ("emo_y", "emo_p", "sen_y", "sen_p")}
            local["sft_cm"] = np.zeros((2, 2), np.int64)
        local = {k: local[k] for k in ("emo_y", "emo_p", "sen_y", "sen_p", "sft_cm")}
        return local, loss_sums, n_utt, len(rows)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them
        from rank 0 at the start of each training forward, after which each rank updates its
        own copy with its own batch, so after an epoch the ranks' copies differ. Evaluation is
        sharded over ranks, and the selected weights are captured on every rank: both must be
        one model, rank 0's, the one the checkpoints save. A collective under DDP."""
        if self.ctx.distributed:
            for b in self.model.buffers():
                torch.distributed.broadcast(b, 0)

    def _eval_batches(self, dataset) -> List[List[int]]:
        """This rank's evaluation batches: consecutive ``batch_size`` dialogues in dataset order,
        as the original's evaluation loaders, never length-bucketed. With ``per_edge`` weights a
        dialogue's edges use the weight entries at its position in its batch, so only the
        original's batches reproduce an original checkpoint's predictions."""
        bs = BucketBatchSampler(dataset.lengths, self.config.batch_size, shuffle=False, seed=0,
                                bucket_batches=None).global_batches()
        return bs[self.ctx.rank::self.ctx.world_size]

    @torch.no_grad()
    @_with_matmul_precision
    def evaluate(self, dataset, epoch: Optional[int] = None, desc: str = "eval") -> EvalOutput:
        """Evaluate the model (eval mode) on ``dataset`` (a :class:`DialogueDataset`),
        sharded over ranks and gathered; every rank returns the same :class:`EvalOutput`.
        ``epoch`` (0-based) only matters for ``loss_type="epoch"``'s loss weighting
        (default: the last completed epoch)."""
        if epoch is None:
            epoch = max(self.epoch - 1, 0)
        self._sync_buffers()
        was_training = self.model.training
        self.model.eval()
        shard = self._eval_batches(dataset)
        try:
            if self.data_on_device and len(dataset):
                recs, sft_nll, sft_cm = self._eval_device(dataset, shard, desc)
            else:
                recs, sft_nll, sft_cm = self._eval_loader(dataset, shard, desc)
        finally:
            self.model.train(was_training)
        gathered = self.ctx.all_gather_object({"recs": recs, "sft_nll": sft_nll, "sft_cm": sft_cm})
        return self._eval_output(dataset, gathered, epoch)

    def _eval_loader(self, dataset, shard: List[List[int]], desc: str):
        """Evaluation batches through a DataLoader, read back batch by batch. Returns
        ``(records, shift NLL sum, shift confusion [2, 2])``; a record is
        ``(dataset index, emotion log-probs [L, C], emotion labels [L], sentiment log-probs
        [L, 3], sentiment labels [L])``."""
        loader = DataLoader(dataset, batch_sampler=shard, collate_fn=collate_dialogues, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda")
        recs: List[Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        sft_nll, sft_cm = 0.0, np.zeros((2, 2), np.int64)
        bar = _tqdm(self.progress, total=len(shard), desc=desc, leave=False, unit="batch")
        try:
            for idx, batch in zip(shard, loader):
                batch = batch.to(self.device, non_blocking=True)
                with self.autocast():
                    emo, sen, sft = self._forward(self._eval_net, batch.model_inputs(), batch.sentiment)
                lp_emo = F.log_softmax(emo.float(), -1).cpu()
                lp_sen = F.log_softmax(sen.float(), -1).cpu()
                y_sft = None if self.fused_shift else shift_pair_labels(batch.sentiment, batch.lengths, self.config.shift_win)
                nll, cm = self._shift_terms(sft, y_sft)
                sft_nll += float(nll)
                sft_cm += cm.cpu().numpy()
                ye, ys = batch.emotion.cpu(), batch.sentiment.cpu()
                s = 0
                for j, L in zip(idx, batch.lengths):
                    recs.append((int(j), lp_emo[s:s + L].numpy(), ye[s:s + L].numpy(),
                                 lp_sen[s:s + L].numpy(), ys[s:s + L].numpy()))
                    s += L
                bar.update(1)
        finally:
            bar.close()
        return recs, sft_nll, sft_cm

    def _eval_device(self, dataset, shard: List[List[int]], desc: str):
        """:meth:`_eval_loader` on device-resident batches: outputs stay on the device until
        the last batch is done, then are read back once. Same return value, same numbers."""
        self._loader_seed_draw()
        plan = self._eval_plan(dataset, shard)
        lp_emo_l: List[torch.Tensor] = []
        lp_sen_l: List[torch.Tensor] = []
        nll_l: List[torch.Tensor] = []
        cm_l: List[torch.Tensor] = []
        bar = _tqdm(self.progress, total=len(plan), desc=desc, leave=False, unit="batch")
        try:
            for batch in plan:
                with self.autocast():
                    emo, sen, sft = self._forward(self._eval_net, batch.model_inputs(), batch.sentiment, batch.pack_index)
                lp_emo_l.append(F.log_softmax(emo.float(), -1))
                lp_sen_l.append(F.log_softmax(sen.float(), -1))
                nll, cm = self._shift_terms(sft, batch.shift_labels)
                nll_l.append(nll)
                cm_l.append(cm)
                bar.update(1)
        finally:
            bar.close()
        recs: List[Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        if not lp_emo_l:
            return recs, 0.0, np.zeros((2, 2), np.int64)
        store = plan.store
        lp_emo = torch.cat(lp_emo_l).cpu().numpy()
        lp_sen = torch.cat(lp_sen_l).cpu().numpy()
        sft_nll = 0.0
        for v in torch.stack(nll_l).tolist():   # the loader path's sum: float(batch sum), in batch order
            sft_nll += v
        sft_cm = torch.stack(cm_l).sum(0).cpu().numpy().astype(np.int64)
        s = 0
        for e in plan.entries:
            ye, ys = store.emotion_np[e.rows], store.sentiment_np[e.rows]
            b0 = s
            for j, L in zip(e.indices, e.lengths):
                recs.append((int(j), lp_emo[s:s + L], ye[s - b0:s - b0 + L], lp_sen[s:s + L], ys[s - b0:s - b0 + L]))
                s += L
        return recs, sft_nll, sft_cm

    def _eval_output(self, dataset, gathered: List[Mapping[str, Any]], epoch: int) -> EvalOutput:
        """Whole-split metrics from every rank's gathered records."""
        all_recs = sorted((r for g in gathered for r in g["recs"]), key=lambda r: r[0])
        C = self.config.num_emotions
        if not all_recs:
            return EvalOutput(metrics={"dialogues": 0, "utterances": 0})
        lp_emo = np.concatenate([r[1] for r in all_recs]).astype(np.float32)
        y_emo = np.concatenate([r[2] for r in all_recs]).astype(np.int64)
        lp_sen = np.concatenate([r[3] for r in all_recs]).astype(np.float32)
        y_sen = np.concatenate([r[4] for r in all_recs]).astype(np.int64)
        sft_cm = sum(g["sft_cm"] for g in gathered)
        n = y_emo.size
        parts = {
            "emo": torch.tensor(float(-lp_emo[np.arange(n), y_emo].astype(np.float64).sum() / n)),
            "sen": torch.tensor(float(-lp_sen[np.arange(n), y_sen].astype(np.float64).sum() / n)),
            "sft": torch.tensor(sum(g["sft_nll"] for g in gathered) / max(int(sft_cm.sum()), 1)),
        }
        total = combine_parts(self.loss_fn, {k: v.to(self.device) for k, v in parts.items()}, epoch)
        m: Dict[str, float] = {"loss": float(total), "loss_emo": float(parts["emo"]), "loss_sen": float(parts["sen"]),
                               "loss_sft": float(parts["sft"])}
        for task, (y, p) in {"emo": (y_emo, lp_emo.argmax(-1)), "sen": (y_sen, lp_sen.argmax(-1))}.items():
            r = M.acc_f1(y, p)
            m[f"{task}_acc"], m[f"{task}_f1"] = r["acc"], r["f1"]
        r = M.acc_f1_from_confusion(sft_cm)
        m["sft_acc"], m["sft_f1"] = r["acc"], r["f1"]
        m["dialogues"] = len(all_recs)
        m["utterances"] = int(n)
        ids = [dataset[r[0]].id for r in all_recs]
        return EvalOutput(metrics=m, ids=ids, lengths=[len(r[2]) for r in all_recs], emo_labels=y_emo,
                          emo_probs=np.exp(lp_emo), sen_labels=y_sen, sen_probs=np.exp(lp_sen),
                          sft_confusion=np.asarray(sft_cm, dtype=np.int64))

    # --- one epoch, selection -----------------------------------------------------------------

    def run_epoch(self) -> Tuple[Dict[str, Any], bool]:
        """Train one epoch, evaluate valid and test, update the selection. Returns the epoch's
        history record and whether it is the new best validation epoch."""
        e = self.epoch
        t0 = time.perf_counter()
        train = self.train_epoch(e)
        valid = self.evaluate(self.splits.valid, e, desc=f"epoch {e + 1} valid").metrics if len(self.splits.valid) else None
        test = self.evaluate(self.splits.test, e, desc=f"epoch {e + 1} test").metrics if len(self.splits.test) else None
        rec = {"epoch": e + 1, "train": train, "valid": valid, "test": test, "time_s": time.perf_counter() - t0,
               "lr": self.optimizer.param_groups[0]["lr"]}
        if self.loss_fn.awl is not None:
            rec["auto_loss_params"] = [float(v) for v in self.loss_fn.awl.params.detach().cpu()]
        self.history.append(rec)
        self.epoch = e + 1
        if valid is not None:
            improved = self.best is None or valid["emo_f1"] > self.best["valid"]["emo_f1"]
        else:
            improved = True  # no validation split: the last epoch is selected
        if improved:
            self.best = {"epoch": e + 1, "valid": valid, "test": test}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best_loss_state = {k: v.detach().cpu().clone() for k, v in self.loss_fn.state_dict().items()}
        return rec, improved

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint(self, train_meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The checkpoint of the current state (a collective under DDP: every rank must call
        it; the RNG states of all ranks are gathered)."""
        rng = self.ctx.all_gather_object(capture_rng_state(self.device))
        return {
            "kind": CHECKPOINT_KIND,
            "version": CHECKPOINT_VERSION,
            "graphsmile_version": __version__,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "config": self.config.to_dict(),
            "dataset": self.splits.dataset,
            "class_names": list(self.splits.class_names),
            "sentiment_names": list(self.splits.sentiment_names),
            "epoch": self.epoch,
            "sampler_epoch": self.epoch,
            "seed": self.seed,
            "world_size": self.ctx.world_size,
            "best": self.best,
            "history": self.history,
            "rng": rng,
            "train": dict(train_meta or {}),
        }

    def best_checkpoint(self, last: Mapping[str, Any]) -> Dict[str, Any]:
        """``best.pt``: ``last`` with the model weights of the best epoch (no optimizer)."""
        ck = {k: v for k, v in last.items() if k not in ("optimizer", "rng")}
        ck["model"] = self.best_state
        ck["loss"] = self.best_loss_state
        ck["epoch"] = self.best["epoch"] if self.best else self.epoch
        ck["trained_epochs"] = self.epoch
        return ck

    def load(self, last: Mapping[str, Any], best: Optional[Mapping[str, Any]] = None) -> None:
        """Restore a run from its ``last.pt`` (and ``best.pt``): weights, optimizer, loss
        weights, history, selection and this rank's RNG state."""
        check_checkpoint_pair(last, best, self.seed)
        self.model.load_state_dict(last["model"])
        load_optimizer_state(self.optimizer, last["optimizer"])
        self.loss_fn.load_state_dict(last.get("loss") or {})
        self.epoch = int(last["epoch"])
        self.history = list(last.get("history") or [])
        self.best = last.get("best")
        if best is not None:
            self.best_state = {k: v.detach().cpu().clone() for k, v in best["model"].items()}
            self.best_loss_state = {k: v.detach().cpu().clone() for k, v in (best.get("loss") or {}).items()}
        else:  # check_checkpoint_pair: the selected epoch is the last one
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best_loss_state = {k: v.detach().cpu().clone() for k, v in self.loss_fn.state_dict().items()}
        rngs = last.get("rng") or []
        if rngs:
            same_world = int(last.get("world_size", 1)) == self.ctx.world_size and len(rngs) == self.ctx.world_size
            restore_rng_state(rngs[self.ctx.rank] if same_world else rngs[0], self.device)
        self.sampler.set_epoch(int(last.get("sampler_epoch", self.epoch)))

    # --- the end -----------------------------------------------------------------------------

    def final_results(self) -> Dict[str, Any]:
        """Evaluate the selected (best validation) weights on valid and test; the reports."""
        if self.best_state is None:
            raise RuntimeError("no epoch has been completed")
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        current_loss = {k: v.detach().clone() for k, v in self.loss_fn.state_dict().items()}
        self.model.load_state_dict(self.best_state)
        if self.best_loss_state:
            self.loss_fn.load_state_dict(self.best_loss_state)
        best_epoch = self.best["epoch"]
        out: Dict[str, Any] = {}
        try:
            for split in ("valid", "test"):
                ds = getattr(self.splits, split)
                if len(ds) == 0:
                    continue
                ev = self.evaluate(ds, best_epoch - 1, desc=f"final {split}")
                names = list(self.splits.class_names)
                out[split] = {
                    "metrics": ev.metrics,
                    "report": M.report(ev.emo_labels, ev.emo_preds, names),
                    "report_dict": M.report_dict(ev.emo_labels, ev.emo_preds, names),
                    "confusion": M.confusion(ev.emo_labels, ev.emo_preds, len(names)),
                    "sentiment_report": M.report(ev.sen_labels, ev.sen_preds, list(self.splits.sentiment_names)),
                    "sentiment_confusion": M.confusion(ev.sen_labels, ev.sen_preds, 3),
                    "shift_confusion": ev.sft_confusion,
                }
        finally:
            self.model.load_state_dict(current)
            self.loss_fn.load_state_dict(current_loss)
        return out


# --- driving a run ------------------------------------------------------------------------


def _paper_protocol(history: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    tests = [(r["epoch"], r["test"]) for r in history if r.get("test")]
    if not tests:
        return {}
    ep, t = max(tests, key=lambda x: (x[1]["emo_f1"], -x[0]))
    return {"label": PAPER_PROTOCOL, "note": PAPER_PROTOCOL_NOTE, "epoch": ep,
            "test_emo_f1": t["emo_f1"], "test_emo_acc": t["emo_acc"]}


def fit(trainer: Trainer, out_dir, *, stop_after: Optional[int] = None, tensorboard: bool = False,
        train_meta: Optional[Mapping[str, Any]] = None, log: Callable[[str], None] = print,
        title: str = "") -> Optional[Dict[str, Any]]:
    """Train ``trainer`` up to ``config.epochs`` epochs, writing ``last.pt`` after every epoch
    and ``best.pt`` at every new best validation epoch into ``out_dir`` (rank 0), then the
    final reports: ``results.json``, ``classification_report.txt``, ``learning_curves.png``,
    ``confusion_matrix.png``, ``log.txt``. ``stop_after``: return after that many completed
    epochs (as an interruption would; continue with ``--resume``). Returns the results dict,
    or ``None`` when stopped early."""
    ctx = trainer.ctx
    out = Path(out_dir)
    cfg = trainer.config
    tb = TensorBoardLogger(out / "tensorboard", enabled=tensorboard and ctx.is_main)
    logfile = out / "log.txt"

    def say(line: str) -> None:
        if not ctx.is_main:
            return
        from tqdm.auto import tqdm

        if trainer.progress:
            tqdm.write(line)
        else:
            log(line)
        with open(logfile, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    bar = _tqdm(trainer.progress, total=cfg.epochs, initial=trainer.epoch, desc="epochs", unit="epoch")
    try:
        while trainer.epoch < cfg.epochs:
            if stop_after is not None and trainer.epoch >= stop_after:
                break
            rec, improved = trainer.run_epoch()
            ck = trainer.checkpoint(train_meta)
            if ctx.is_main:
                # best.pt first: a crash between the two writes then leaves a best.pt one epoch
                # ahead of last.pt, which the deterministic re-run of that epoch rewrites
                # identically (the other order could pair last.pt's record with stale weights)
                if improved:
                    atomic_save(trainer.best_checkpoint(ck), out / "best.pt")
                atomic_save(ck, out / "last.pt")
            ctx.barrier()
            say(epoch_line(rec, cfg.epochs, improved))
            tb.log_epoch(rec)
            bar.update(1)
    finally:
        bar.close()
        tb.close()
    if trainer.epoch < cfg.epochs:
        return None
    return finalize(trainer, out, train_meta=train_meta, log=say, title=title)


def finalize(trainer: Trainer, out_dir, *, train_meta: Optional[Mapping[str, Any]] = None,
             log: Callable[[str], None] = print, title: str = "") -> Dict[str, Any]:
    """Final evaluation with the selected weights, the reports and ``results.json``."""
    out = Path(out_dir)
    final = trainer.final_results()
    best = trainer.best or {}
    names = list(trainer.splits.class_names)
    res: Dict[str, Any] = {
        "kind": "graphsmile.results",
        "seed": trainer.seed,
        "dataset": trainer.splits.dataset,
        "selection": trainer.selection,
        "epochs_completed": trainer.epoch,
        "best_epoch": best.get("epoch"),
        "valid": (final.get("valid") or {}).get("metrics"),
        "test": (final.get("test") or {}).get("metrics"),
        "paper_protocol": _paper_protocol(trainer.history),
        "last_epoch": {"epoch": trainer.epoch, "valid": trainer.history[-1].get("valid"),
                       "test": trainer.history[-1].get("test")} if trainer.history else None,
        "class_names": names,
        "sentiment_names": list(trainer.splits.sentiment_names),
        "classification_report": {s: final[s]["report"] for s in final},
        "classification_report_dict": {s: final[s]["report_dict"] for s in final},
        "confusion_matrix": {s: final[s]["confusion"] for s in final},
        "sentiment_confusion_matrix": {s: final[s]["sentiment_confusion"] for s in final},
        "shift_confusion_matrix": {s: final[s]["shift_confusion"] for s in final},
        "history": trainer.history,
        "train_time_s": sum(r.get("time_s", 0.0) for r in trainer.history),
    }
    if trainer.ctx.is_main:
        parts = [f"selected epoch {res['best_epoch']} ({trainer.selection})"]
        if res["valid"]:
            parts.append(format_eval("valid", res["valid"]))
        if res["test"]:
            parts.append(format_eval("test ", res["test"]))
        pp = res["paper_protocol"]
        if pp:
            parts.append(f"{PAPER_PROTOCOL}: test emotion f1 {pp['test_emo_f1']:.2f} (acc {pp['test_emo_acc']:.2f}) "
                         f"at epoch {pp['epoch']}")
        text = []
        for split in ("test", "valid"):
            if split in final:
                text.append(f"== {split} (selected epoch {res['best_epoch']}): emotion ==\n{final[split]['report']}\n"
                            f"confusion matrix (rows true, columns predicted):\n"
                            f"{confusion_text(final[split]['confusion'], names)}\n\n"
                            f"== {split}: sentiment ==\n{final[split]['sentiment_report']}\n"
                            f"== {split}: sentiment shift (utterance pairs; rows true, columns predicted) ==\n"
                            f"{confusion_text(final[split]['shift_confusion'], ['same', 'shift'])}\n")
        (out / "classification_report.txt").write_text("\n".join(text), encoding="utf-8")
        try:
            plot_learning_curves(trainer.history, out / "learning_curves.png", res["best_epoch"], title)
            if "test" in final:
                plot_confusion(final["test"]["confusion"], names, out / "confusion_matrix.png",
                               f"{title} test, epoch {res['best_epoch']}".strip())
        except Exception as e:  # a plotting problem must not lose the results
            print(f"graphsmile: warning: plots not written ({type(e).__name__}: {e})", file=sys.stderr)
        res_file = dict(res)
        res_file["training"] = dict(train_meta or {})
        write_json(out / "results.json", res_file)
        for line in parts:
            log(line)
    trainer.ctx.barrier()
    return res


# --- graphsmile train ---------------------------------------------------------------------


@dataclass
class TrainOptions:
    """Options of ``graphsmile train`` that are not model/optimiser settings.

    Attributes:
        out: the run folder.
        data: the feature pickle; ``None``: synthesize a demo set into ``out``.
        seed: the (first) seed; ``seeds`` runs ``seed, seed+1, ...``.
        valid_from: ``train10``, ``validVid`` (MELD) or ``none``.
        dims: feature widths to expect: ``None`` (the dataset's), ``"infer"`` or 3 ints.
        device, amp, num_workers, max_train_batches, sync_bn, tensorboard, tf32: see the CLI help.
        data_on_device: keep the data on the training device (``None``: auto, on for CUDA when
            it fits; see :class:`Trainer`). Changes speed, not results; may change on resume.
        compile: ``torch.compile`` the model (off by default; see :class:`Trainer`).
        bucket_batches: training batches of similar length (see :class:`Trainer`); 0 or
            ``None``: plain random batches, as the original.
        stop_after: end this invocation after that many completed epochs (resumable).
        threads: CPU intra-op threads used (recorded: bitwise reproducibility on the CPU holds
            for a fixed thread count, so a resumed run reuses it).
        resume: continue the run in ``out``; overwrite: write into a folder holding a run.
        progress: tqdm bars (``None``: when stdout is a terminal).
        demo: what the synthetic demo changed (recorded in the results).
    """

    out: str
    data: Optional[str] = None
    seed: int = 0
    seeds: int = 1
    valid_from: str = "train10"
    dims: Any = None
    device: str = "auto"
    amp: str = "none"
    num_workers: int = 0
    max_train_batches: Optional[int] = None
    sync_bn: bool = False
    tensorboard: bool = False
    stop_after: Optional[int] = None
    resume: bool = False
    overwrite: bool = False
    progress: Optional[bool] = None
    demo: Optional[Dict[str, Any]] = None
    threads: Optional[int] = None
    data_on_device: Optional[bool] = None
    compile: bool = False
    bucket_batches: int = DEFAULT_BUCKET_BATCHES
    tf32: bool = False

    def meta(self) -> Dict[str, Any]:
        """The options recorded in ``run.json`` and checkpoints."""
        return {"data": self.data, "seed": self.seed, "seeds": self.seeds, "valid_from": self.valid_from,
                "dims": list(self.dims) if isinstance(self.dims, (list, tuple)) else self.dims,
                "amp": self.amp, "max_train_batches": self.max_train_batches, "sync_bn": self.sync_bn,
                "demo": self.demo, "threads": self.threads, "bucket_batches": self.bucket_batches, "tf32": self.tf32}


def run_markers(out: Path) -> List[str]:
    """The run files found in ``out`` (and its ``seed_*`` folders)."""
    found = [m for m in RUN_MARKERS if (out / m).exists()]
    if out.is_dir():
        for sub in sorted(out.glob("seed_*")):
            found += [f"{sub.name}/{m}" for m in RUN_MARKERS if (sub / m).exists()]
    return found


def seed_dirs(out: Path, seeds: Sequence[int]) -> List[Path]:
    """One seed: the run folder itself; several: ``seed_<s>`` subfolders."""
    return [out] if len(seeds) == 1 else [out / f"seed_{s}" for s in seeds]


# Config fields a resumed run may change: they change neither the math nor the data order
# (``backend`` and ``shift_loss`` pick implementations of the same loss; ``epochs`` extends or
# shortens the schedule, which the CLI warns about for loss_type="epoch").
RESUMABLE_CONFIG_CHANGES = ("epochs", "backend", "shift_loss")
# Training options (``TrainOptions.meta()`` plus the data fingerprint, as stored in every
# checkpoint's "train" record) that must match for a checkpoint to continue this run.
_RESUME_MUST_MATCH = ("valid_from", "dims", "amp", "max_train_batches", "sync_bn", "bucket_batches", "tf32")


def check_resumable(last: Mapping[str, Any], path: Path, config: GraphSmileConfig, world_size: int,
                    train_meta: Optional[Mapping[str, Any]] = None) -> None:
    """Raise :class:`CheckpointError` (naming ``path``) unless the checkpoint ``last`` continues
    a run with this ``config`` (up to ``RESUMABLE_CONFIG_CHANGES``), this number of processes
    and, when given, these training options and data (``train_meta``: the run's
    ``TrainOptions.meta()`` with the data fingerprint)."""
    mine = config.to_dict()
    diff = sorted(k for k in set(last["config"]) | set(mine)
                  if last["config"].get(k) != mine.get(k) and k not in RESUMABLE_CONFIG_CHANGES)
    if diff:
        raise CheckpointError(f"{path}: checkpoint config differs from the run's in {diff}")
    if int(last["epoch"]) > config.epochs:
        raise CheckpointError(f"{path} has {last['epoch']} completed epochs, more than --epochs {config.epochs}")
    ws = int(last.get("world_size", 1))
    if ws != world_size:
        raise CheckpointError(
            f"{path} was written by {ws} process(es), this run has {world_size}: resume with the same number "
            f"(torchrun --nproc_per_node {ws}), as the global batch (batch_size x processes) and each process's "
            "random stream depend on it")
    stored = last.get("train") or {}
    if train_meta is None or not stored:
        return
    fp_then = (stored.get("fingerprint") or {}).get("sha1")
    fp_now = (train_meta.get("fingerprint") or {}).get("sha1")
    if fp_then and fp_now and fp_then != fp_now:
        raise CheckpointError(f"{path} was trained on other data ({stored.get('data')}: dialogue ids or lengths "
                              f"differ from {train_meta.get('data')}); it does not belong to this run")
    for k in _RESUME_MUST_MATCH:
        if k in stored and k in train_meta and _jsonish(stored[k]) != _jsonish(train_meta[k]):
            raise CheckpointError(f"{path} was trained with {k} = {stored[k]!r}, this run has {train_meta[k]!r}; "
                                  "it does not belong to this run")


def check_checkpoint_pair(last: Mapping[str, Any], best: Optional[Mapping[str, Any]], seed: int) -> None:
    """Raise :class:`CheckpointError` unless ``last`` (``last.pt``) is of ``seed`` and ``best``
    (``best.pt``, or ``None`` when missing) belongs with it: it holds the epoch ``last``
    selected (or the one after, when a crash came between the two writes); without it the
    selected epoch must be ``last``'s own."""
    for ck in (last, best):
        if ck is not None and int(ck.get("seed", seed)) != seed:
            raise CheckpointError(f"{ck.get('path')}: checkpoint of seed {ck.get('seed')}, this run uses seed {seed}")
    rec_epoch = (last.get("best") or {}).get("epoch")
    if best is not None:
        if best.get("epoch") != rec_epoch and best.get("epoch") != int(last["epoch"]) + 1:
            raise CheckpointError(f"{best.get('path')}: holds epoch {best.get('epoch')}, but {last.get('path')} "
                                  f"selected epoch {rec_epoch}; the two files do not belong together")
    elif rec_epoch is None or rec_epoch != int(last["epoch"]):
        raise CheckpointError(f"{last.get('path')}: best.pt is missing next to last.pt; cannot resume the selection")


def _jsonish(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def resume_seed(trainer: Trainer, d: Path, train_meta: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """Load ``d/last.pt`` (and ``best.pt``) into ``trainer`` after :func:`check_resumable`;
    returns ``last`` or ``None`` when the folder has no checkpoint yet."""
    if not (d / "last.pt").exists():
        return None
    last = load_checkpoint(d / "last.pt", map_location=trainer.device)
    best = load_checkpoint(d / "best.pt", map_location="cpu") if (d / "best.pt").exists() else None
    check_resumable(last, d / "last.pt", trainer.config, trainer.ctx.world_size, train_meta)
    if best is not None:   # the selection's weights: of this run too, not only of the right epoch
        check_resumable(best, d / "best.pt", trainer.config, trainer.ctx.world_size, train_meta)
    trainer.load(last, best)
    return last


def run_training(config: GraphSmileConfig, splits: DatasetSplits, opts: TrainOptions, *, ctx: DistContext,
                 device: torch.device, header: Optional[Mapping[str, Any]] = None,
                 log: Callable[[str], None] = print,
                 on_resumable: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """Train ``opts.seeds`` seeds (resuming what ``opts.resume`` finds), then write the
    summary ``results.json`` (per seed and mean ± std over seeds). Returns it, with
    ``"status": "complete"`` or ``"stopped"`` (``--stop_after``). With ``opts.resume``, every
    seed's ``last.pt`` is checked (:func:`check_resumable`) before any training, and
    ``on_resumable`` (e.g. rewriting ``run.json`` with the changed settings) runs only after
    all of them passed."""
    out = Path(opts.out)
    if len(splits.train) == 0:
        raise ValueError(f"{splits.path}: the training split is empty")
    seeds = [opts.seed + i for i in range(opts.seeds)]
    dirs = seed_dirs(out, seeds)
    progress = (sys.stdout.isatty() if opts.progress is None else opts.progress) and ctx.is_main
    meta = dict(opts.meta())
    meta["fingerprint"] = data_fingerprint(splits)
    if opts.resume:
        for s, d in zip(seeds, dirs):
            if (d / "last.pt").exists():
                # metadata only (mmap): resume_seed reads the weights when the seed's turn comes
                last = load_checkpoint(d / "last.pt", mmap=True)
                check_resumable(last, d / "last.pt", config, ctx.world_size, dict(meta, seed=s))
                best = load_checkpoint(d / "best.pt", mmap=True) if (d / "best.pt").exists() else None
                if best is not None:
                    check_resumable(best, d / "best.pt", config, ctx.world_size, dict(meta, seed=s))
                check_checkpoint_pair(last, best, s)
                del last, best
    if on_resumable is not None:
        on_resumable()
    per_seed: List[Dict[str, Any]] = []
    t0 = time.perf_counter()
    for s, d in zip(seeds, dirs):
        if ctx.is_main:
            d.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        trainer = Trainer(config, splits, seed=s, ctx=ctx, device=device, amp=opts.amp, num_workers=opts.num_workers,
                          max_train_batches=opts.max_train_batches, sync_bn=opts.sync_bn, progress=progress,
                          data_on_device=opts.data_on_device, compile=opts.compile,
                          bucket_batches=opts.bucket_batches or None, tf32=opts.tf32)
        if opts.resume:
            last = resume_seed(trainer, d, dict(meta, seed=s))
            if last is not None and ctx.is_main:
                log(f"resuming seed {s} from {d / 'last.pt'} (epoch {trainer.epoch}/{config.epochs} done)")
        if len(seeds) > 1 and ctx.is_main:
            log(f"--- seed {s} ({seeds.index(s) + 1}/{len(seeds)}) -> {d}")
        title = f"{splits.dataset} seed {s}" + (" (SYNTHETIC data)" if opts.demo else "")
        meta_s = dict(meta, seed=s)
        done = None
        if trainer.epoch >= config.epochs and (d / "results.json").exists():
            import json

            done = json.loads((d / "results.json").read_text(encoding="utf-8"))
            # a results.json of fewer epochs is an earlier completion's (the run was extended with
            # --epochs and stopped after its last epoch but before its reports): report anew
            if done.get("epochs_completed") != trainer.epoch:
                done = None
        if done is not None:
            res = done
        elif trainer.epoch >= config.epochs:
            res = finalize(trainer, d, train_meta=meta_s, log=log, title=title)
        else:
            res = fit(trainer, d, stop_after=opts.stop_after, tensorboard=opts.tensorboard, train_meta=meta_s, log=log,
                      title=title)
        if res is None:
            if ctx.is_main:
                log(f"stopped after epoch {trainer.epoch} of {config.epochs} (--stop_after {opts.stop_after}); "
                    f"continue with: graphsmile train --resume {out}")
            return {"status": "stopped", "epoch": trainer.epoch, "seed": s}
        res = {k: v for k, v in res.items() if k not in ("training",)}
        res["dir"] = str(d)
        per_seed.append(res)
        del trainer

    summary = M.summarise_seeds(per_seed)
    results: Dict[str, Any] = dict(header or {})
    results.update({
        "kind": "graphsmile.results",
        "version": 1,
        "status": "complete",
        "dataset": splits.dataset,
        "config": config.to_dict(),
        "training": meta,
        "world_size": ctx.world_size,
        "device": str(device),
        "selection": SELECTION if len(splits.valid) else SELECTION_NO_VALID,
        "paper_protocol_note": f"{PAPER_PROTOCOL}: {PAPER_PROTOCOL_NOTE}",
        "metrics_unit": "percent (accuracy, weighted F1)",
        "seeds": seeds,
        "per_seed": [{k: r.get(k) for k in ("seed", "dir", "best_epoch", "epochs_completed", "valid", "test",
                                             "paper_protocol", "train_time_s")} for r in per_seed],
        "summary": summary,
        "wall_time_s": time.perf_counter() - t0,
    })
    if len(per_seed) == 1:
        # one seed: the full per-seed results at the top level too
        for k, v in per_seed[0].items():
            if k not in results:
                results[k] = v
    if ctx.is_main:
        write_json(out / "results.json", results)
        if len(seeds) > 1:
            lines = [f"over {len(seeds)} seeds {seeds} (mean ± std; selection: {results['selection']}):"]
            for key, label in (("test_emo_acc", "test emotion accuracy"), ("test_emo_f1", "test emotion weighted F1"),
                               ("valid_emo_f1", "valid emotion weighted F1"),
                               ("paper_protocol_test_emo_f1", f"{PAPER_PROTOCOL}: test emotion F1")):
                if key in summary:
                    lines.append(f"  {label}: {M.fmt_pm(summary[key])}")
            for line in lines:
                log(line)
    ctx.barrier()
    results["status"] = "complete"
    return results
