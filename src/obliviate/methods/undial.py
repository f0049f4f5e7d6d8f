"""UNDIAL: distil the frozen model's logits with the answer token dampened by beta (Dong et al. 2024).

"UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models", arXiv 2402.10052.

    q_t = softmax(z_ref,t - beta * onehot(y_t))                 (teacher: the frozen starting model)
    L_f = mean over answer positions of CE(p_theta,t, q_t)
    L   = gamma * L_f + alpha * L_retain

Only answer-predicting positions count by default (``reduction="answer"``); ``reduction="all"`` averages over every
position of the padded batch as open-unlearning does (which makes the forget term smaller per unit of gamma; the
anchor also dampens vocabulary id V-100 at prompt and padding positions, where label -100 wraps around: not
reproduced). Defaults (open-unlearning UNDIAL.yaml): beta 10, gamma 1, alpha 0 (no retain term
unless asked), lr 1e-4.
"""

from dataclasses import dataclass

from ..logprobs import forward_logits
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES, undial_loss


@register("UNDIAL")
@dataclass
class UNDIAL(RetainTerm, Method):
    beta: float = 10.0
    gamma: float = 1.0
    alpha: float = 0.0
    retain_loss: str = "nll"
    reduction: str = "answer"

    reference = "model"
    reference_streams = ()
    bounds = {"beta": (0, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES, "reduction": ("answer", "all")}

    def loss(self, model, batch, ref):
        f = batch["forget"]
        forget = undial_loss(forward_logits(model, f), ref.logits(f), f["labels"], self.beta, self.reduction)
        return self.with_retain(forget, model, batch, ref)
