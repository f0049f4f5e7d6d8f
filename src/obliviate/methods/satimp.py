"""SatImp: gradient ascent with each answer token weighted by p^beta1 (1-p)^beta2 (Yang et al. 2025).

"Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", ICML 2025.

    w_t = p_t^beta1 * (1 - p_t)^beta2   (detached),   p_t = p_theta(y_t|x, y_<t)
    L_f = -mean_t (w_t * NLL_t)          over the batch's answer tokens
    L   = gamma * L_f + alpha * L_retain

Defaults (open-unlearning SatImp.yaml): beta1 5, beta2 1, gamma 0.1, alpha 1, retain NLL; lr 1e-5. (The SatImp README
says gamma 1, alpha 0.1 instead; the anchor's yaml wins there, and here.)
"""

from dataclasses import dataclass

from ..logprobs import forward_logits
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, satimp_loss


@register("SatImp")
@dataclass
class SatImp(RetainTerm, Method):
    beta1: float = 5.0
    beta2: float = 1.0
    gamma: float = 0.1
    alpha: float = 1.0
    retain_loss: str = "nll"

    bounds = {"beta1": (0, None), "beta2": (0, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def loss(self, model, batch, ref):
        f = batch["forget"]
        forget = satimp_loss(forward_logits(model, f), f["labels"], self.beta1, self.beta2)
        return self.with_retain(forget, model, batch, ref)
