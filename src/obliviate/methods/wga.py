"""WGA: weighted gradient ascent, each answer token weighted by p^beta (Wang et al. 2025).

"Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", ICLR 2025.

    w_t = p_theta(y_t|x, y_<t)^beta   (detached)
    L_f = -mean_t (w_t * NLL_t)        over the batch's answer tokens
    L   = gamma * L_f + alpha * L_retain

Tokens the model has already forgotten (small p_t) stop pushing, so the ascent does not run away.
Defaults (open-unlearning WGA.yaml): beta 1, gamma 1, alpha 1, retain NLL; lr 1e-5.
"""

from dataclasses import dataclass

from ..logprobs import forward_logits
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, wga_loss


@register("WGA")
@dataclass
class WGA(RetainTerm, Method):
    beta: float = 1.0
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    bounds = {"beta": (0, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def loss(self, model, batch, ref):
        f = batch["forget"]
        forget = wga_loss(forward_logits(model, f), f["labels"], self.beta)
        return self.with_retain(forget, model, batch, ref)
