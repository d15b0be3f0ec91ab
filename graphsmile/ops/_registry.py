"""Fake (meta) implementations of the C++ ops ``torch.ops.graphsmile.*``.

Registered with ``torch.library`` so the ops work under ``torch.compile(fullgraph=True)`` and
``torch.library.opcheck``. Imported only when the extension loaded.

Every op's autograd is registered in C++ (csrc/autograd.cpp), so that C++ programs get gradients
without Python and a training step's host time stays small (the window ops run once per graph
layer; the Python autograd path costs about 40 us per forward call and 70 us per backward call).
"""
from __future__ import annotations

import torch

_lib = "graphsmile::"


@torch.library.register_fake(_lib + "window_norm")
def _window_norm_fake(edge_weight, lengths, num_nodes, num_modal, win_p, win_f, weight_mode):
    return edge_weight.new_empty(num_modal * num_nodes)


@torch.library.register_fake(_lib + "window_norm_backward")
def _window_norm_backward_fake(grad_norm, norm, edge_weight, lengths, num_modal, win_p, win_f, weight_mode):
    return torch.empty_like(edge_weight, memory_format=torch.contiguous_format)


@torch.library.register_fake(_lib + "window_spmm")
def _window_spmm_fake(x, edge_weight, norm, lengths, num_modal, win_p, win_f, weight_mode):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake(_lib + "window_spmm_backward")
def _window_spmm_backward_fake(grad_y, x, edge_weight, norm, lengths, num_modal, win_p, win_f, weight_mode, output_mask):
    gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None
    gw = torch.empty_like(edge_weight, memory_format=torch.contiguous_format) if output_mask[1] else None
    gs = torch.empty_like(norm, memory_format=torch.contiguous_format) if output_mask[2] else None
    return gx, gw, gs


@torch.library.register_fake(_lib + "shift_pair_sum")
def _shift_pair_sum_fake(a, b, lengths, num_pairs, shift_win):
    return a.new_empty(num_pairs, a.shape[1])


@torch.library.register_fake(_lib + "shift_pair_sum_backward")
def _shift_pair_sum_backward_fake(grad, lengths, num_nodes, shift_win, output_mask):
    ga = grad.new_empty(num_nodes, grad.shape[1]) if output_mask[0] else None
    gb = grad.new_empty(num_nodes, grad.shape[1]) if output_mask[1] else None
    return ga, gb


@torch.library.register_fake(_lib + "shift_pair_nll")
def _shift_pair_nll_fake(a, b, sentiment, lengths, shift_win, with_grad):
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    n = a.shape[0] if with_grad else 0
    return (a.new_empty((), dtype=acc), a.new_empty((2, 2), dtype=torch.long),
            a.new_empty(n, dtype=acc), a.new_empty(n, dtype=acc))


@torch.library.register_fake(_lib + "upload_by_value")
def _upload_by_value_fake(values, device):
    return torch.empty(values.shape, dtype=torch.long, device=device)

