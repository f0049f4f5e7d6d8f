"""Plain dataclasses for every knob, loaded from YAML and overridden from the command line, validated with clear errors;
and the named settings each recipe starts from (the presets at the end), so the command line can show them without
loading anything heavy."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass
class TrainConfig:
    """Optimisation settings shared by fine-tuning and unlearning."""

    lr: float = 1e-5
    epochs: float = 5.0
    max_steps: int = 0  # optimizer steps; 0 = derive from epochs
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    scheduler: str = "linear"
    seed: int = 0
    pairing: str = "random"
    max_length: int = 256
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only the final model
    loss_bound: float = 1e4  # stop if |loss| exceeds this (or is NaN/inf)

    def validate(self) -> None:
        for name in ("lr", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm"):  # loss_bound may be inf
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"option '{name}' = {value!r} must be a finite number")
        for name in ("max_steps", "batch_size", "grad_accum", "seed", "max_length", "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"option '{name}' = {value!r} must be a whole number")
        if isinstance(self.loss_bound, bool) or not isinstance(self.loss_bound, (int, float)) or self.loss_bound != \
                self.loss_bound:
            raise ConfigError(f"option 'loss_bound' = {self.loss_bound!r} must be a number")
        checks = [
            ("lr", self.lr > 0, "must be > 0"), ("epochs", self.epochs > 0 or self.max_steps > 0, "must be > 0"),
            ("max_steps", self.max_steps >= 0, "must be >= 0"), ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"), ("warmup_ratio", 0 <= self.warmup_ratio < 1,
                                                                  "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"), ("max_length", self.max_length >= 8,
                                                                       "must be >= 8"),
            ("scheduler", self.scheduler in ("constant", "linear", "cosine"), "must be constant, linear or cosine"),
            ("pairing", self.pairing in ("random", "sequential", "cyclic", "melu"),
             "must be random, sequential, cyclic or melu"),
            ("save_every", self.save_every >= 0, "must be >= 0"), ("loss_bound", self.loss_bound > 0, "must be > 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0 (0 = no clipping)"),
            ("seed", 0 <= self.seed < 2**32, "must be in [0, 2**32)"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"option '{name}' = {getattr(self, name)!r} {why}")

    def with_options(self, options: dict[str, Any] | None) -> TrainConfig:
        """A validated copy with ``options`` (field name -> value, e.g. the options a user gave) on top."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options or {}) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        cfg = dataclasses.replace(self, **(options or {}))
        cfg.validate()
        return cfg


@dataclass
class AuditConfig:
    """What the audit computes; defaults follow TOFU/open-unlearning."""

    batch_size: int = 32
    max_new_tokens: int = 64
    generate: bool = True
    mink_k: float = 0.4
    max_length: int = 256
    splits: list[str] = field(default_factory=lambda: ["forget", "retain", "holdout", "ra", "wf"])

    def validate(self) -> None:
        checks = [("batch_size", "audit_batch_size", self.batch_size, 1), ("max_new_tokens", "max_new_tokens",
                                                                             self.max_new_tokens, 1),
                  ("max_length", "max_length", self.max_length, 8)]
        for name, option, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"option '{option}' = {value!r} must be a whole number >= {low}")
        if not (isinstance(self.mink_k, (int, float)) and 0 < self.mink_k <= 1):
            raise ConfigError(f"option 'mink_k' = {self.mink_k!r} must be in (0, 1]")


def from_dict(cls, values: dict[str, Any], where: str):
    """Build dataclass ``cls`` from ``values``, naming any unknown key or wrongly typed value."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown option '{key}' (known: {', '.join(known)})")
        default = getattr(cls(), key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(default, int) and not isinstance(default, bool) and float(value) != int(value):
                ok = False
            value = type(default)(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"{where}: option '{key}' = {value!r} should be {type(default).__name__}")
        kwargs[key] = value
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file: a mapping of option names to values."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: config file is a folder, not a YAML file")
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML ({where}: {problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a date like 2024-13-45, deep nesting
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------------------ presets

# obliviate's tiny model: settings under which it memorises the synthetic benchmark in a few minutes on a 2-core CPU,
# and unlearns it in seconds.
TINY_FINETUNE = TrainConfig(lr=3e-3, epochs=20, batch_size=32, warmup_ratio=0.05, scheduler="linear")
TINY_UNLEARN = TrainConfig(lr=5e-4, epochs=5, batch_size=8, scheduler="constant", warmup_ratio=0.0)
# Fine-tuning a pretrained model on TOFU (the tiny model's learning rate would wreck it): open-unlearning uses lr 1e-5
# for 1B-8B models; a 135M model needs a larger step to memorise in 5 epochs.
PRETRAINED_FINETUNE = TrainConfig(lr=5e-5, epochs=5, batch_size=16, warmup_ratio=0.1, scheduler="linear",
                                  max_length=256, seed=0)
# Unlearning a pretrained model (anything not built by the tiny recipe): open-unlearning's TOFU settings (lr 1e-5,
# 10 epochs, batch 8 x 4 accumulation, one warm-up epoch).
PRETRAINED_UNLEARN = TrainConfig(lr=1e-5, epochs=10, batch_size=8, grad_accum=4, warmup_ratio=0.1, scheduler="linear",
                                 seed=0)

UNLEARN_METHOD = "NPO"  # `obliviate unlearn`'s default: the field's reference method
# The demo shows the method that does best in docs/results.md: PDU. NPO with its default retain weight (alpha 1)
# over-unlearns the synthetic benchmark; the demo gives it alpha 5 when asked for NPO.
DEMO_METHOD = "PDU"
DEMO_HPARAMS: dict[str, dict] = {"NPO": {"alpha": 5.0}}
DEMO_OUT = "runs/demo"

# The real-model demo (`obliviate demo --real`). Chosen by measurement on SmolLM2-135M-Instruct, target Albert
# Einstein, NPO (beta 0.1) + retain NLL (alpha 1), batch 8 (forget accuracy on known probes / neighbour / utility, after
# over before):
#   lr 3e-5: the forget log-prob falls ~4 nats per step, too slow for a CPU budget;
#   lr 1e-4,  8 steps: 0.05 / 1.00 / 0.90 (utility 26 of 29: the retain term starts to overfit its own texts);
#   lr 1e-4,  5 steps: 0.16 / 0.89 / 0.93  <- the default (NPO's forget loss has saturated by step 3).
REAL_MODEL = "smollm2-135m"
REAL_TARGET = "Albert Einstein"
REAL_METHOD = "NPO"
REAL_HPARAMS: dict[str, dict] = {"NPO": {"beta": 0.1, "alpha": 1.0}, "GradDiff": {"alpha": 1.0}}
REAL_TRAIN = TrainConfig(lr=1e-4, max_steps=5, batch_size=8, scheduler="constant", warmup_ratio=0.0, max_length=160,
                         pairing="random", seed=0)
REAL_OUT = "runs/demo-real"
