"""Experience replay of earlier tasks' items.

Loss for task t: ``NLL_mean(B_t) + alpha * NLL_mean(M)`` where each batch of the current task is paired with a batch
drawn from the memory ``M`` of earlier tasks' items (Chaudhry et al., "On Tiny Episodic Memories in Continual
Learning", 2019). ``M`` holds at most ``buffer_size`` items, an equal share of each earlier task chosen with a seeded
generator (0 = every earlier item), plus, with ``general``, the general-knowledge items (so a request stream keeps
its utility). Items a forget request removed are taken out of ``M`` and never replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...logprobs import forward_logits, nll_mean
from .base import ContinualMethod, Strategy, _items_key, memory_sample, register_strategy


@dataclass
class ReplayNLL(ContinualMethod):
    """``NLL_mean(train) + alpha * NLL_mean(retain)``; the retain stream is the replay memory."""

    name = "cl-replay"
    alpha: float = 1.0
    has_memory: bool = True

    @property
    def uses_retain(self) -> bool:
        return self.has_memory

    def objective(self, model, batch, ref):
        task = nll_mean(forward_logits(model, batch["train"]), batch["train"]["labels"])
        if not self.has_memory:
            return task, {"nll": task.item()}
        mem = nll_mean(forward_logits(model, batch["retain"]), batch["retain"]["labels"])
        return task + self.alpha * mem, {"nll": task.item(), "replay_nll": mem.item()}


@register_strategy("replay")
@dataclass
class Replay(Strategy):
    buffer_size: int = 0
    alpha: float = 1.0
    seed: int = 0
    general: bool = False
    bounds = {"buffer_size": (0, None), "alpha": (0, None)}

    def __post_init__(self):
        self.seen: list[list] = []  # one list of items per learned task
        self.general_items: list = []

    def begin(self, model, tokenizer, general):
        self.general_items = list(general) if self.general else []

    def memory(self) -> list:
        """The replay memory: an equal share of each earlier task (all of them when ``buffer_size`` is 0)."""
        return memory_sample(self.seen, self.buffer_size, self.seed) + self.general_items

    def data(self, items):
        return {"train": items, "retain": self.memory()}

    def method(self, stage=""):
        return ReplayNLL(alpha=self.alpha, has_memory=bool(self.memory()))

    def after_stage(self, model, tokenizer, items):
        self.seen.append(list(items))

    def drop(self, items, model=None):
        gone = _items_key(items)
        self.seen = [kept for kept in ([it for it in s if id(it) not in gone] for s in self.seen) if kept]
