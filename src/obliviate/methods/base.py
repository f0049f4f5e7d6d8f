"""What a method is, and the registry that finds one by name.

A method is a small dataclass: its fields are its hyperparameters (with the defaults of the paper or the anchor
toolkit), ``loss`` computes the training loss of one batch, and the docstring gives the formula and the paper.
The engine knows nothing about any single method; it reads three class attributes:

* ``uses_retain``: the engine pairs each forget batch with a retain batch (``batch["retain"]``);
* ``reference``: ``"none"``, ``"logprobs"`` (the frozen starting model's sequence log-probs over the forget set,
  computed once and cached) or ``"model"`` (the frozen model is kept for full distributions, e.g. the KL retain loss);
* ``primary``: the name of the stream the engine fills from the main data (``"forget"``, or ``"train"`` for fine-tuning);
* ``reference_streams``: the streams whose reference log-probs are cached (default the forget stream);
* ``needs_qa``: empty, or what a method built on question-answer items needs (refused on a document corpus);
* ``whole_model``: empty, or the whole-model state the method keeps (refused when FSDP or DeepSpeed shard the weights).

Streams other than the primary and ``retain`` are *aligned* with the primary: item i of stream ``forget_idk`` goes
with forget item i (an alternate answer, say). ``setup`` may add such streams, or freeze parameters, before the
optimizer is built. A method that edits weights without a training loop (task vectors, dampening) sets
``trains = False`` and implements ``apply``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ConfigError

METHODS: dict[str, type[Method]] = {}


def method_key(name: str) -> str:
    """How method names are matched: case, spaces and punctuation do not count ("CE-U" = "CEU" = "ceu")."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def register(name: str):
    """Class decorator: make a method available under ``name`` (matched by ``method_key``)."""

    def wrap(cls):
        cls.name = name
        METHODS[method_key(name)] = cls
        return cls

    return wrap


@dataclass
class Method:
    name: ClassVar[str] = ""
    uses_retain: ClassVar[bool] = False
    reference: ClassVar[str] = "none"
    primary: ClassVar[str] = "forget"
    reference_streams: ClassVar[tuple[str, ...]] = ("forget",)
    trains: ClassVar[bool] = True
    # hyperparameter -> (low, high) inclusive bounds checked by validate(); None means unbounded on that side
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    # what a method built on question-answer structure needs (non-empty): it is refused on a document corpus
    needs_qa: ClassVar[str] = ""
    # what whole-model state the method keeps (non-empty): refused under FSDP/DeepSpeed sharding (engine.distributed)
    whole_model: ClassVar[str] = ""

    def loss(self, model, batch: dict, ref) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def setup(self, model, tokenizer, data: dict) -> dict:
        """Called once before training, before the optimizer sees the parameters; may return extra aligned streams."""
        return data

    def apply(self, model, tokenizer, data: dict, cfg, run_dir) -> None:
        """For methods with ``trains = False``: edit ``model`` in place instead of a training loop."""
        raise NotImplementedError

    def finish(self, model) -> None:
        """Called once on the trained (or edited) model before it is returned: merge adapters, remove hooks."""

    def needs_reference(self) -> str:
        """What this configured instance needs from the frozen model (subclasses may depend on hyperparameters)."""
        return self.reference

    def validate(self) -> None:
        for key, (lo, hi) in self.bounds.items():
            v = getattr(self, key)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                raise ConfigError(f"method {self.name}: hyperparameter '{key}' = {v} is out of range {rng}")
        for key, allowed in self.choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method {self.name}: hyperparameter '{key}' = {getattr(self, key)!r} must be one of "
                                  f"{', '.join(allowed)}")

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # method-owned state (dual variables, bases, factors) travels with checkpoints
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def hyperparameters(cls: type[Method]) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _number(method: str, key: str, value: Any, kind: type):
    where = f"method {method}: hyperparameter '{key}' = {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{where} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} is not a finite number")
    if kind is int:
        if number != int(number) or abs(number) > 2**53:
            raise ConfigError(f"{where} is not a whole number")
        return int(number)
    return number


def _coerce(cls: type[Method], key: str, value: Any, default: Any) -> Any:
    """``value`` (text from the command line, anything from YAML) as the type of ``default``, or a ConfigError."""
    if isinstance(default, bool):
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.strip().lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"method {cls.name}: hyperparameter '{key}' = {value!r} should be true or false")
        return value
    if isinstance(default, (int, float)):
        return _number(cls.name, key, value, type(default))
    if isinstance(default, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"method {cls.name}: hyperparameter '{key}' = {value!r} should be text")
    return value


def make_method(name: str, **hparams) -> Method:
    """Instantiate a registered method, rejecting unknown names and hyperparameters with one clear line; values are
    converted to each hyperparameter's type, and one of the wrong kind is refused by name."""
    cls = METHODS.get(method_key(name))
    if cls is None:
        known = sorted((c.name for c in METHODS.values() if c.primary == "forget"), key=str.lower)
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(known)})")
    known = hyperparameters(cls)
    for key in hparams:
        if key not in known:
            raise ConfigError(f"method {cls.name}: unknown hyperparameter '{key}' (known: {', '.join(known) or 'none'})")
    method = cls(**{key: _coerce(cls, key, value, known[key]) for key, value in hparams.items()})
    method.validate()
    return method


class RetainTerm:
    """Mixin for methods whose loss is ``gamma * forget + alpha * retain``, with fields ``gamma``, ``alpha`` and
    ``retain_loss`` (``losses.RETAIN_LOSSES``): the retain stream is used only when ``alpha > 0`` and the retain loss is
    not ``none``, and the KL retain loss needs the frozen model. List it before ``Method``."""

    @property
    def uses_retain(self) -> bool:
        return self.alpha > 0 and self.retain_loss != "none"

    def needs_reference(self) -> str:
        from .losses import KL_RETAIN_LOSSES

        return "model" if self.uses_retain and self.retain_loss in KL_RETAIN_LOSSES else self.reference

    def with_retain(self, forget: torch.Tensor, model, batch: dict, ref, **logs: float
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(gamma * forget + alpha * retain, logs)``; the retain term is 0 when it is off."""
        from .losses import retain_loss

        r = retain_loss(self.retain_loss, model, batch["retain"], ref) if self.uses_retain else forget * 0
        return self.gamma * forget + self.alpha * r, {"forget_loss": forget.item(), "retain_loss": r.item(), **logs}
