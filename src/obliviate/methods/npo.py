"""Negative Preference Optimization (NPO; Zhang, Lin, Bai, Mei, 2024, arXiv 2404.05868).

    r   = log pi_theta(y|x) - log pi_ref(y|x)          (sums over answer tokens, not length-normalised)
    L_f = -(2/beta) * mean_batch log sigmoid(-beta * r)
    L   = gamma * L_f + alpha * L_retain

pi_ref is the frozen starting model; its log-probs over the forget set never change, so they are computed once before
training and looked up by item index. The gradient is gradient ascent's, weighted by 2 pi_theta^beta /
(pi_theta^beta + pi_ref^beta), which vanishes as pi_theta -> 0: NPO slows down instead of collapsing.
Defaults (open-unlearning): beta 0.1, gamma 1, alpha 1, retain NLL.
"""

from dataclasses import dataclass

from ..logprobs import sequence_logprob_of
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, npo_loss


@register("NPO")
@dataclass
class NPO(RetainTerm, Method):
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"

    reference = "logprobs"
    bounds = {"beta": (1e-6, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def loss(self, model, batch, ref):
        f = batch["forget"]
        logp, _ = sequence_logprob_of(model, f)
        forget = npo_loss(logp, ref.sequence_logprob("forget", f), self.beta)
        return self.with_retain(forget, model, batch, ref, forget_logprob=logp.mean().item())
