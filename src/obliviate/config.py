"""Plain dataclasses for every knob, loaded from YAML and overridden from the command line, validated with clear errors."""

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
