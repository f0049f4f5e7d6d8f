"""Gradient ascent (GA): climb the forget set's negative log-likelihood.

    L = -NLL_mean(forget)

NLL_mean is the token mean over the batch's answer tokens. The simplest baseline (Jang et al. 2023, "Knowledge
Unlearning for Mitigating Privacy Risks in Language Models"); it forgets fast and collapses utility soon after.
"""

from dataclasses import dataclass

from ..logprobs import nll_mean_of
from .base import Method, register


@register("GradAscent")
@dataclass
class GradAscent(Method):
    def loss(self, model, batch, ref):
        forget_nll = nll_mean_of(model, batch["forget"])
        return -forget_nll, {"forget_nll": forget_nll.item()}
