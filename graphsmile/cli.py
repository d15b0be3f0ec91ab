"""The ``graphsmile`` command (also ``python -m graphsmile``).

Subcommands::

    graphsmile train     train GraphSmile (paper presets, every setting overridable), one
                         process or torchrun DDP; checkpoints, resume, reports, several seeds
    graphsmile evaluate  metrics of a checkpoint on a split of a feature file
    graphsmile predict   per-utterance predictions of a checkpoint (CSV or JSON)
    graphsmile synth     write a synthetic feature file in a dataset's exact layout
    graphsmile inspect   summarise a feature file (layout, splits, lengths, dims, labels)
    graphsmile convert-checkpoint   an original GraphSmile state dict -> a graphsmile checkpoint
    graphsmile bench     run the benchmarks of the source tree (bench/ops.py, bench/model.py)

Quick start (no data needed; trains on a SYNTHETIC IEMOCAP-shaped set, a few minutes on a CPU)::

    graphsmile train --dataset IEMOCAP --out runs/demo

Errors (missing files, layout mismatches, bad option values, an output folder that holds
another run, ...) are reported as one line ``graphsmile: error: ...`` on stderr with a
non-zero exit status; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import pickle
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "build_parser", "CLIError", "DEMO_SETTINGS"]

PROG = "graphsmile"

#: What the synthetic demo (``graphsmile train`` without ``--data``) changes from the dataset's
#: paper preset, unless given on the command line (the architecture otherwise stays the
#: preset's: 7 layers, window 17/17, shift window 19, batch 16, dropout 0.2 for IEMOCAP).
#: Chosen so that the IEMOCAP demo finishes in a few minutes on 2 CPU cores with test metrics
#: well above chance: the preset's hidden size 512 costs ~6x more per epoch and its lr 1e-4
#: needs many of its 120 epochs (about half an hour or more on such a machine).
#: ``--demo_preset`` keeps the full preset.
DEMO_SETTINGS: Dict[str, Any] = {"hidden_dim": 128, "epochs": 20, "lr": 5e-4}
#: Seed of the synthetic demo data (fixed: ``--seed`` varies the training only).
DEMO_DATA_SEED = 0
#: Size of the synthetic demo data relative to the real dataset (1 = real dialogue counts).
DEMO_SCALE = 1.0


class CLIError(Exception):
    """A user-facing error: printed as ``graphsmile: error: <message>``, exit status 1."""


class _UsageError(Exception):
    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error becomes one line (raised, printed by :func:`main`)."""

    def error(self, message):  # noqa: D401
        raise _UsageError(message, self.prog)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=min(110, max(80, _term_width())))


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


# --- argument parsing ---------------------------------------------------------------------


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= low, else the error "expected <what>, got '...'"."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")
# Seeds feed random, numpy (< 2**32) and torch; seed + K - 1 must stay below 2**32 for --seeds K.
_SEED_MAX = 2**31 - 1


def _seed(s: str) -> int:
    """An argparse type: a seed, an integer from 0 to 2**31 - 1."""
    try:
        v = int(s)
    except ValueError:
        v = -1
    if not 0 <= v <= _SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {_SEED_MAX}, got {s!r}")
    return v


def _finite_float(low: float, what: str):
    """An argparse type: a finite float >= low, else the error "expected <what>, got '...'"."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        if not (math.isfinite(v) and v >= low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v

    return parse


def _dims_arg(values: Optional[List[str]]):
    """``--dims``: ``None``, ``"infer"`` or 3 positive ints."""
    if values is None:
        return None
    if len(values) == 1 and values[0].lower() in ("infer", "auto"):
        return "infer"
    if len(values) == 1 and values[0].lower() == "dataset":
        return None
    try:
        dims = tuple(int(v) for v in values)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise CLIError(f"--dims expects 'infer' or three positive ints TEXT VISUAL AUDIO, got {' '.join(values)}")
    return dims


THREADS_HELP = ("CPU threads for torch's intra-op parallelism: a number, or auto (default: all cores, fewer when the "
                "1-minute load average shows other busy processes, because PyTorch's OpenMP threads slow down many-fold "
                "on oversubscribed cores; OMP_NUM_THREADS, e.g. from torchrun, is respected)")


def _threads_arg(s: str):
    if s == "auto":
        return s
    return _positive_int(s)


def configure_threads(spec, device) -> str:
    """Apply ``--threads`` (CPU runs only); returns a short description for the log."""
    import torch

    if device.type != "cpu":
        return ""
    if spec != "auto":
        torch.set_num_threads(int(spec))
        return _nthreads(int(spec))
    if os.environ.get("OMP_NUM_THREADS"):
        return f"{_nthreads(torch.get_num_threads())} (OMP_NUM_THREADS)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    n = max(1, min(torch.get_num_threads(), cores - int(load + 0.5)))
    if n < torch.get_num_threads():
        torch.set_num_threads(n)
        return f"{_nthreads(n)}: other processes are busy (load average {load:.1f} on {cores} cores)"
    return _nthreads(torch.get_num_threads())


def _nthreads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")


def _add_config_flags(p: argparse.ArgumentParser, training: bool = True) -> None:
    """The GraphSmile settings, under the original ``run.py``'s flag names; default: the
    dataset's preset (SPEC 10)."""
    from .config import EDGE_WEIGHT_MODES, LOSS_TYPES, SHIFT_LOSSES, TEXTF_MODES
    from .ops import BACKENDS

    g = p.add_argument_group("model (default: the --dataset preset, arXiv 2407.21536 Table III)")
    g.add_argument("--textf_mode", choices=list(TEXTF_MODES), help="text feature sets used (preset: textf0)")
    g.add_argument("--hidden_dim", type=_positive_int, metavar="H", help="hidden width (IEMOCAP 512, IEMOCAP4 256, MELD 384, CMUMOSEI7 256)")
    g.add_argument("--win", type=int, nargs=2, metavar=("PAST", "FUTURE"), help="cross-modal edge window, -1 = whole dialogue (IEMOCAP 17 17)")
    g.add_argument("--heter_n_layers", type=int, nargs=3, metavar=("TV", "TA", "VA"), help="graph layers of the text-visual, text-audio, visual-audio modules (IEMOCAP 7 7 7)")
    g.add_argument("--drop", type=float, metavar="P", help="dropout (preset 0.2; CMUMOSEI7 0.4)")
    g.add_argument("--shift_win", type=int, metavar="W", help="sentiment-shift chunk size, -1 = whole dialogue (IEMOCAP 19)")
    g.add_argument("--edge_weights", choices=list(EDGE_WEIGHT_MODES),
                   help="per_edge: the original's position-in-batch weight vector; relative: one weight per modality pair and offset (ours)")
    g.add_argument("--edge_capacity", type=_positive_int, metavar="E", help="length of the per_edge weight vector (500000, as the original)")
    g.add_argument("--backend", choices=list(BACKENDS), help="graph-op backend (auto: fastest for the device)")
    g.add_argument("--bn_include_padding", action=argparse.BooleanOptionalAction, default=None,
                   help="training-mode text BatchNorm statistics include the padded rows, as the original (default); "
                        "--no-bn_include_padding: real utterances only (ours: a dialogue's output no longer depends on "
                        "its batch's padding)")
    if not training:
        return
    g = p.add_argument_group("optimisation (default: the --dataset preset)")
    g.add_argument("--lr", type=float, help="AdamW learning rate (IEMOCAP 1e-4, IEMOCAP4 3e-4, MELD 7e-5, CMUMOSEI7 8e-5)")
    g.add_argument("--l2", type=float, help="AdamW weight decay (1e-4, the code's default; the paper states 1e-3)")
    g.add_argument("--batch_size", type=_positive_int, metavar="B",
                   help="dialogues per batch PER PROCESS; under torchrun the global batch is B x WORLD_SIZE (preset 16; CMUMOSEI7 32)")
    g.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (IEMOCAP/IEMOCAP4 120, MELD 50, CMUMOSEI7 60)")
    g.add_argument("--loss_type", choices=list(LOSS_TYPES),
                   help="loss combination: emo_sen_sft = l0*emo + l1*sen + l2*shift (preset), ..., epoch (emotion weight grows "
                        "with the epoch), auto (learned uncertainty weights)")
    g.add_argument("--lambd", type=float, nargs=3, metavar=("EMO", "SEN", "SHIFT"), help="loss weights (IEMOCAP 1.0 1.0 0.7)")
    g.add_argument("--shift_loss", choices=list(SHIFT_LOSSES),
                   help="sentiment-shift loss: fused (default; head + NLL in one pass, no [P, 2] logits) or logits (the original's "
                        "[P, 2] logits then NLL; O(P) memory, e.g. 4e8 pairs for one 20,000-utterance dialogue at --shift_win -1)")


