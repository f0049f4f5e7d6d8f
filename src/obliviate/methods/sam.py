"""SAM-NPO: sharpness-aware unlearning, the forget loss minimised under the worst nearby weights.

Fan, Jia, Zhang, Ramakrishna, Hong, Liu 2025 (ICML), "Towards LLM Unlearning Resilient to Relearning Attacks: A
Sharpness-Aware Minimization Perspective and Beyond", arXiv 2502.05374. A relearning attack is a small weight change
that brings the forget loss back down; unlearning that stays forgotten under it solves the min-max problem

    min_theta  max_{||delta|| <= rho}  gamma * L_f(theta + delta)  +  alpha * L_r(theta)

with L_f NPO's forget loss (the paper's best variant, "NPO+SAM"; ``npo.py`` has its formula) and L_r the retain loss.
The inner maximum is taken to first order (Foret et al. 2021's SAM), one extra forward and backward pass per step:

    g     = grad L_f(theta)                              (the forget gradient at the current weights)
    delta = rho * g / ||g||                              (over every trainable weight together)
    update direction = gamma * grad L_f(theta + delta) + alpha * grad L_r(theta)

The weights are moved to theta + delta for the second forget pass only and then copied back bit for bit, so the retain
loss and the optimizer see theta. ``loss`` returns a surrogate whose gradient is that direction and whose value is the
perturbed objective (``losses.gradient_surrogate``). Only trainable parameters are perturbed: under LoRA, delta lives
in the adapters. The second forget pass replays the random state of the first, so under dropout both passes use the
same masks and delta is the ascent direction of the very loss whose gradient is then taken. ``rho = 0`` is NPO itself.

Defaults: rho 0.01 (the authors' released code), NPO beta 0.1, gamma 1, alpha 1, retain NLL, as NPO's. On the demo's
tiny model, NPO's preset alpha 5 applies here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..logprobs import sequence_logprob_of
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, gradient_surrogate, npo_loss
from .shared import replayed, rng_state


@register("SAM-NPO")
@dataclass
class SamNPO(RetainTerm, Method):
    rho: float = 0.01
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    reference = "logprobs"
    bounds = {"rho": (0, None), "beta": (1e-6, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}
    whole_model = "its weight perturbation, normalised over every trainable weight at once"

    def forget_loss(self, model, f, ref_logp) -> tuple[torch.Tensor, torch.Tensor]:
        """NPO's forget loss at the model's current weights, and the sequence log-probs it came from."""
        logp, _ = sequence_logprob_of(model, f)
        return npo_loss(logp, ref_logp, self.beta), logp

    def loss(self, model, batch, ref):
        f = batch["forget"]
        ref_logp = ref.sequence_logprob("forget", f)
        rng = rng_state(f["input_ids"].device)  # the first forget pass's dropout masks, replayed for the second
        clean, logp = self.forget_loss(model, f, ref_logp)
        logs = {"forget_logprob": logp.mean().item(), "forget_loss_clean": clean.item()}
        if self.rho == 0:
            return self.with_retain(clean, model, batch, ref, **logs)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(clean, params, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        with torch.no_grad():
            norm = torch.sqrt(sum(g.double().square().sum() for g in grads))
        logs["forget_grad_norm"] = float(norm)
        if norm == 0:  # no ascent direction: the forget gradient here is zero, and so is the update's forget part
            surrogate = gradient_surrogate(params, grads, clean.detach())
            return self.with_retain(surrogate, model, batch, ref, **logs)
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.add_(g, alpha=self.rho / float(norm))
            with replayed(rng):
                perturbed, _ = self.forget_loss(model, f, ref_logp)
            sharp = torch.autograd.grad(perturbed, params, allow_unused=True)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        sharp = [g if g is not None else torch.zeros_like(p) for g, p in zip(sharp, params)]
        logs["forget_loss_perturbed"] = perturbed.item()
        surrogate = gradient_surrogate(params, sharp, perturbed.detach())
        return self.with_retain(surrogate, model, batch, ref, **logs)
