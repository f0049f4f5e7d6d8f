"""SimNPO: NPO without a reference model, length-normalised (Fan, Liu, Lin, Jia, Zhang, Mei, Liu 2024, arXiv 2410.07163).

    L_f = -(2/beta) * mean_batch log sigmoid(beta * (NLL_sum(y|x)/|y| - delta))
    L   = gamma * L_f + alpha * L_retain

delta is the paper's reward margin gamma_paper divided by beta. Defaults (open-unlearning): beta 4.5, delta 0,
gamma 0.125, alpha 1, retain NLL.
"""

from dataclasses import dataclass

from ..logprobs import sequence_logprob_of
from .base import Method, register
from .losses import KL_RETAIN_LOSSES, RETAIN_LOSSES, retain_loss, simnpo_loss


@register("SimNPO")
@dataclass
class SimNPO(Method):
    beta: float = 4.5
    delta: float = 0.0
    gamma: float = 0.125
    alpha: float = 1.0
    retain_loss: str = "nll"

    uses_retain = True
    bounds = {"beta": (1e-6, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def needs_reference(self):
        return "model" if self.retain_loss in KL_RETAIN_LOSSES else "none"

    def loss(self, model, batch, ref):
        f = batch["forget"]
        logp, n = sequence_logprob_of(model, f)
        forget = simnpo_loss(logp, n, self.beta, self.delta)
        r = retain_loss(self.retain_loss, model, batch["retain"], ref) if self.alpha else forget * 0
        return self.gamma * forget + self.alpha * r, {"forget_loss": forget.item(), "retain_loss": r.item()}