CONFIG_FLAGS = ("textf_mode", "hidden_dim", "win", "heter_n_layers", "drop", "shift_win", "edge_weights", "edge_capacity",
                "backend", "bn_include_padding", "lr", "l2", "batch_size", "epochs", "loss_type", "lambd", "shift_loss")


def _explicit_config(args) -> Dict[str, Any]:
    out = {}
    for k in CONFIG_FLAGS:
        v = getattr(args, k, None)
        if v is not None:
            out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _dataset_choice(s: str) -> str:
    from .data import dataset_format

    try:
        return dataset_format(s).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


ROOT_EPILOG = """\
quick start (no data needed; a SYNTHETIC IEMOCAP-shaped set, a few minutes on a CPU):
  graphsmile train --dataset IEMOCAP --out runs/demo
then:
  graphsmile evaluate --checkpoint runs/demo/best.pt --data runs/demo/synthetic_IEMOCAP.pkl
  graphsmile predict --checkpoint runs/demo/best.pt --data runs/demo/synthetic_IEMOCAP.pkl --format csv
  graphsmile inspect runs/demo/synthetic_IEMOCAP.pkl --dataset IEMOCAP

errors are one line 'graphsmile: error: ...' on stderr (exit status 1; 2 for usage errors);
--debug shows the traceback.
"""

