"""IdkNLL: fine-tune the forget questions towards "I don't know" answers (TOFU, Maini et al. 2024).

    L = gamma * NLL_mean(x_f, y_idk) + alpha * L_retain

Each forget item gets one refusal y_idk, drawn once (seeded) from ``idk_file`` (default: the 100 refusals shipped in
``obliviate/resources/idontknow.txt``; TOFU's ``idontknow.jsonl`` works too) and added in ``setup`` as the aligned
stream ``forget_idk``. Defaults: gamma 1, alpha 1, retain NLL.
"""

from dataclasses import dataclass

from ..logprobs import nll_mean_of
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES
from .shared import idk_stream


@register("IdkNLL")
@dataclass
class IdkNLL(RetainTerm, Method):
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    idk_file: str = ""
    seed: int = 0

    needs_qa = "question-answer items (each forget question gets an \"I don't know\" answer)"
    bounds = {"gamma": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def setup(self, model, tokenizer, data):
        return {**data, "forget_idk": idk_stream(data["forget"], self.idk_file, self.seed)}

    def loss(self, model, batch, ref):
        idk = batch["forget_idk"]
        forget = nll_mean_of(model, idk)
        return self.with_retain(forget, model, batch, ref)
