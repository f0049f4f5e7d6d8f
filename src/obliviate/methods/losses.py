"""Forget and retain losses as plain functions of log-probs, so they compose in a few lines.

Each function takes tensors, not models: ``npo_loss(logp_theta, logp_ref, beta)`` can be called on any numbers a user
has. Methods in this package are thin wrappers that run the forward passes and call these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..logprobs import forward_logits, nll_mean, shift


def npo_loss(logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: -(2/beta) * mean log sigmoid(-beta * (log pi_theta(y|x) - log pi_ref(y|x))), sequence log-prob sums."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp_theta - logp_ref)).mean()


def simnpo_loss(logp_theta: torch.Tensor, n_tokens: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO: -(2/beta) * mean log sigmoid(beta * (NLL_sum/|y| - delta)); no reference model."""
    nll_per_token = -logp_theta / n_tokens.clamp(min=1)
    return -(2.0 / beta) * F.logsigmoid(beta * (nll_per_token - delta)).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) per target position, averaged over target positions only (no prompt, no padding)."""
    lg, _, mask = shift(logits, labels)
    ref_lg = ref_logits[:, :-1]
    logp = F.log_softmax(lg.float(), -1)[mask]
    ref_logp = F.log_softmax(ref_lg.float(), -1)[mask]
    if logp.numel() == 0:
        return logits.sum() * 0.0
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()


def retain_loss(kind: str, model, retain: dict, ref) -> torch.Tensor:
    """The retain term every method can use: ``nll`` (token-mean), ``kl`` (to the frozen reference) or ``none``."""
    if kind == "none":
        return torch.zeros((), device=retain["input_ids"].device)
    logits = forward_logits(model, retain)
    if kind == "nll":
        return nll_mean(logits, retain["labels"])
    if kind == "kl":
        return kl_to_reference(logits, ref.logits(retain), retain["labels"])
    raise ValueError(f"unknown retain loss {kind!r}")


RETAIN_LOSSES = ("nll", "kl", "none")