TRAIN_EPILOG = """\
examples:
  graphsmile train --dataset IEMOCAP --out runs/demo            # SYNTHETIC demo data, a few minutes on a CPU
  graphsmile train --dataset IEMOCAP --data features/IEMOCAP_features.pkl --out runs/iemocap
  graphsmile train --dataset MELD --data meld.pkl --out runs/meld --seeds 5 --valid_from validVid
  graphsmile train --resume runs/iemocap                        # continue an interrupted run
  torchrun --standalone --nproc_per_node 4 -m graphsmile train --dataset IEMOCAP --data f.pkl --out runs/ddp

protocol: the selected epoch is the one with the best VALIDATION weighted F1 (emotion); test
metrics are reported at that epoch. The original's best-test-over-epochs figure is reported as
"paper protocol (selected on test)" only. Validation = the first 10% of trainVid (--valid_from).

reproducibility: everything is seeded and the batches of epoch e depend only on (seed, e); on
the CPU a run is bitwise reproducible for a given seed and thread count, and --resume continues
an interrupted run to the same result as an uninterrupted one (it reuses the run's threads).

distributed: under torchrun each process trains on --batch_size dialogues per step, so the
global batch is batch_size x WORLD_SIZE (the learning rate is not rescaled); gradients equal
those of one process on that global batch. NCCL on GPUs (cuda:LOCAL_RANK), gloo on CPUs.

files in --out: run.json, last.pt (every epoch), best.pt (best validation epoch), results.json,
classification_report.txt, learning_curves.png, confusion_matrix.png, log.txt; with --seeds K,
one seed_<s>/ folder per seed and a results.json with mean ± std over seeds.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``graphsmile`` argument parser."""
    from . import __version__
    from .config import DATASETS

    ds_help = f"dataset layout and preset: {', '.join(DATASETS)}"
    root = _Parser(prog=PROG, formatter_class=_Formatter,
                   description="GraphSmile (TPAMI 2025) for multimodal emotion recognition in conversation: training, "
                               "evaluation and tools. 'graphsmile COMMAND --help' describes each command.",
                   epilog=ROOT_EPILOG)
    root.add_argument("--version", action="version", version=f"graphsmile {__version__}")
    root.add_argument("--debug", action="store_true", default=False, help="show the full traceback of an error")
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # train
    p = sub.add_parser("train", help="train GraphSmile (presets, DDP, checkpoints, resume, reports)", formatter_class=_Formatter,
                       description="Train GraphSmile on a feature pickle (or, without --data, on a SYNTHETIC demo set).",
                       epilog=TRAIN_EPILOG)
    g = p.add_argument_group("data and output")
    g.add_argument("--dataset", type=_dataset_choice, metavar="NAME", help=ds_help + " (required unless --resume)")
    g.add_argument("--data", metavar="FILE",
                   help="feature pickle; omitted: a SYNTHETIC set in the dataset's layout is generated into "
                        "OUT/synthetic_<DATASET>.pkl (demo settings, see --demo_preset)")
    g.add_argument("--out", metavar="DIR", help="run folder (required unless --resume)")
    g.add_argument("--valid_from", choices=["train10", "validVid", "none"],
                   help="validation split: train10 = first 10%% of trainVid (default), validVid = MELD's dev set, "
                        "none = no validation (the last epoch is selected)")
    g.add_argument("--dims", nargs="+", metavar="D",
                   help="feature widths to expect: 'dataset' (default: the real files' widths), 'infer' (from the file), "
                        "or TEXT VISUAL AUDIO")
    g.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR (same settings; only --epochs, "
                                                   "--backend, --shift_loss may change)")
    g.add_argument("--overwrite", action="store_true", help="train into an --out folder that holds another run (its run.json, "
                                                            "results.json, last.pt and best.pt are deleted first)")
    g.add_argument("--demo_preset", action="store_true",
                   help=f"without --data: keep the full preset instead of the demo settings {DEMO_SETTINGS}")
    _add_config_flags(p)
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=_seed, help="random seed (default 0)")
    g.add_argument("--seeds", type=_positive_int, metavar="K", help="train K seeds (seed, seed+1, ...) and report mean ± std")
    g.add_argument("--device", metavar="DEV", help="auto (default: cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--amp", choices=["none", "bf16"], help="mixed precision: bf16 autocast (meant for CUDA); default none")
    g.add_argument("--tf32", action="store_true",
                   help="fp32 matrix products on tensor cores in TF32 (CUDA, compute capability 8.0+; faster, 10-bit "
                        "mantissa products). Default: full fp32 products, as torch and the original")
    g.add_argument("--threads", type=_threads_arg, default="auto", metavar="N", help=THREADS_HELP)
    g.add_argument("--num_workers", type=_nonneg_int, metavar="W", help="DataLoader workers (default 0)")
    g.add_argument("--data_on_device", choices=["auto", "on", "off"], default="auto",
                   help="keep the data on the training device and gather batches there, with no host sync inside an "
                        "epoch (auto: on for CUDA when the data takes at most a quarter of the free memory; "
                        "off: the DataLoader path). Same results either way")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (experimental; recompiles for new batch shapes)")
    g.add_argument("--max_train_batches", type=_positive_int, metavar="N", help="at most N training batches per epoch (quick runs)")
    g.add_argument("--bucket_batches", type=_nonneg_int, metavar="K",
                   help="training batches of similar length: each epoch's shuffled dialogues are sorted by length in "
                        "chunks of K batches (default 50: less padding); 0: plain random batches, as the original")
    g.add_argument("--stop_after", type=_positive_int, metavar="N",
                   help="end this invocation after N completed epochs, as an interruption would (continue with --resume)")
    g.add_argument("--tensorboard", action="store_true", help="log scalars to OUT/tensorboard (if TensorBoard is installed)")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (DDP on CUDA only)")
    g.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="tqdm progress bars (auto: when stdout is a terminal)")
    _add_debug(p)
    p.set_defaults(func=cmd_train)

    # evaluate / predict
    for name in ("evaluate", "predict"):
        if name == "evaluate":
            p = sub.add_parser(name, help="metrics of a checkpoint on a split", formatter_class=_Formatter,
                               description="Evaluate a checkpoint (best.pt / last.pt / converted) on a split of a feature file: "
                                           "loss, accuracy and weighted F1 of emotion, sentiment and shift; classification "
                                           "report and confusion matrix.")
        else:
            p = sub.add_parser(name, help="per-utterance predictions of a checkpoint (CSV/JSON)", formatter_class=_Formatter,
                               description="Write per-utterance predictions of a checkpoint: dialogue id, utterance index, "
                                           "transcript, predicted emotion and its probabilities, sentiment, and the stored labels.")
        p.add_argument("--checkpoint", required=True, metavar="FILE", help="a graphsmile checkpoint, e.g. runs/x/best.pt")
        p.add_argument("--data", required=True, metavar="FILE", help="feature pickle in the checkpoint's dataset layout")
        p.add_argument("--dataset", type=_dataset_choice, metavar="NAME", help="must match the checkpoint's (default: the checkpoint's)")
        p.add_argument("--split", choices=["test", "valid", "train", "all"], default="test", help="which split (default test)")
        p.add_argument("--valid_from", choices=["train10", "validVid", "none"], help="validation split as in training (default: the run's)")
        p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N")
        p.add_argument("--batch_size", type=_positive_int, metavar="B", help="dialogues per batch (default: the checkpoint's)")
        from .ops import BACKENDS

        p.add_argument("--backend", choices=list(BACKENDS), help="graph-op backend (default: the checkpoint's)")
        p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast")
        p.add_argument("--tf32", action="store_true", help="fp32 matrix products in TF32 (CUDA, compute capability 8.0+)")
        p.add_argument("--threads", type=_threads_arg, default="auto", metavar="N", help=THREADS_HELP)
        if name == "evaluate":
            p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
            p.set_defaults(func=cmd_evaluate)
        else:
            p.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default csv)")
            p.add_argument("--output", metavar="FILE",
                           help="output file, '-' for stdout (default: predictions_<split>.<format> next to the checkpoint)")
            p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
            p.set_defaults(func=cmd_predict)
        _add_debug(p)

    # synth
    p = sub.add_parser("synth", help="write a synthetic feature file (exact dataset layout, planted signal)",
                       formatter_class=_Formatter,
                       description="Write a synthetic feature pickle in a dataset's exact layout, with realistic sizes and a "
                                   "learnable planted signal (graphsmile.data.synthesize).")
    p.add_argument("--dataset", type=_dataset_choice, required=True, metavar="NAME", help=ds_help)
    p.add_argument("--out", required=True, metavar="FILE", help="output pickle")
    p.add_argument("--seed", type=_seed, default=0, help="seed (same seed, same bytes)")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the real dialogue counts (default 1)")
    p.add_argument("--dims", type=_positive_int, nargs=3, metavar=("TEXT", "VISUAL", "AUDIO"),
                   help="feature widths (default: the real ones; others need --dims infer when training)")
    p.add_argument("--length", type=_positive_int, help="make every dialogue this long")
    p.add_argument("--min_len", type=_positive_int, help="shortest dialogue")
    p.add_argument("--max_len", type=_positive_int, help="longest dialogue")
    p.add_argument("--mean_len", type=_finite_float(1.0, "a number >= 1"), help="mean dialogue length")
    p.add_argument("--n_dialogues", type=_positive_int, nargs="+", metavar="N",
                   help="dialogues per split: TRAIN TEST (MELD: TRAIN DEV TEST); overrides --scale")
    p.add_argument("--signal", type=_finite_float(0.0, "a number >= 0"), default=1.0,
                   help="strength of the planted signal (0 = pure noise)")
    p.add_argument("--meld_valid_vid", action="store_true", help="MELD: write the dev ids as the 14th element (the common file has None)")
    p.add_argument("--protocol", type=int, default=4, help="pickle protocol (2 for Python 2 readers)")
    p.add_argument("--py2_strings", action="store_true", help="Python 2 byte strings, as the real files (slow; small files)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _add_debug(p)
    p.set_defaults(func=cmd_synth)

    # inspect
    p = sub.add_parser("inspect", help="summarise a feature file", formatter_class=_Formatter,
                       description="Summarise a feature pickle: its tuple layout, dialogues and utterances per split (as "
                                   "training uses them), length statistics, feature widths, label histograms and the "
                                   "first transcript.")
    p.add_argument("file", metavar="FILE", help="feature pickle")
    p.add_argument("--dataset", type=_dataset_choice, required=True, metavar="NAME", help=ds_help)
    p.add_argument("--valid_from", choices=["train10", "validVid", "none"], default="train10", help="validation split (default train10)")
    p.add_argument("--dims", nargs="+", metavar="D", default=["infer"],
                   help="expected widths: 'infer' (default), 'dataset' or TEXT VISUAL AUDIO")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_debug(p)
    p.set_defaults(func=cmd_inspect)

    # convert-checkpoint
    p = sub.add_parser("convert-checkpoint", help="original GraphSmile state dict -> graphsmile checkpoint",
                       formatter_class=_Formatter,
                       description="Convert a state dict saved by the original GraphSmile (.pt/.pth; plain or DDP 'module.' "
                                   "names) into a graphsmile checkpoint usable by evaluate/predict. Hidden size, layers, "
                                   "widths, edge capacity and text mode (concat) are read from the weights' shapes; the "
                                   "windows, shift window and dropout come from the --dataset preset unless given.")
    p.add_argument("input", metavar="IN", help="original state dict (.pt/.pth)")
    p.add_argument("output", metavar="OUT", help="graphsmile checkpoint to write")
    p.add_argument("--dataset", type=_dataset_choice, required=True, metavar="NAME", help=ds_help)
    _add_config_flags(p, training=False)
    p.add_argument("--trust_pickle", action="store_true",
                   help="allow a file holding pickled objects (e.g. a whole model); unpickling runs code from the file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    _add_debug(p)
    p.set_defaults(func=cmd_convert)

    # bench
    p = sub.add_parser("bench", help="run the benchmarks of the source tree", formatter_class=_Formatter,
                       description="Run bench/ops.py and/or bench/model.py from the graphsmile source tree (they are not "
                                   "installed with the package). Arguments after the target go to the script.")
    p.add_argument("target", nargs="?", choices=["ops", "model", "all"], default="all", help="which benchmark (default all)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark script")
    _add_debug(p)
    p.set_defaults(func=cmd_bench)
    return root


# --- helpers ------------------------------------------------------------------------------


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _launch_ranks() -> Tuple[int, int]:
    """``(RANK, LOCAL_RANK)`` as torchrun sets them (:func:`~graphsmile.train.distributed.torchrun_env`);
    ``(0, 0)`` outside torchrun or when its variables are inconsistent (this runs while reporting
    an error: it must not raise)."""
    if "WORLD_SIZE" not in os.environ:   # no torchrun: no need to import torch to print an error
        return 0, 0
    from .train.distributed import torchrun_env

    try:
        env = torchrun_env()
    except ValueError:
        return 0, 0
    return (env[1], env[2]) if env else (0, 0)


def _report(message: str, same_on_every_rank: bool, tb: bool = False) -> None:
    """Print an error line (after the traceback, with ``tb``) once, not once per torchrun
    process: one that every process meets alike (bad arguments, a missing file, a refused run
    folder, a loss the ranks agreed on) only by the first process of each node; any other by
    every process, labelled with its rank beyond rank 0."""
    rank, local_rank = _launch_ranks()
    if same_on_every_rank and local_rank != 0:
        return
    if tb:
        traceback.print_exc()
    _err(message.replace(f"{PROG}: error: ", f"{PROG}: error (rank {rank}): ", 1) if rank else message)


def _load_splits(path, dataset: str, valid_from: str = "train10", dims=None):
    from .data import load_dataset

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"feature file not found: {p}")
    if p.is_file() and not os.access(p, os.R_OK):
        raise CLIError(f"feature file not readable: {p}")
    return load_dataset(p, dataset, valid_from=valid_from, dims=dims)


def _config_for(dataset: str, explicit: Dict[str, Any]) -> "Any":
    from .config import GraphSmileConfig

    try:
        return GraphSmileConfig.preset(dataset, **explicit)
    except ValueError as e:   # a bad option value: the same on every process of a torchrun
        raise CLIError(str(e)) from None


def _with_dims(config, dims):
    from .config import DATASET_DIMS

    dims = tuple(int(d) for d in dims)
    if dims == tuple(DATASET_DIMS[config.dataset]):
        return config.replace(dim_t=None, dim_v=None, dim_a=None)
    return config.replace(dim_t=dims[0], dim_v=dims[1], dim_a=dims[2])


# --- train --------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from .config import GraphSmileConfig
    from .train.checkpoint import atomic_write_text
    from .train.distributed import init_distributed
    from .train.reports import to_jsonable
    from .train.trainer import DEFAULT_BUCKET_BATCHES, RESUMABLE_CONFIG_CHANGES, TrainOptions, run_markers, run_training

    explicit = _explicit_config(args)
    dims = _dims_arg(args.dims)
    progress = {"auto": None, "always": True, "never": False}[args.progress]
    data_on_device = {"auto": None, "on": True, "off": False}[args.data_on_device]

    # --- where, and which settings --------------------------------------------------------
    if args.resume:
        out = Path(args.resume)
        if args.out and Path(args.out).resolve() != out.resolve():
            raise CLIError(f"--out {args.out} and --resume {args.resume} name different folders; give only --resume")
        if args.overwrite:
            raise CLIError("--resume and --overwrite exclude each other")
        run_file = out / "run.json"
        if not out.is_dir():
            raise FileNotFoundError(f"--resume: run folder not found: {out}")
        if not run_file.exists():
            raise CLIError(f"--resume: {out} holds no run to resume (no run.json)")
        try:
            run = json.loads(run_file.read_text(encoding="utf-8"))
            config = GraphSmileConfig.from_dict(run["config"])
            meta = run["training"]
            missing = [k for k in ("seed", "seeds", "valid_from") if k not in meta]   # TrainOptions needs them
            if missing:
                raise ValueError(f"no {', '.join(missing)} in its 'training' entry")
        except (ValueError, KeyError, TypeError) as e:
            raise CLIError(f"--resume: {run_file} is not a valid run description ({e})") from None
        if args.dataset and args.dataset != config.dataset:
            raise CLIError(f"--resume: the run in {out} trains {config.dataset}, not {args.dataset}")
        changed = {}
        for k, v in explicit.items():
            stored = getattr(config, k)
            if v != stored:
                if k not in RESUMABLE_CONFIG_CHANGES:
                    raise CLIError(f"--resume: cannot change --{k} of a run ({k} = {stored!r} in {out}); "
                                   f"only {', '.join('--' + c for c in RESUMABLE_CONFIG_CHANGES)} may change")
                changed[k] = v
        for flag, key in (("seed", "seed"), ("seeds", "seeds"), ("valid_from", "valid_from"), ("amp", "amp"),
                          ("max_train_batches", "max_train_batches"), ("bucket_batches", "bucket_batches")):
            v = getattr(args, flag)
            # runs from before --bucket_batches existed used its default
            if v is not None and v != meta.get(key, DEFAULT_BUCKET_BATCHES if key == "bucket_batches" else None):
                raise CLIError(f"--resume: cannot change --{flag} of a run ({key} = {meta.get(key)!r} in {out})")
        if args.sync_bn and not meta.get("sync_bn"):
            raise CLIError(f"--resume: cannot change --sync_bn of a run (sync_bn = False in {out})")
        if args.tf32 and not meta.get("tf32"):
            raise CLIError(f"--resume: cannot change --tf32 of a run (tf32 = False in {out})")
        if dims is not None or args.dims is not None:
            stored_dims = tuple(meta["dims"]) if isinstance(meta.get("dims"), list) else meta.get("dims")
            if dims != stored_dims:
                raise CLIError(f"--resume: cannot change --dims of a run (dims = {stored_dims!r} in {out})")
        if changed.get("epochs") is not None and config.loss_type == "epoch":
            _err("graphsmile: warning: changing --epochs of a loss_type='epoch' run changes its loss schedule")
        config = config.replace(**changed) if changed else config
        data = str(Path(args.data).resolve()) if args.data else meta.get("data")   # absolute in run.json
        demo = meta.get("demo")
        opts = TrainOptions(out=str(out), data=data, seed=meta["seed"], seeds=meta["seeds"], valid_from=meta["valid_from"],
                            dims=tuple(meta["dims"]) if isinstance(meta.get("dims"), list) else meta.get("dims"),
                            device=args.device or "auto", amp=meta.get("amp", "none"), num_workers=args.num_workers or 0,
                            max_train_batches=meta.get("max_train_batches"), sync_bn=bool(meta.get("sync_bn")),
                            bucket_batches=meta.get("bucket_batches", DEFAULT_BUCKET_BATCHES),
                            tensorboard=args.tensorboard, stop_after=args.stop_after, resume=True, progress=progress,
                            demo=demo, data_on_device=data_on_device, compile=args.compile, tf32=bool(meta.get("tf32")))
        header = {k: run.get(k) for k in ("synthetic", "demo", "data") if k in run}
    else:
        if not args.dataset:
            raise CLIError("--dataset is required (one of IEMOCAP, IEMOCAP4, MELD, CMUMOSEI7)")
        if not args.out:
            raise CLIError("--out DIR is required (the run folder)")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise CLIError(f"--out {out} exists and is not a folder")
        markers = run_markers(out) if out.is_dir() else []
        if markers and not args.overwrite:
            raise CLIError(f"{out} already holds a run ({', '.join(markers[:4])}); continue it with --resume {out}, "
                           f"train into it anyway with --overwrite, or choose another --out")
        demo = None
        if args.data is None and not args.demo_preset:
            demo_changes = {k: v for k, v in DEMO_SETTINGS.items() if k not in explicit}
            explicit = {**demo_changes, **explicit}
            demo = {"changed_from_preset": demo_changes,
                    "note": "synthetic demo: settings changed from the paper preset to finish in minutes on a CPU"}
        elif args.data is None:
            demo = {"changed_from_preset": {}, "note": "synthetic demo with the full paper preset (--demo_preset)"}
        config = _config_for(args.dataset, explicit)
        if args.data is not None:
            p = Path(args.data)
            if not p.exists():
                raise FileNotFoundError(f"feature file not found: {p}")
        opts = TrainOptions(out=str(out), data=str(Path(args.data).resolve()) if args.data else None,
                            seed=args.seed if args.seed is not None else 0,
                            seeds=args.seeds or 1, valid_from=args.valid_from or "train10", dims=dims,
                            device=args.device or "auto", amp=args.amp or "none", num_workers=args.num_workers or 0,
                            max_train_batches=args.max_train_batches, sync_bn=args.sync_bn, tensorboard=args.tensorboard,
                            bucket_batches=DEFAULT_BUCKET_BATCHES if args.bucket_batches is None else args.bucket_batches,
                            stop_after=args.stop_after, resume=False, overwrite=args.overwrite, progress=progress, demo=demo,
                            data_on_device=data_on_device, compile=args.compile, tf32=args.tf32)
        header = {}
    if opts.amp == "bf16" and (args.device or "auto") == "cpu":
        _err("graphsmile: warning: --amp bf16 on the CPU is usually slower than fp32")

    ctx, device = init_distributed(opts.device)
    try:
        if opts.tf32:  # before anything is written or replaced
            _check_tf32(device)
        if opts.sync_bn and not (ctx.distributed and device.type == "cuda"):
            raise CLIError("--sync_bn needs several processes on CUDA devices (torchrun; SyncBatchNorm has "
                           f"no CPU implementation), this run has {ctx.world_size} on {device.type}")
        if opts.resume and args.threads == "auto" and meta.get("threads") and device.type == "cpu":
            configure_threads(int(meta["threads"]), device)
            threads = f"{_nthreads(int(meta['threads']))}, as the run so far"
        else:
            threads = configure_threads(args.threads, device)
        if device.type == "cpu":
            import torch

            opts.threads = torch.get_num_threads()
        synthetic = None
        if opts.data is None or (opts.demo is not None and header.get("synthetic")):
            synthetic = _demo_data(out, config.dataset, ctx) if opts.data is None else header.get("synthetic")
            opts.data = synthetic["path"]
        if synthetic is not None and ctx.is_main:
            _banner(config, opts, synthetic)
        splits = _load_splits(opts.data, config.dataset, opts.valid_from, opts.dims)
        if tuple(splits.dims) != tuple(config.feature_dims):
            config = _with_dims(config, splits.dims)

        if opts.resume:
            from .train.trainer import data_fingerprint

            fp = data_fingerprint(splits)
            stored = run.get("fingerprint", {}).get("sha1")
            if stored and fp["sha1"] != stored:
                raise CLIError(f"--resume: {opts.data} is not the data the run in {out} was trained on "
                               "(dialogue ids or lengths differ)")
        run_desc: Dict[str, Any] = {}
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            from .train.trainer import data_fingerprint

            run_desc = {
                "kind": "graphsmile.run",
                "graphsmile_version": _version(),
                "command": [PROG] + list(getattr(args, "_argv", [])),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "dataset": config.dataset,
                "config": config.to_dict(),
                "training": opts.meta(),
                "data": opts.data,
                "fingerprint": data_fingerprint(splits),
            }
            if synthetic is not None:
                run_desc["synthetic"] = synthetic
            if opts.demo is not None:
                run_desc["demo"] = opts.demo
            if opts.resume:
                for k in ("created", "command"):
                    run_desc[k] = run.get(k, run_desc[k])
            else:
                stale = _remove_previous_run(out)   # only with --overwrite: run_markers refused otherwise
                if stale:
                    _say(f"--overwrite: removed the previous run's {', '.join(stale[:6])}"
                         + (f" and {len(stale) - 6} more" if len(stale) > 6 else ""))
            if not opts.resume and (out / "log.txt").exists():
                with open(out / "log.txt", "a", encoding="utf-8") as f:
                    f.write(f"--- new run {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
            _say(f"graphsmile train: {config.dataset}, {len(splits.train)}/{len(splits.valid)}/{len(splits.test)} "
                 f"train/valid/test dialogues ({splits.train.num_utterances}/{splits.valid.num_utterances}/"
                 f"{splits.test.num_utterances} utterances), device {device}" + (f" ({threads})" if threads else "")
                 + (", TF32 matrix products" if opts.tf32 else "")
                 + (f" x {ctx.world_size} processes (global batch {config.batch_size * ctx.world_size})" if ctx.distributed else ""))
            _say(f"  config: hidden {config.hidden_dim}, layers {list(config.heter_n_layers)}, win {list(config.win)}, "
                 f"shift_win {config.shift_win}, drop {config.drop}, lr {config.lr:g}, l2 {config.l2:g}, batch {config.batch_size}, "
                 f"epochs {config.epochs}, loss {config.loss_type} {list(config.lambd)}, textf_mode {config.textf_mode}, "
                 f"edge_weights {config.edge_weights}")

        def write_run_json() -> None:
            if ctx.is_main:
                atomic_write_text(out / "run.json", json.dumps(to_jsonable(run_desc), indent=2) + "\n")

        if not opts.resume:
            write_run_json()

        ctx.barrier()
        res_header = {"command": run_desc.get("command") if ctx.is_main else None}
        if synthetic is not None:
            res_header["synthetic"] = synthetic
            res_header["demo"] = opts.demo
        res_header["data"] = opts.data
        results = run_training(config, splits, opts, ctx=ctx, device=device, header=res_header, log=_say,
                               # a resume rewrites run.json only after every seed's checkpoint passed its checks
                               on_resumable=write_run_json if opts.resume else None)
        if ctx.is_main and results.get("status") == "complete":
            _print_files(out, len(results.get("seeds", [])) > 1, synthetic is not None)
            if synthetic is not None:
                _say("NOTE: these numbers come from SYNTHETIC data (planted signal), not from real IEMOCAP/MELD/MOSEI features.")
        ctx.barrier()  # every rank done before any destroys the process group
    finally:
        ctx.close()
    return 0


def _check_tf32(device) -> None:
    """``--tf32``: a :class:`CLIError` naming the flag unless ``device`` has TF32 tensor cores."""
    from .train.trainer import check_tf32_device

    try:
        check_tf32_device(device)
    except ValueError as exc:
        raise CLIError(f"--tf32: {exc}") from None


def _remove_previous_run(out: Path) -> List[str]:
    """``train --overwrite``: delete the run files (``trainer.RUN_MARKERS``, in ``out`` and its
    ``seed_*`` folders) of the run being replaced, so that none of its checkpoints or results
    can be mistaken for the new run's if this one is interrupted. Returns what was removed."""
    from .train.trainer import run_markers

    removed = [rel for rel in run_markers(out) if (out / rel).is_file()]
    for rel in removed:
        (out / rel).unlink()
    return removed


def _version() -> str:
    from . import __version__

    return __version__


def _demo_data(out: Path, dataset: str, ctx) -> Dict[str, Any]:
    """Synthesize (or reuse) ``out/synthetic_<DATASET>.pkl``."""
    from .data import synthesize

    path = out.resolve() / f"synthetic_{dataset}.pkl"
    side = out.resolve() / f"synthetic_{dataset}.json"
    want = {"dataset": dataset, "seed": DEMO_DATA_SEED, "scale": DEMO_SCALE, "generator": "graphsmile.data.synthesize"}
    info = None
    if ctx.is_main:
        reuse = False
        if path.exists() and side.exists():
            try:
                have = json.loads(side.read_text(encoding="utf-8"))
                reuse = all(have.get(k) == v for k, v in want.items()) and have.get("size") == path.stat().st_size
            except (ValueError, OSError):
                reuse = False
        if reuse:
            info = dict(have, path=str(path), reused=True)
        else:
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            _say(f"generating SYNTHETIC {dataset} data -> {path} ...")
            si = synthesize(dataset, path, seed=DEMO_DATA_SEED, scale=DEMO_SCALE)
            info = dict(want, path=str(path), size=path.stat().st_size, dialogues=si.n_dialogues,
                        utterances=si.n_utterances, seconds=round(time.perf_counter() - t0, 1))
            from .train.checkpoint import atomic_write_text

            atomic_write_text(side, json.dumps(info, indent=2) + "\n")
            info["reused"] = False
    info = ctx.broadcast_object(info)
    return info


def _banner(config, opts, synthetic: Dict[str, Any]) -> None:
    bar = "=" * 78
    lines = [bar,
             f"  SYNTHETIC DATA -- no --data was given, so this run trains on a synthetic",
             f"  {config.dataset}-shaped feature file (graphsmile.data.synthesize, seed {synthetic.get('seed')}):",
             f"    {synthetic['path']}" + (" (reused)" if synthetic.get("reused") else ""),
             "  It has the real layout and sizes and a planted, learnable signal; its",
             "  metrics say NOTHING about results on real features. Use --data FILE for those."]
    demo = opts.demo or {}
    ch = demo.get("changed_from_preset") or {}
    if ch:
        lines.append(f"  Demo settings changed from the {config.dataset} paper preset (to run in minutes")
        lines.append(f"  on a CPU): " + ", ".join(f"{k} {v}" for k, v in ch.items()) + "; --demo_preset keeps the preset.")
    lines.append(bar)
    _say("\n".join(lines))


def _print_files(out: Path, multi: bool, synthetic: bool) -> None:
    names = ["run.json", "results.json", "best.pt", "last.pt", "classification_report.txt", "learning_curves.png",
             "confusion_matrix.png", "log.txt"]
    files = [out / n for n in names if (out / n).exists()]
    if multi:
        for d in sorted(out.glob("seed_*")):
            files += [d / n for n in names if (d / n).exists()]
    if synthetic:
        files += sorted(out.glob("synthetic_*.pkl"))
    if (out / "tensorboard").exists():
        files.append(out / "tensorboard")
    _say("files written:")
    for f in files:
        _say(f"  {f}")


# --- evaluate / predict -------------------------------------------------------------------


def _load_for_eval(args):
    """Checkpoint, config, splits, a trainer holding the weights, and the chosen datasets."""
    import torch

    from .train.checkpoint import config_from_checkpoint, describe_checkpoint, load_checkpoint
    from .train.distributed import init_distributed
    from .train.trainer import Trainer

    ckpt = load_checkpoint(args.checkpoint)
    config = config_from_checkpoint(ckpt)
    if args.dataset and args.dataset != config.dataset:
        raise CLIError(f"{args.checkpoint} is a {config.dataset} model, but --dataset is {args.dataset}")
    changes = {}
    if args.backend:
        changes["backend"] = args.backend
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    config = config.replace(**changes) if changes else config
    valid_from = args.valid_from or (ckpt.get("train") or {}).get("valid_from") or "train10"
    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"feature file not found: {data}")
    from .data import DataFormatError

    try:
        splits = _load_splits(data, config.dataset, valid_from, dims=tuple(config.feature_dims))
    except DataFormatError as e:
        raise CLIError(f"{data} does not fit the checkpoint's model ({config.dataset} features of widths text/visual/audio "
                       f"{'/'.join(map(str, config.feature_dims))}): {e}") from None
    ctx, device = init_distributed(args.device)
    try:
        configure_threads(args.threads, device)
        if args.tf32:
            _check_tf32(device)
        trainer = Trainer(config, splits, seed=0, ctx=ctx, device=device, amp=args.amp, tf32=args.tf32)
        try:
            trainer.model.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as e:
            raise CLIError(f"{args.checkpoint}: weights do not fit the stored config ({' '.join(str(e).split())[:300]})") from None
    except BaseException:
        ctx.close()
        raise
    names = ["train", "valid", "test"] if args.split == "all" else [args.split]
    if args.split == "all":   # e.g. no validation split (valid_from none, or too few dialogues): skip it
        names = [n for n in names if len(getattr(splits, n))] or names
    for n in names:
        if len(getattr(splits, n)) == 0:
            ctx.close()
            raise CLIError(f"the {n} split of {data} is empty (valid_from={valid_from})")
    if ctx.is_main and not getattr(args, "json", False) and getattr(args, "output", None) != "-":
        for line in describe_checkpoint(ckpt):
            _say(line)
    epoch = max(int(ckpt.get("epoch") or 1) - 1, 0)
    return ckpt, config, splits, trainer, ctx, names, epoch


def cmd_evaluate(args) -> int:
    from .train import metrics as M
    from .train.reports import confusion_text, format_eval, to_jsonable

    ckpt, config, splits, trainer, ctx, names, epoch = _load_for_eval(args)
    try:
        result: Dict[str, Any] = {"checkpoint": str(args.checkpoint), "data": str(args.data), "dataset": config.dataset,
                                  "class_names": list(splits.class_names), "splits": {}}
        for n in names:
            ev = trainer.evaluate(getattr(splits, n), epoch, desc=n)
            cls = list(splits.class_names)
            result["splits"][n] = {
                "metrics": ev.metrics,
                "classification_report": M.report_dict(ev.emo_labels, ev.emo_preds, cls),
                "confusion_matrix": M.confusion(ev.emo_labels, ev.emo_preds, len(cls)),
                "shift_confusion_matrix": ev.sft_confusion,
                "_report": M.report(ev.emo_labels, ev.emo_preds, cls),
            }
        if ctx.is_main:
            if args.json:
                for v in result["splits"].values():
                    v.pop("_report")
                print(json.dumps(to_jsonable(result), indent=2))
            else:
                for n, v in result["splits"].items():
                    _say(format_eval(n, v["metrics"]) + f"  ({v['metrics']['utterances']} utterances)")
                    _say(f"emotion classification report ({n}):\n{v['_report']}")
                    _say(f"confusion matrix ({n}; rows true, columns predicted):\n"
                         f"{confusion_text(v['confusion_matrix'], list(splits.class_names))}\n")
    finally:
        ctx.close()
    return 0


def cmd_predict(args) -> int:
    out_path = args.output or str(Path(args.checkpoint).parent / f"predictions_{args.split}.{args.format}")
    if out_path != "-" and Path(out_path).is_dir():
        raise CLIError(f"--output {out_path} is a folder; give a file name (e.g. {Path(out_path) / ('predictions.' + args.format)})")
    if out_path != "-" and Path(out_path).exists() and not args.overwrite:
        raise CLIError(f"{out_path} exists; use --overwrite to replace it or --output another file")
    ckpt, config, splits, trainer, ctx, names, epoch = _load_for_eval(args)
    try:
        records: List[Dict[str, Any]] = []
        cls, sen = list(splits.class_names), list(splits.sentiment_names)
        for n in names:
            ds = getattr(splits, n)
            ev = trainer.evaluate(ds, epoch, desc=n)
            by_id = {d.id: d for d in ds.dialogues}
            s = 0
            for did, L in zip(ev.ids, ev.lengths):
                d = by_id[did]
                for u in range(L):
                    pe, ps = ev.emo_probs[s + u], ev.sen_probs[s + u]
                    records.append({
                        "split": n, "dialogue_id": did, "utterance_index": u, "transcript": d.transcript[u],
                        "emotion": cls[int(pe.argmax())], "emotion_probs": {c: float(p) for c, p in zip(cls, pe)},
                        "sentiment": sen[int(ps.argmax())], "sentiment_probs": {c: float(p) for c, p in zip(sen, ps)},
                        "emotion_label": cls[int(ev.emo_labels[s + u])], "sentiment_label": sen[int(ev.sen_labels[s + u])],
                    })
                s += L
        if ctx.is_main:
            text = _predictions_text(records, cls, sen, args.format)
            if out_path == "-":
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                from .train.checkpoint import atomic_write_text

                atomic_write_text(out_path, text)
                acc = sum(r["emotion"] == r["emotion_label"] for r in records) / max(len(records), 1) * 100
                _say(f"wrote {len(records)} utterance predictions ({', '.join(names)}; emotion accuracy {acc:.2f}%) to {out_path}")
    finally:
        ctx.close()
    return 0


def _predictions_text(records, cls, sen, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    cols = (["split", "dialogue_id", "utterance_index", "transcript", "emotion"] + [f"p_{c}" for c in cls]
            + ["sentiment"] + [f"p_sentiment_{c}" for c in sen] + ["emotion_label", "sentiment_label"])
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in records:
        w.writerow([r["split"], r["dialogue_id"], r["utterance_index"], r["transcript"], r["emotion"]]
                   + [f"{r['emotion_probs'][c]:.6f}" for c in cls] + [r["sentiment"]]
                   + [f"{r['sentiment_probs'][c]:.6f}" for c in sen] + [r["emotion_label"], r["sentiment_label"]])
    return buf.getvalue()


# --- synth --------------------------------------------------------------------------------


def cmd_synth(args) -> int:
    from .data import synthesize

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; use --overwrite to replace it")
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file name, e.g. {out / ('synthetic_' + args.dataset + '.pkl')}")
    n_dia = None
    if args.n_dialogues is not None:
        n_dia = args.n_dialogues[0] if len(args.n_dialogues) == 1 else tuple(args.n_dialogues)
    t0 = time.perf_counter()
    info = synthesize(args.dataset, out, seed=args.seed, scale=args.scale, dims=tuple(args.dims) if args.dims else None,
                      length=args.length, min_len=args.min_len, max_len=args.max_len, mean_len=args.mean_len,
                      n_dialogues=n_dia, meld_valid_vid=args.meld_valid_vid, signal=args.signal, protocol=args.protocol,
                      py2_strings=args.py2_strings)
    _say(f"wrote SYNTHETIC {info.dataset} features to {info.path} in {time.perf_counter() - t0:.1f} s: "
         f"{info.n_dialogues} dialogues, {info.n_utterances} utterances, dims text/visual/audio "
         f"{'/'.join(str(d) for d in info.dims)}, seed {info.seed}")
    for split, ids in info.ids.items():
        ln = info.lengths[split]
        if ln:
            _say(f"  {split:5s}: {len(ids)} dialogues, {sum(ln)} utterances, lengths {min(ln)}-{max(ln)} (mean {sum(ln) / len(ln):.1f})")
    from .data import dataset_format

    fmt = dataset_format(info.dataset)
    if tuple(info.dims) != tuple(fmt.dims):
        _say(f"  non-standard widths: train/inspect it with --dims infer (or --dims {' '.join(map(str, info.dims))})")
    return 0


# --- inspect ------------------------------------------------------------------------------


def _sized_len(v: Any) -> Optional[int]:
    """len(v) for containers; None for strings, scalars and 0-d arrays (which have __len__ but
    raise on it), so that describing a malformed file never fails before the loader's check."""
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        return None
    try:
        return len(v)
    except TypeError:
        return None


def _describe(v: Any) -> Dict[str, Any]:
    d: Dict[str, Any] = {"type": type(v).__name__}
    n = _sized_len(v)
    if n is not None:
        d["entries"] = n
    if isinstance(v, dict) and v:
        k0 = next(iter(v))
        x = v[k0]
        d["key_type"] = type(k0).__name__
        nx = _sized_len(x)
        d["value"] = type(x).__name__ + (f"[{nx}]" if nx is not None else "")
        try:
            import numpy as np

            first = x[0] if nx else None
            if first is not None and np.ndim(first) >= 1:
                d["item_shape"] = list(np.shape(first))
                d["item_dtype"] = str(np.asarray(first).dtype)
        except Exception:
            pass
    return d


def cmd_inspect(args) -> int:
    import numpy as np

    from .data import dataset_format

    fmt = dataset_format(args.dataset)
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"feature file not found: {path}")
    if path.is_dir():
        raise CLIError(f"{path} is a folder, not a feature pickle")
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:
        raise CLIError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    layout = []
    if isinstance(raw, (tuple, list)):
        for i, v in enumerate(raw):
            layout.append({"index": i, "field": fmt.fields[i] if i < len(fmt.fields) else None, **_describe(v)})
    del raw
    dims = _dims_arg(args.dims)
    splits = _load_splits(path, fmt.name, args.valid_from, dims)
    out: Dict[str, Any] = {
        "file": str(path), "dataset": splits.dataset, "size_bytes": path.stat().st_size,
        "tuple_length": len(layout), "layout": layout,
        "dims": {"text": splits.dims[0], "visual": splits.dims[1], "audio": splits.dims[2]},
        "dataset_dims": {"text": fmt.dims[0], "visual": fmt.dims[1], "audio": fmt.dims[2]},
        "dims_match_dataset": tuple(splits.dims) == tuple(fmt.dims),
        "num_emotions": splits.num_emotions, "class_names": list(splits.class_names),
        "sentiment_names": list(splits.sentiment_names), "valid_from": splits.valid_from, "splits": {},
    }
    import torch

    for name in ("train", "valid", "test"):
        ds = getattr(splits, name)
        ln = ds.lengths
        sen = (np.bincount(torch.cat([d.sentiment for d in ds]).numpy(), minlength=3).tolist() if len(ds) else [0, 0, 0])
        visual_zero = int(sum(int((d.visual.abs().sum(1) == 0).sum()) for d in ds))
        out["splits"][name] = {
            "dialogues": len(ds), "utterances": ds.num_utterances,
            "lengths": ({"min": int(min(ln)), "max": int(max(ln)), "mean": float(np.mean(ln)), "median": float(np.median(ln))}
                        if ln else None),
            "emotion_counts": ds.emotion_counts(splits.num_emotions).tolist(),
            "sentiment_counts": sen,
            "all_zero_visual_vectors": visual_zero,
        }
    first = next((d for n in ("train", "valid", "test") for d in getattr(splits, n)), None)
    if first is not None:
        k = min(len(first), 6)
        out["first_transcript"] = {
            "dialogue": first.id, "utterances": len(first),
            "lines": [{"speaker": ("M" if first.speakers[i, 0] > 0.5 else "F") if first.speakers.shape[1] == 2
                       else int(first.speakers[i].argmax()),
                       "emotion": splits.class_names[int(first.emotion[i])], "text": first.transcript[i]} for i in range(k)],
        }
    if args.json:
        from .train.reports import to_jsonable

        print(json.dumps(to_jsonable(out), indent=2, ensure_ascii=False))
        return 0
    _say(f"{out['file']}: {out['dataset']} layout, {out['size_bytes'] / 1e6:.1f} MB, a {out['tuple_length']}-tuple:")
    for e in layout:
        extra = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("index", "field", "type"))
        _say(f"  [{e['index']:2d}] {str(e['field']):14s} {e['type']}" + (f" ({extra})" if extra else ""))
    dd = out["dims"]
    _say(f"feature widths text/visual/audio: {dd['text']}/{dd['visual']}/{dd['audio']}"
         + ("" if out["dims_match_dataset"] else f" (the real {fmt.name} files have {'/'.join(map(str, fmt.dims))}: "
                                                   "train with --dims infer)"))
    _say(f"emotions ({out['num_emotions']}): {', '.join(out['class_names'])}; sentiments: {', '.join(out['sentiment_names'])}")
    _say(f"splits (as training uses them, valid_from={out['valid_from']}):")
    for name, s in out["splits"].items():
        ln = s["lengths"]
        rng = f"lengths {ln['min']}-{ln['max']} (mean {ln['mean']:.1f}, median {ln['median']:.0f})" if ln else "empty"
        _say(f"  {name:5s}: {s['dialogues']:5d} dialogues, {s['utterances']:6d} utterances, {rng}")
        if s["dialogues"]:
            _say(f"         emotion counts {s['emotion_counts']}, sentiment counts {s['sentiment_counts']}"
                 + (f", {s['all_zero_visual_vectors']} all-zero visual vectors" if s["all_zero_visual_vectors"] else ""))
    ft = out.get("first_transcript")
    if ft:
        _say(f"first transcript: dialogue {ft['dialogue']!r} ({ft['utterances']} utterances)")
        for ln in ft["lines"]:
            _say(f"  {ln['speaker']}: [{ln['emotion']}] {ln['text']}")
    return 0


