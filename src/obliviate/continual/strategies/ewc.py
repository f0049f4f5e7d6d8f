"""EWC: elastic weight consolidation, a Fisher-weighted anchor to the weights each earlier task ended with.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017, in its online form
(Schwarz et al., "Progress & Compress", ICML 2018). Loss for task t:

    L = NLL_mean(D_t) + (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2

``theta*`` is the model after task t-1 and ``F`` the diagonal empirical Fisher information accumulated over earlier
tasks, ``F <- gamma * F + F_t`` with ``F_t,i = mean over the task's items x of (d NLL(x) / d theta_i)^2`` (one item per
backward pass, at most ``fisher_items`` of them). Parameters a task needed get a stiff spring; the rest move freely.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ...data.collate import PromptFormat, pad_batch
from ...logprobs import forward_logits, nll_mean
from ..losses import ewc_penalty
from .base import ContinualMethod, Strategy, register_strategy


@dataclass
class EWCLoss(ContinualMethod):
    name = "cl-ewc"
    lam: float = 0.0

    def __post_init__(self):
        self.anchors: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}

    def objective(self, model, batch, ref):
        task = nll_mean(forward_logits(model, batch["train"]), batch["train"]["labels"])
        if not self.anchors:
            return task, {"nll": task.item()}
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        pen = ewc_penalty(params, self.anchors, self.fisher, self.lam)
        return task + pen, {"nll": task.item(), "ewc": pen.item()}


def empirical_fisher(model, tokenizer, items, max_items: int = 64, seed: int = 0, max_length: int = 256
                     ) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean over (at most ``max_items``) items of the squared gradient of each item's NLL."""
    picked = list(items) if len(items) <= max_items else random.Random(seed).sample(list(items), max_items)
    fmt = PromptFormat(tokenizer, max_length)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for it in picked:
        batch = {k: v.to(device) for k, v in pad_batch([fmt.encode(it.question, it.answer)],
                                                      tokenizer.pad_token_id).items()}
        model.zero_grad(set_to_none=True)
        nll_mean(forward_logits(model, batch), batch["labels"]).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().square() / len(picked)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher


@register_strategy("ewc")
@dataclass
class EWC(Strategy):
    lam: float = 1000.0
    gamma: float = 1.0
    fisher_items: int = 64
    bounds = {"lam": (0, None), "gamma": (0, 1), "fisher_items": (1, None)}

    def __post_init__(self):
        self.anchors: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}

    def method(self, stage=""):
        m = EWCLoss(lam=self.lam)
        m.anchors, m.fisher = self.anchors, self.fisher
        return m

    def after_stage(self, model, tokenizer, items):
        new = empirical_fisher(model, tokenizer, items, self.fisher_items)
        self.fisher = {n: self.gamma * self.fisher.get(n, 0) + f for n, f in new.items()}
        self.anchors = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def drop(self, items, model=None):
        """Re-anchor at the model after the forget: the spring must not pull the forgotten facts back."""
        if model is not None and self.anchors:
            self.anchors = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
