"""Backend selection shared by the public ops."""
from __future__ import annotations

import importlib.util
import os

import torch

from . import _ext

BACKENDS = ("auto", "cpu", "cuda", "triton", "reference", "dense")


_TRITON = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the triton package is installed (looked up once, at import)."""
    return _TRITON


# fp16/bf16 window ops on a GPU: "auto" takes Triton (tl.dot on tensor cores) over the CUDA
# kernels. Measured side by side on an H200 (2026-11-27, bench/results/gpu/2026-11-27-NVIDIA_H200):
# propagate forward + backward, bf16, D = 512, 1x60000: Triton 1.7 ms, CUDA 3.1 ms (16x3200: 1.9
# vs 2.8 ms); D = 256: level (1.7 ms each). In fp32 the CUDA kernels are faster (3.2 vs 4.0 ms).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_name(backend: str) -> None:
    """A ValueError unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def resolve(backend: str, device: torch.device, dtype: "torch.dtype | None" = None, prefer_triton_low_precision: bool = False) -> str:
    """Maps ``backend`` to a concrete one for tensors on ``device``; raises a clear error when
    the requested backend cannot run there. ``prefer_triton_low_precision`` (the window ops):
    "auto" on a GPU takes Triton, when installed, for fp16/bf16 ``dtype``."""
    check_name(backend)
    if backend == "auto":
        if device.type == "cpu":
            return "cpu" if _ext.has_kernel("CPU") else "reference"
        if device.type == "cuda":
            if prefer_triton_low_precision and dtype in _LOW_PRECISION and triton_available():
                return "triton"
            if _ext.has_kernel("CUDA"):
                return "cuda"
            return "triton" if triton_available() else "reference"
        return "reference"
    if backend == "cpu":
        if not _ext.has_kernel("CPU"):
            raise RuntimeError(f"backend='cpu' needs the compiled extension graphsmile._C, which is not available ({_ext.LOAD_ERROR}); use backend='reference' or rebuild")
        if device.type != "cpu":
            raise ValueError(f"backend='cpu' runs on CPU tensors, but the inputs are on {device}")
    elif backend == "cuda":
        if not _ext.has_kernel("CUDA"):
            why = _ext.LOAD_ERROR or "graphsmile._C was built without CUDA kernels (no nvcc or a CPU-only torch at build time)"
            raise RuntimeError(f"backend='cuda' is not available: {why}")
        if device.type != "cuda":
            raise ValueError(f"backend='cuda' runs on CUDA tensors, but the inputs are on {device}")
    elif backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package, which is not installed (pip install triton)")
        if device.type != "cuda" and not _triton_interpreting():
            raise ValueError(f"backend='triton' runs on CUDA tensors (or on the CPU under TRITON_INTERPRET=1), but the inputs are on {device}")
    return backend


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