# --- convert-checkpoint -------------------------------------------------------------------


def cmd_convert(args) -> int:
    from .config import DATASET_DIMS, GraphSmileConfig
    from .model import GraphSmile
    from .train.checkpoint import (
        CHECKPOINT_KIND,
        CHECKPOINT_VERSION,
        atomic_save,
        infer_original_config,
        read_original_state_dict,
    )
    from .data import dataset_format

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; use --overwrite to replace it")
    sd = read_original_state_dict(args.input, trust_pickle=args.trust_pickle)
    inferred = infer_original_config(sd)
    explicit = _explicit_config(args)
    kw: Dict[str, Any] = {}
    for k in ("hidden_dim", "heter_n_layers", "edge_capacity"):
        if k in inferred:
            kw[k] = inferred[k]
    real = DATASET_DIMS[args.dataset]
    dt, dv, da = inferred.get("dim_t", real[0]), inferred.get("dim_v", real[1]), inferred.get("dim_a", real[2])
    if (dt, dv, da) != tuple(real):
        kw.update(dim_t=dt, dim_v=dv, dim_a=da)
    ti = inferred.get("text_in")
    if ti is not None and "textf_mode" not in explicit:
        if ti == 2 * dt:
            kw["textf_mode"] = "concat2"
        elif ti == 4 * dt:
            kw["textf_mode"] = "concat4"
    n_emo = inferred.get("n_emotions")
    if n_emo is not None and n_emo != dataset_format(args.dataset).num_emotions:
        raise CLIError(f"{args.input} has an emotion head of {n_emo} classes; {args.dataset} has "
                       f"{dataset_format(args.dataset).num_emotions} (wrong --dataset?)")
    kw.update(explicit)
    kw.setdefault("edge_weights", "per_edge")
    config = GraphSmileConfig.preset(args.dataset, **kw)
    model = GraphSmile.from_original_state_dict(sd, config, strict=True)
    fmt = dataset_format(args.dataset)
    ckpt = {
        "kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "graphsmile_version": _version(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.to_dict(), "dataset": config.dataset, "class_names": list(fmt.class_names),
        "sentiment_names": list(fmt.sentiment_names), "epoch": None, "best": None, "history": [],
        "source": f"original GraphSmile state dict {args.input}",
        "train": {},
    }
    atomic_save(ckpt, out)
    not_inferred = [k for k in ("win", "shift_win", "drop") if k not in explicit]
    if "textf_mode" not in explicit and config.textf_mode not in ("concat2", "concat4"):
        # a text projection of the text sets' width fits textf0..textf3, sum2 and sum4 alike
        not_inferred.append("textf_mode")
    _say(f"converted {args.input} -> {out}: {config.dataset}, hidden {config.hidden_dim}, layers "
         f"{list(config.heter_n_layers)}, textf_mode {config.textf_mode}, edge capacity {config.edge_capacity}")
    if not_inferred:
        _say(f"  from the {config.dataset} preset (not recoverable from weights; pass them if the run differed): "
             + ", ".join(f"{k} {getattr(config, k)}" for k in not_inferred)
             + (" (textf0..textf3, sum2 and sum4 have the same shapes)" if "textf_mode" in not_inferred else ""))
    return 0


