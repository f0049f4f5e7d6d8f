"""IdkDPO: DPO preferring an "I don't know" answer to the true one (TOFU, Maini et al. 2024).

TOFU (arXiv 2401.06121), after DPO (Rafailov et al. 2023), with open-unlearning's 2/beta scaling.

    r_w = log pi_theta(y_idk|x) - log pi_ref(y_idk|x),   r_l = log pi_theta(y|x) - log pi_ref(y|x)   (sequence sums)
    L_f = -(2/beta) * mean_batch log sigmoid(beta * (r_w - r_l))
    L   = gamma * L_f + alpha * L_retain

pi_ref is the frozen starting model; its log-probs of both answers are cached once (streams ``forget`` and
``forget_idk``). The refusals come from ``idk_file`` as in IdkNLL. Defaults (open-unlearning DPO): beta 0.1, gamma 1,
alpha 1, retain NLL.
"""

from dataclasses import dataclass

from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES
from .shared import dpo_towards, idk_stream


@register("IdkDPO")
@dataclass
class IdkDPO(RetainTerm, Method):
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    idk_file: str = ""
    seed: int = 0

    reference = "logprobs"
    reference_streams = ("forget", "forget_idk")
    needs_qa = "question-answer items (each forget question gets an \"I don't know\" answer)"
    bounds = {"beta": (1e-6, None), "gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def setup(self, model, tokenizer, data):
        return {**data, "forget_idk": idk_stream(data["forget"], self.idk_file, self.seed)}

    def loss(self, model, batch, ref):
        forget, lose, win = dpo_towards(model, batch, ref, "forget_idk", self.beta)
        return self.with_retain(forget, model, batch, ref, forget_logprob=lose.mean().item(),
                                idk_logprob=win.mean().item())
