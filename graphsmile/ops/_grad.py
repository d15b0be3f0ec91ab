"""Gradients of the kernel ops that refuse to be differentiated again.

The backward formulas of the C++, CUDA and Triton ops call kernels (or use residuals the forward
kept) that autograd cannot see through, so a gradient of their gradient (``create_graph=True``,
then another ``backward``/``grad``) would come out as zeros or ``None``: silently wrong. Under
``create_graph=True`` the gradients are therefore handed on through a node that depends on the
op's inputs and raises a clear error when differentiated; first-order gradients are unchanged.
The ``"reference"`` and ``"dense"`` backends are plain torch and twice differentiable.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple

import torch


def _message(op: str) -> str:
    return (f"graphsmile: the gradient of {op} cannot be differentiated again (double backward): its backward "
            "runs compiled kernels that autograd cannot see through, so they give first-order gradients only. "
            "From Python, backend='reference' (plain torch) is twice differentiable.")


class _RefuseDoubleBackward(torch.autograd.Function):
    """Forward: copies of the first ``n`` tensors (the gradients). The remaining tensors (the
    op's inputs and incoming gradients) only link the copies into the graph, so that
    differentiating them with respect to any of those reaches ``backward``, which raises."""

    @staticmethod
    def forward(op: str, n: int, *tensors: torch.Tensor):
        return tuple(t.clone() for t in tensors[:n])

    @staticmethod
    def setup_context(ctx, inputs, output):
        # the separate set-up lets torch.func transforms (whose grad runs backward with
        # create_graph=True) use this Function
        ctx.op = inputs[0]

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_message(ctx.op))


def first_order_only(op: str, grads: Sequence[Optional[torch.Tensor]],
                     sources: Sequence[object]) -> Tuple[Optional[torch.Tensor], ...]:
    """``grads`` unchanged, except under ``create_graph=True`` (grad mode on inside a backward):
    then the tensors among them are re-attached, through a node that raises when
    differentiated, to every tensor in ``sources`` that requires grad."""
    grads = tuple(grads)
    if not torch.is_grad_enabled():
        return grads
    present = [i for i, g in enumerate(grads) if isinstance(g, torch.Tensor)]
    links = [t for t in sources if isinstance(t, torch.Tensor) and t.requires_grad]
    if not present or not links:
        return grads
    attached = _RefuseDoubleBackward.apply(op, len(present), *[grads[i] for i in present], *links)
    out = list(grads)
    for i, t in zip(present, attached):
        out[i] = t
    return tuple(out)


def first_order_backward(op: str) -> Callable:
    """Decorator of a ``register_autograd`` backward ``fn(ctx, *grad_outputs)``: runs it under
    ``torch.no_grad()`` (its kernels have no autograd of their own) and passes its result
    through :func:`first_order_only`, linked to the incoming gradients and the saved tensors
    (setup contexts save the differentiable inputs)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def backward(ctx, *grad_outputs):
            with torch.no_grad():
                grads = fn(ctx, *grad_outputs)
            if not torch.is_grad_enabled():
                return grads
            return first_order_only(op, grads, (*grad_outputs, *ctx.saved_tensors))

        return backward

    return decorate
