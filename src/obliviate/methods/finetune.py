"""Supervised fine-tuning, the recipe that makes the target and the oracle: minimise NLL_mean(train)."""

from dataclasses import dataclass

from ..logprobs import nll_mean_of
from .base import Method, register


@register("finetune")
@dataclass
class Finetune(Method):
    primary = "train"

    def loss(self, model, batch, ref):
        loss = nll_mean_of(model, batch["train"])
        return loss, {"nll": loss.item()}
