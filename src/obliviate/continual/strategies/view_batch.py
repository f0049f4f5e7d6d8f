"""View-batch replay: replay with a recall interval, so the memory is revisited after a rest, not at every step.

Kim et al., "Do Your Best and Get Enough Rest for Continual Learning", CVPR 2025. Following the forgetting curve, a
sample recalled after a longer interval is retained better; they lengthen the recall interval of replayed samples
while keeping the same number of exposures. Here the memory M (replay's) is replayed only every ``recall_interval``
steps, with its weight scaled up by the interval so the total replay signal matches plain replay:

    L_s = NLL_mean(B_s) + [s mod r = 0] * r * alpha * NLL_mean(M_s)

with step s counted from the start of each task and r = ``recall_interval`` (r = 1 is plain replay). The paper's
second ingredient, several augmented views of a sample in one batch with a one-to-many divergence loss, has no
counterpart for QA text here and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...logprobs import forward_logits, nll_mean
from .base import register_strategy
from .replay import Replay, ReplayNLL


@dataclass
class IntervalReplayNLL(ReplayNLL):
    name = "cl-view-batch"
    recall_interval: int = 4

    def __post_init__(self):
        self.calls = 0

    def objective(self, model, batch, ref):
        step, self.calls = self.calls, self.calls + 1
        task = nll_mean(forward_logits(model, batch["train"]), batch["train"]["labels"])
        if not self.has_memory or step % self.recall_interval:
            return task, {"nll": task.item(), "replay_nll": 0.0}
        mem = nll_mean(forward_logits(model, batch["retain"]), batch["retain"]["labels"])
        return task + self.recall_interval * self.alpha * mem, {"nll": task.item(), "replay_nll": mem.item()}


@register_strategy("view-batch")
@dataclass
class ViewBatch(Replay):
    recall_interval: int = 4
    bounds = {**Replay.bounds, "recall_interval": (1, None)}

    def method(self, stage=""):
        return IntervalReplayNLL(alpha=self.alpha, has_memory=bool(self.memory()),
                                 recall_interval=self.recall_interval)
