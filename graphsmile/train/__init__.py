"""Training, evaluation, checkpoints and reports for GraphSmile (``graphsmile train`` and
friends; see :mod:`graphsmile.cli`).

- :mod:`.trainer` -- :class:`Trainer` (one seed's run, DDP-aware), :func:`fit`,
  :func:`run_training` (several seeds, output folder, resume);
- :mod:`.checkpoint` -- the checkpoint format, atomic writes, RNG state, original state dicts;
- :mod:`.distributed` -- torchrun detection and the process group;
- :mod:`.metrics` -- accuracy / weighted F1, reports, mean ± std over seeds;
- :mod:`.reports` -- epoch lines, ``results.json``, plots, TensorBoard.
"""
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .distributed import DistContext, init_distributed
from .trainer import (
    PAPER_PROTOCOL,
    SELECTION,
    EvalOutput,
    Trainer,
    TrainOptions,
    combine_parts,
    fit,
    run_training,
    seed_everything,
)

__all__ = [
    "CheckpointError",
    "DistContext",
    "EvalOutput",
    "PAPER_PROTOCOL",
    "SELECTION",
    "Trainer",
    "TrainOptions",
    "combine_parts",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "model_from_checkpoint",
    "run_training",
    "seed_everything",
]
