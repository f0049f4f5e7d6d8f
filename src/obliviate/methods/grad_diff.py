"""Gradient difference (GradDiff): gradient ascent on the forget set, descent on the retain set.

    L = gamma * (-NLL_mean(forget)) + alpha * L_retain

L_retain is ``nll`` (token-mean NLL of the retain batch), ``kl`` (KL(p_ref || p_theta) over retain answer tokens, to
the frozen starting model) or ``kl_batchmean`` (open-unlearning's KL: every position, divided by batch x length). Liu et al. 2022, "Continual Learning and Private Unlearning"; defaults from open-unlearning.
"""

from dataclasses import dataclass

from ..logprobs import nll_mean_of
from .base import Method, register
from .losses import KL_RETAIN_LOSSES, RETAIN_LOSSES, retain_loss


@register("GradDiff")
@dataclass
class GradDiff(Method):
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    uses_retain = True
    bounds = {"gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def needs_reference(self):
        return "model" if self.retain_loss in KL_RETAIN_LOSSES else "none"

    def loss(self, model, batch, ref):
        forget_nll = nll_mean_of(model, batch["forget"])
        r = retain_loss(self.retain_loss, model, batch["retain"], ref)
        loss = self.gamma * -forget_nll + self.alpha * r
        return loss, {"forget_nll": forget_nll.item(), "retain_loss": r.item()}
