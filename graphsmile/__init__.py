"""graphsmile: a fast, faithful implementation of GraphSmile (TPAMI 2025) for multimodal emotion
recognition in conversation. See README.md.

- :mod:`graphsmile.ops` -- the graph ops (C++/CUDA/Triton kernels behind torch.autograd)
- :class:`GraphSmileConfig`, :class:`GraphSmile` -- the model
- :mod:`graphsmile.data` -- loaders for IEMOCAP, IEMOCAP4, MELD, CMU-MOSEI feature files, synthetic data
- :mod:`graphsmile.train` and the ``graphsmile`` command -- training, evaluation, DDP
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402,F401
from .config import GraphSmileConfig  # noqa: E402
from .losses import AutomaticWeightedLoss, MultiTaskLoss  # noqa: E402
from .model import GraphSmile, pack_padded  # noqa: E402

__all__ = ["ops", "GraphSmileConfig", "GraphSmile", "pack_padded", "MultiTaskLoss", "AutomaticWeightedLoss", "__version__"]
