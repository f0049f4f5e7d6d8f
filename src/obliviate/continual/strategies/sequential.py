"""Plain sequential fine-tuning (the baseline that forgets) and multi-task training on everything (the upper reference).

Sequential: for task t, minimise ``NLL_mean(D_t)`` starting from the model left by task t-1; nothing of earlier tasks
is seen again, so what they needed is overwritten: catastrophic forgetting (McCloskey & Cohen, "Catastrophic
interference in connectionist networks", 1989). Multi-task: one stage minimising ``NLL_mean(D_1 u ... u D_T)``, the
joint-training reference continual methods are measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...logprobs import forward_logits, nll_mean
from .base import ContinualMethod, Strategy, register_strategy


@dataclass
class TaskNLL(ContinualMethod):
    """``NLL_mean`` of the current stage's items."""

    name = "cl-nll"

    def objective(self, model, batch, ref):
        loss = nll_mean(forward_logits(model, batch["train"]), batch["train"]["labels"])
        return loss, {"nll": loss.item()}


@register_strategy("sequential")
@dataclass
class Sequential(Strategy):
    def method(self, stage=""):
        return TaskNLL()


@register_strategy("multitask")
@dataclass
class Multitask(Strategy):
    def stages(self, tasks):
        return [("all", [it for t in tasks for it in t.items])]

    def method(self, stage=""):
        return TaskNLL()
