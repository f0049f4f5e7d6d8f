"""What a continual strategy is, and the registry that finds one by name.

A strategy is a dataclass of hyperparameters that says, for each stage of a task sequence, what to train on and with
which loss, and what to remember afterwards:

* ``stages(tasks)``: the training stages (one per task; multi-task training makes one of everything);
* ``data(items)``: the streams of one stage (``{"train": items}``, plus ``"retain"`` for a replay buffer);
* ``method(stage)``: the ``ContinualMethod`` (an ``engine`` method whose primary stream is ``train``) that trains it;
* ``begin(model, tokenizer, general)``: once, with the starting model and the general-knowledge items;
* ``after_stage(model, tokenizer, items)``: update buffers, anchors, Fisher information;
* ``drop(items, model)``: a forget request removed these items: they must never be replayed again, and nothing may
  pull the model back to its weights from before the forget.

``ContinualMethod.loss`` calls the run's probe (continual evaluation every k steps) before computing the strategy's
``objective``, so the engine's loop is the one that trains every strategy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import ConfigError
from ...methods.base import Method, _coerce, hyperparameters, method_key

STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str):
    """Class decorator: make a strategy available under ``name`` (matched like method names)."""

    def wrap(cls):
        cls.name = name
        STRATEGIES[method_key(name)] = cls
        return cls

    return wrap


@dataclass
class ContinualMethod(Method):
    """A training loss for one stage: ``objective`` plus the probe's call. Not in the unlearning registry."""

    primary = "train"
    name: ClassVar[str] = "continual"
    probe: ClassVar[Any] = None  # set per instance by the runner: a callable(model) run before every loss

    def loss(self, model, batch, ref):
        if self.probe is not None:
            self.probe(model)
        return self.objective(model, batch, ref)

    def objective(self, model, batch, ref):
        raise NotImplementedError


def _items_key(items) -> set[int]:
    return {id(it) for it in items}


def memory_sample(groups: list[list], size: int, seed: int) -> list:
    """A replay memory of at most ``size`` items, an equal share of each group chosen with a seeded generator
    (every item when ``size`` is 0)."""
    import random

    if not size:
        return [it for items in groups for it in items]
    share = max(1, size // max(1, len(groups)))
    rng = random.Random(seed)
    return [it for items in groups for it in rng.sample(items, min(share, len(items)))][:size]


@dataclass
class Strategy:
    name: ClassVar[str] = ""
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}

    def stages(self, tasks) -> list[tuple[str, list]]:
        """``(name, items)`` per stage; a stage named ``consolidate...`` follows a task and is not one (FPF)."""
        return [(t.name, t.items) for t in tasks]

    def data(self, items: list) -> dict[str, list]:
        return {"train": items}

    def method(self, stage: str = "") -> ContinualMethod:
        raise NotImplementedError

    def begin(self, model, tokenizer, general: list) -> None:
        """Called once before the first stage, with the starting model and the general-knowledge items."""

    def after_stage(self, model, tokenizer, items: list) -> None:
        """Called after each stage is trained."""

    def drop(self, items: list, model=None) -> None:
        """A forget request unlearned ``items`` (``model`` is the model after it): remove them from anything this
        strategy keeps to train on later, and re-anchor anything that would pull the model back to before."""

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for key, (lo, hi) in self.bounds.items():
            v = getattr(self, key)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"strategy {self.name}: hyperparameter '{key}' = {v} is out of range "
                                  f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")


def make_strategy(name: str, **hparams) -> Strategy:
    """Instantiate a registered strategy, refusing unknown names and hyperparameters with one clear line."""
    cls = STRATEGIES.get(method_key(name))
    if cls is None:
        known = ", ".join(sorted(c.name for c in STRATEGIES.values()))
        raise ConfigError(f"unknown strategy '{name}' (known: {known})")
    known = hyperparameters(cls)
    for key in hparams:
        if key not in known:
            raise ConfigError(f"strategy {cls.name}: unknown hyperparameter '{key}' (known: "
                              f"{', '.join(known) or 'none'})")
    strategy = cls(**{k: _coerce(cls, k, v, known[k]) for k, v in hparams.items()})
    strategy.validate()
    return strategy
