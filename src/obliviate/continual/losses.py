"""The continual strategies' loss terms, as pure functions of tensors (each checked by hand in the tests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ewc_penalty(params: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor],
                lam: float) -> torch.Tensor:
    """EWC: ``(lam / 2) * sum_i F_i (theta_i - theta*_i)^2`` over the named parameters that have an anchor."""
    total = next(iter(params.values())).new_zeros(())
    for name, p in params.items():
        if name in anchors:
            total = total + (fisher[name] * (p - anchors[name]).square()).sum()
    return lam / 2 * total


def masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of ``KL(teacher || student)`` of the next-token distributions (logit imitation)."""
    t = F.log_softmax(teacher_logits.float(), -1)
    s = F.log_softmax(student_logits.float(), -1)
    kl = (t.exp() * (t - s)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def masked_feature_distance(h: torch.Tensor, h0: torch.Tensor, mask: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Mean over masked positions and hidden units of ``|h - h0|`` (``l1``) or ``(h - h0)^2`` (``l2``)."""
    d = (h.float() - h0.float())
    d = d.abs() if norm == "l1" else d.square()
    m = mask.unsqueeze(-1).to(d.dtype)
    return (d * m).sum() / (m.sum() * h.shape[-1]).clamp(min=1)


def activation_thresholds(h0: torch.Tensor, mask: torch.Tensor, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tau_pos, tau_neg)``: the ``1 - quantile`` and ``quantile`` quantiles of the reference activations at masked
    positions; an activation above ``tau_pos`` is in the *on* state, one below ``tau_neg`` in the *off* state."""
    values = h0.float()[mask.bool()].flatten()
    return torch.quantile(values, 1 - quantile), torch.quantile(values, quantile)


def tm_loss(h: torch.Tensor, h0: torch.Tensor, mask: torch.Tensor, quantile: float = 0.1) -> torch.Tensor:
    """GeRe's threshold-based margin loss on activation states.

    With the reference activations' thresholds ``(tau_pos, tau_neg)`` (``activation_thresholds``), each unit whose
    reference activation is *on* (``h0 >= tau_pos``) is penalised by ``relu(tau_pos - h)`` when it falls below the
    threshold, each *off* unit (``h0 <= tau_neg``) by ``relu(h - tau_neg)`` when it rises above; units in between are
    free. The loss is the mean over the on and off units. Only the state is kept, not the exact value: a margin, where
    L1/L2 feature imitation pins every unit.
    """
    tau_pos, tau_neg = activation_thresholds(h0, mask, quantile)
    m = mask.bool().unsqueeze(-1)
    h, h0 = h.float(), h0.float()
    on = (h0 >= tau_pos) & m
    off = (h0 <= tau_neg) & m
    pen = torch.where(on, F.relu(tau_pos - h), h.new_zeros(())) + torch.where(off, F.relu(h - tau_neg), h.new_zeros(()))
    return pen.sum() / (on.sum() + off.sum()).clamp(min=1)
