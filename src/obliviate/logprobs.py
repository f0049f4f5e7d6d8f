"""The one place where (logits, labels) become per-token log-probabilities.

Labels follow the Hugging Face convention: ``labels[:, t]`` is the token at position ``t`` and -100 marks positions that
are not targets (prompt, padding). The shift is done here once: the logits at ``t`` predict the label at ``t + 1``.
Label -100 is never used as an index (it is clamped to 0 and then masked), unlike code that lets it wrap to a real token.

Naming: a "sequence" log-prob is the *sum* over target tokens; functions that average say ``mean`` in their name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (logits[:, :-1], labels[:, 1:], mask) with mask True where the shifted label is a target."""
    shifted_labels = labels[:, 1:]
    return logits[:, :-1], shifted_labels, shifted_labels != IGNORE


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(label) in float32, zero at non-target positions, and the target mask; both shape (B, T-1)."""
    lg, lb, mask = shift(logits, labels)
    logp = F.log_softmax(lg.float(), dim=-1)
    picked = logp.gather(-1, lb.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of target-token log-probs per sequence, and the number of target tokens per sequence."""
    lp, mask = token_logprobs(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def nll_mean(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood over all target tokens of the batch (what ``model(..., labels).loss`` is)."""
    lp, mask = token_logprobs(logits, labels)
    return -lp.sum() / mask.sum().clamp(min=1)


def forward_logits(model, batch: dict) -> torch.Tensor:
    """Logits of a batch, without asking the model to compute its own loss."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
