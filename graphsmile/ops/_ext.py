"""Loading the compiled extension ``graphsmile._C``.

The extension defines the ``torch.ops.graphsmile`` library (schemas in ``csrc/graphsmile.cpp``)
and its CPU (and, when built with CUDA, CUDA) kernels. If it cannot be loaded, graphsmile still
imports: ``backend="auto"`` then runs the pure-torch reference implementation, and one warning
says why.
"""
from __future__ import annotations

import os
import warnings

import torch

HAS_EXTENSION = False
LOAD_ERROR: str | None = None
# the differentiable ops and their backward ops (the latter's autograd refuses a double backward)
_AUTOGRAD_OPS = ("window_norm", "window_norm_backward", "window_spmm", "window_spmm_backward", "shift_pair_sum",
                 "shift_pair_sum_backward", "shift_pair_nll")

try:  # importing the module runs the TORCH_LIBRARY registrations
    if os.environ.get("GRAPHSMILE_NO_EXTENSION", "0") == "1":
        raise ImportError("disabled by GRAPHSMILE_NO_EXTENSION=1")
    from graphsmile import _C  # noqa: F401

    # Every op's autograd is in C++ (csrc/autograd.cpp); an extension built from older
    # sources would leave some ops without gradients (torch would only warn, and the shift
    # head would silently stop learning), so it is refused like one that does not load.
    _no_autograd = [op for op in _AUTOGRAD_OPS
                    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{op}", "Autograd")]
    if _no_autograd:
        raise ImportError("graphsmile._C was built from older sources (no autograd kernels for "
                          + ", ".join(_no_autograd) + ")")
    HAS_EXTENSION = True
except Exception as exc:  # ImportError, or an undefined-symbol OSError from a torch mismatch
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"
    _package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.environ.get("GRAPHSMILE_NO_EXTENSION", "0") == "1":
        _advice = "unset GRAPHSMILE_NO_EXTENSION to use the C++/CUDA kernels."
    elif not any(f.startswith("_C") and f.endswith(".so") for f in os.listdir(_package)):
        # e.g. run from a source checkout whose graphsmile/ hides an installed, built copy
        _advice = (f"there is no compiled module in {_package}: build it there with "
                   "`pip install --no-build-isolation -e .`, or, if graphsmile is installed elsewhere, "
                   "run from outside the source tree so that the installed copy is imported.")
    else:
        _advice = ("rebuild with `pip install --no-build-isolation -e .` against the installed torch to get "
                   "the C++/CUDA kernels.")
    warnings.warn(
        "graphsmile: the compiled extension graphsmile._C could not be loaded "
        f"({LOAD_ERROR}); the graph ops fall back to the pure-torch reference implementation, "
        f"which is correct but slower; {_advice}",
        RuntimeWarning,
        stacklevel=2,
    )


def _has_kernel(dispatch_key: str) -> bool:
    if not HAS_EXTENSION:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("graphsmile::window_spmm", dispatch_key)


# Looked up once: the registrations are fixed once _C is loaded, and plain booleans trace
# under torch.compile.
_KERNELS = {key: _has_kernel(key) for key in ("CPU", "CUDA")}


def has_kernel(dispatch_key: str) -> bool:
    """True when the ``graphsmile`` library has kernels for ``dispatch_key`` ("CPU", "CUDA")."""
    return _KERNELS.get(dispatch_key, False)