# --- bench --------------------------------------------------------------------------------


def _bench_dir() -> Path:
    """``bench/`` of the source tree this package was imported from."""
    return Path(__file__).resolve().parent.parent / "bench"


def cmd_bench(args) -> int:
    bench = _bench_dir()
    root = bench.parent
    targets = ["ops", "model"] if args.target == "all" else [args.target]
    scripts = [(t, bench / f"{t}.py") for t in targets]
    present = [(t, s) for t, s in scripts if s.is_file()]
    missing = [s for t, s in scripts if not s.is_file()]
    if not present:
        raise CLIError(f"no benchmark script found ({', '.join(str(s) for s in missing)}): the benchmarks live in the "
                       "graphsmile source tree (bench/ops.py, bench/model.py) and are not installed with the package; "
                       "run from a source checkout installed with pip install -e .")
    for s in missing:
        _err(f"graphsmile: note: {s} not found; skipped")
    extra = list(args.args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    rc = 0
    for t, s in present:
        _say(f"$ {sys.executable} {s} {' '.join(extra)}".rstrip())
        r = subprocess.run([sys.executable, str(s)] + extra, cwd=str(root))
        rc = rc or r.returncode
    return rc


# --- entry point --------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        msg = str(e.args[0])
    elif isinstance(e, OSError) and e.filename and e.strerror:
        msg = f"{e.strerror}: {e.filename}"
    else:
        msg = str(e)
    msg = " ".join(part.strip() for part in msg.strip().splitlines() if part.strip())
    return msg or type(e).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``graphsmile`` command with ``argv`` (default ``sys.argv[1:]``); returns the
    exit status (0 ok, 1 error, 2 usage error, 130 interrupted)."""
    from .data import DataFormatError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        _report(f"{PROG}: error: {e} (see '{e.prog} --help')", same_on_every_rank=True)
        return 2
    except SystemExit as e:  # --help, --version
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    debug = debug or bool(getattr(args, "debug", False))
    args._argv = argv
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if _launch_ranks()[1] == 0:   # torchrun interrupts every process; say it once per node
            _err(f"{PROG}: interrupted" + (f"; continue with: graphsmile train --resume {args.resume or args.out}"
                                           if args.command == "train" and (args.resume or args.out) else ""))
        return 130
    except (CLIError, DataFormatError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, OSError, KeyError, FloatingPointError, _UsageError) as e:
        # argument, data and run-folder errors come out alike on every process of a torchrun
        same = (isinstance(e, (CLIError, DataFormatError, FileNotFoundError, _UsageError))
                or bool(getattr(e, "same_on_every_rank", False)))
        _report(f"{PROG}: error: {_one_line(e)}", same, tb=debug)
        return 1
    except RuntimeError as e:
        _report(f"{PROG}: error: {_one_line(e)}" + ("" if debug else " (run with --debug for the traceback)"),
                bool(getattr(e, "same_on_every_rank", False)), tb=debug)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
