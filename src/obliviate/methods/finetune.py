"""Supervised fine-tuning, the recipe that makes the target and the oracle: minimise NLL_mean(train)."""

from dataclasses import dataclass

from ..logprobs import forward_logits, nll_mean
from .base import Method, register


@register("finetune")
@dataclass
class Finetune(Method):
    primary = "train"

    def loss(self, model, batch, ref):
        loss = nll_mean(forward_logits(model, batch["train"]), batch["train"]["labels"])
        return loss, {"nll": loss.item()}
