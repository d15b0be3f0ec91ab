"""GraphSmile's multi-task loss (SPEC 6): emotion, sentiment and sentiment-shift terms.

Each term is the mean NLL of the log-softmax of its logits (the original: ``nn.NLLLoss()`` on
``F.log_softmax``), combined according to ``loss_type`` with weights
``lambd = (l0, l1, l2)``::

    emo_sen_sft   l0*emo + l1*sen + l2*sft
    emo_sen       l0*emo + l1*sen
    emo_sft       l0*emo + l2*sft
    emo           emo
    sen_sft       l1*sen + l2*sft
    sen           sen
    epoch         (e/E)*l0*emo + (1 - e/E)*(l1*sen + l2*sft)    (e: 0-based epoch, E: epochs)
    auto          sum_i 0.5/p_i^2 * loss_i + log(1 + p_i^2)      (p: learnable, init 1)

Fixes against the original: ``auto``'s weights live in one module created once (the original
rebuilt them every batch, so they never learned), and an unknown ``loss_type`` raises.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LOSS_TYPES

__all__ = ["LOSS_TYPES", "AutomaticWeightedLoss", "MultiTaskLoss", "nll_loss"]

# Which parts each loss type needs.
_NEEDS = {
    "emo_sen_sft": ("emo", "sen", "sft"),
    "emo_sen": ("emo", "sen"),
    "emo_sft": ("emo", "sft"),
    "emo": ("emo",),
    "sen_sft": ("sen", "sft"),
    "sen": ("sen",),
    "epoch": ("emo", "sen", "sft"),
    "auto": ("emo", "sen", "sft"),
}
assert set(_NEEDS) == set(LOSS_TYPES)


def nll_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean NLL of ``log_softmax(logits)`` (``[n, C]``) against class ids ``target`` (``[n]``),
    computed in float32 or wider (logits from mixed precision are upcast)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [n, C], got shape {tuple(logits.shape)}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be [n] = [{logits.shape[0]}], got shape {tuple(target.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.nll_loss(F.log_softmax(logits, dim=-1), target)


class AutomaticWeightedLoss(nn.Module):
    """Uncertainty weighting of ``num`` losses: ``sum_i 0.5 / p_i^2 * loss_i + log(1 + p_i^2)``.

    ``params``: ``[num]``, initialised to 1. Create it once and give its parameters to the
    optimiser (the original used ``weight_decay=0`` for them).
    """

    def __init__(self, num: int = 3):
        super().__init__()
        if not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        self.params = nn.Parameter(torch.ones(num))

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        if len(losses) != self.params.numel():
            raise ValueError(f"expected {self.params.numel()} losses, got {len(losses)}")
        p2 = self.params ** 2
        total = 0.0
        for i, loss in enumerate(losses):
            total = total + 0.5 / p2[i] * loss + torch.log1p(p2[i])
        return total


class MultiTaskLoss(nn.Module):
    """The combined GraphSmile loss.

    Args:
        loss_type: one of :data:`LOSS_TYPES` (see the module docstring).
        lambd: ``(l_emo, l_sen, l_shift)``.
        epochs: ``E`` for ``loss_type="epoch"`` (required there).

    With ``loss_type="auto"`` the module owns an :class:`AutomaticWeightedLoss` (``self.awl``);
    pass ``MultiTaskLoss.parameters()`` to the optimiser (weight decay 0, as the original meant
    to). Other loss types have no parameters.
    """

    def __init__(self, loss_type: str = "emo_sen_sft", lambd: Sequence[float] = (1.0, 1.0, 1.0), epochs: Optional[int] = None):
        super().__init__()
        if loss_type not in _NEEDS:
            raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {list(LOSS_TYPES)}")
        lambd = tuple(float(v) for v in lambd)
        if len(lambd) != 3:
            raise ValueError(f"lambd must be 3 weights (emotion, sentiment, shift), got {lambd}")
        if loss_type == "epoch" and (not isinstance(epochs, int) or epochs <= 0):
            raise ValueError(f"loss_type='epoch' needs epochs (a positive int), got {epochs!r}")
        self.loss_type = loss_type
        self.lambd = lambd
        self.epochs = epochs
        self.awl = AutomaticWeightedLoss(3) if loss_type == "auto" else None

    @classmethod
    def from_config(cls, config) -> "MultiTaskLoss":
        """From a :class:`~graphsmile.config.GraphSmileConfig` (``loss_type``, ``lambd``, ``epochs``)."""
        return cls(config.loss_type, config.lambd, config.epochs)

    @property
    def needs(self) -> Tuple[str, ...]:
        """The parts (``"emo"``, ``"sen"``, ``"sft"``) this loss type combines."""
        return _NEEDS[self.loss_type]

    def forward(
        self,
        emo_logits: Optional[torch.Tensor],
        sen_logits: Optional[torch.Tensor],
        shift_logits: Optional[torch.Tensor],
        emotion: Optional[torch.Tensor],
        sentiment: Optional[torch.Tensor],
        shift_labels: Optional[torch.Tensor],
        epoch: Optional[int] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``emo_logits [N, n_emo]``, ``sen_logits [N, 3]``, ``shift_logits [P, 2]`` with packed
        labels ``emotion [N]``, ``sentiment [N]``, ``shift_labels [P]``
        (:func:`graphsmile.ops.shift_pair_labels`). A part whose logits or labels are ``None``
        is skipped, which is an error only if ``loss_type`` needs it. ``epoch``: the 0-based
        epoch, required by ``loss_type="epoch"``.

        Returns ``(total, parts)``: ``parts`` holds the detached unweighted losses ``"emo"``,
        ``"sen"``, ``"sft"`` that were computed, and ``"total"`` (detached).
        """
        given = {"emo": (emo_logits, emotion), "sen": (sen_logits, sentiment), "sft": (shift_logits, shift_labels)}
        parts: Dict[str, torch.Tensor] = {}
        for name, (logits, target) in given.items():
            if logits is not None and target is not None:
                parts[name] = nll_loss(logits, target)
            elif name in self.needs:
                raise ValueError(f"loss_type={self.loss_type!r} needs the {name!r} logits and labels, got None")
        l0, l1, l2 = self.lambd
        t = self.loss_type
        if t == "emo_sen_sft":
            total = l0 * parts["emo"] + l1 * parts["sen"] + l2 * parts["sft"]
        elif t == "emo_sen":
            total = l0 * parts["emo"] + l1 * parts["sen"]
        elif t == "emo_sft":
            total = l0 * parts["emo"] + l2 * parts["sft"]
        elif t == "emo":
            total = parts["emo"]
        elif t == "sen_sft":
            total = l1 * parts["sen"] + l2 * parts["sft"]
        elif t == "sen":
            total = parts["sen"]
        elif t == "epoch":
            if epoch is None:
                raise ValueError("loss_type='epoch' needs the current epoch (0-based)")
            r = epoch / self.epochs
            total = r * (l0 * parts["emo"]) + (1 - r) * (l1 * parts["sen"] + l2 * parts["sft"])
        else:  # auto
            total = self.awl(parts["emo"], parts["sen"], parts["sft"])
        out = {k: v.detach() for k, v in parts.items()}
        out["total"] = total.detach()
        return total, out

    def extra_repr(self) -> str:
        return f"loss_type={self.loss_type!r}, lambd={self.lambd}, epochs={self.epochs}"
