"""CE-U: cross-entropy to the model's own distribution with the answer token removed (Yang 2025).

"CE-U: Cross Entropy Unlearning".

    q_t = softmax(z_t with z_t[y_t] := -inf)     (detached: the model's own distribution without the answer token)
    L_f = mean over answer positions after the first n of CE(p_theta,t, q_t)
    L   = gamma * L_f + alpha * L_retain

The gradient p - q lowers the answer token and keeps the others in their current proportions; it stays bounded as
p(y_t) -> 0, unlike gradient ascent. The first ``ignore_first_n`` answer tokens are left alone. Defaults
(open-unlearning CEU): ignore_first_n 1, gamma 1, no retain term (alpha 0); lr 1e-5.
"""

from dataclasses import dataclass

from ..logprobs import forward_logits
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, ceu_loss


@register("CEU")
@dataclass
class CEU(RetainTerm, Method):
    ignore_first_n: int = 1
    gamma: float = 1.0
    alpha: float = 0.0
    retain_loss: str = "nll"

    bounds = {"ignore_first_n": (0, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def loss(self, model, batch, ref):
        f = batch["forget"]
        forget = ceu_loss(forward_logits(model, f), f["labels"], self.ignore_first_n)
        return self.with_retain(forget, model, batch, ref)
