"""FPF and k-FPF: fine-tune only the parameters that forgetting moves, on a small buffer.

Zhao et al., "Does Continual Learning Equally Forget All Parameters?", ICML 2023. Their analysis: the drift between
tasks concentrates in a few modules, so instead of replaying all along, *Forgetting Prioritized Finetuning* learns the
tasks with plain fine-tuning and then, once, fine-tunes only the modules that moved most on a small buffer M:

    S = top-n modules by  sum over tasks of ||theta_after_t - theta_before_t|| / ||theta_before_t||
    after the last task:  minimise NLL_mean(M) over theta_S only (every other parameter frozen)

k-FPF repeats that consolidation during training; here at task granularity: after every ``every``-th task (and after
the last), so ``every = 0`` is FPF. M holds at most ``buffer_size`` items, an equal share of each task learned so far
(items a forget request removed are left out). Each consolidation trains with the same settings as a task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .base import Strategy, _items_key, memory_sample, register_strategy
from .sequential import TaskNLL


def module_of(param_name: str) -> str:
    return re.sub(r"\.(weight|bias)$", "", param_name)


@dataclass
class SelectedNLL(TaskNLL):
    """``NLL_mean`` with only the parameters of ``modules`` trainable (restored in ``finish``)."""

    name = "cl-fpf"

    def __post_init__(self):
        self.modules: set[str] = set()

    def setup(self, model, tokenizer, data):
        for n, p in model.named_parameters():
            p.requires_grad_(module_of(n) in self.modules)
        return data

    def finish(self, model):
        for p in model.parameters():
            p.requires_grad_(True)


@register_strategy("fpf")
@dataclass
class FPF(Strategy):
    n_modules: int = 4
    buffer_size: int = 20
    every: int = 0
    seed: int = 0
    bounds = {"n_modules": (1, None), "buffer_size": (1, None), "every": (0, None)}

    def __post_init__(self):
        self.seen: list[list] = []
        self.moved: dict[str, float] = {}
        self._before: dict[str, torch.Tensor] = {}

    def stages(self, tasks):
        out = []
        for i, t in enumerate(tasks):
            out.append((t.name, t.items))
            last = i == len(tasks) - 1
            if last or (self.every and (i + 1) % self.every == 0):
                out.append((f"consolidate-{t.name}", []))  # the buffer is drawn when the stage's data is asked for
        return out

    def data(self, items):
        return {"train": items or memory_sample(self.seen, self.buffer_size, self.seed)}

    def selected(self) -> set[str]:
        return set(sorted(self.moved, key=lambda m: -self.moved[m])[:self.n_modules])

    def method(self, stage=""):
        if not stage.startswith("consolidate"):
            return TaskNLL()
        m = SelectedNLL()
        m.modules = self.selected()
        return m

    def begin(self, model, tokenizer, general):
        self._before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}

    def after_stage(self, model, tokenizer, items):
        now = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
        if items:  # a task, not a consolidation: record how far each module moved
            self.seen.append(list(items))
            for n, p in now.items():
                b = self._before[n]
                change = float((p - b).norm() / b.norm().clamp(min=1e-12))
                self.moved[module_of(n)] = self.moved.get(module_of(n), 0.0) + change
        self._before = now

    def drop(self, items, model=None):
        gone = _items_key(items)
        self.seen = [kept for kept in ([it for it in s if id(it) not in gone] for s in self.seen) if kept]
        if model is not None:  # the forget's own weight change is not forgetting between tasks
            self._before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
