"""Refresh learning: unlearn the current batch a little, then relearn it, on top of experience replay.

Wang et al., "A Unified and General Framework for Continual Learning", ICLR 2024. Each step first *unlearns* the
current batch B with one noisy gradient-ascent step, then takes the usual step on the replay loss from there:

    theta' = theta + gamma * grad NLL_mean(B; theta) + sigma * eps,   eps ~ N(0, I)
    theta  <- optimizer step on  NLL_mean(B; theta') + alpha * NLL_mean(M; theta')

The paper preconditions the ascent with the inverse Fisher, ``gamma F^{-1} grad``, and scales the noise by it; here F
is the identity (a plain ascent step), which keeps the step cheap and its size set by ``gamma`` alone. The unlearning
step flattens the loss around the current batch, the paper's reading of why it forgets less. The memory is replay's
(``buffer_size``, forgotten items left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...logprobs import forward_logits, nll_mean
from .base import register_strategy
from .replay import Replay, ReplayNLL


def unlearn_step(params: list[torch.Tensor], grads: list[torch.Tensor], gamma: float, sigma: float,
                 generator: torch.Generator | None = None) -> None:
    """``theta += gamma * grad + sigma * eps`` in place (the refresh's unlearning half)."""
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g, alpha=gamma)
            if sigma:
                p.add_(torch.randn(p.shape, generator=generator).to(p.device, p.dtype), alpha=sigma)


@dataclass
class RefreshNLL(ReplayNLL):
    name = "cl-refresh"
    gamma: float = 1e-3
    sigma: float = 0.0
    seed: int = 0

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)

    def objective(self, model, batch, ref):
        params = [p for p in model.parameters() if p.requires_grad]
        b = batch["train"]
        grads = torch.autograd.grad(nll_mean(forward_logits(model, b), b["labels"]), params, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for p, g in zip(params, grads)]
        unlearn_step(params, grads, self.gamma, self.sigma, self.generator)
        return super().objective(model, batch, ref)


@register_strategy("refresh")
@dataclass
class Refresh(Replay):
    gamma: float = 1e-3
    sigma: float = 0.0
    bounds = {**Replay.bounds, "gamma": (0, None), "sigma": (0, None)}

    def method(self, stage=""):
        return RefreshNLL(alpha=self.alpha, has_memory=bool(self.memory()), gamma=self.gamma, sigma=self.sigma,
                          seed=self.seed)
