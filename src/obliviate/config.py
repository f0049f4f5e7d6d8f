"""Plain dataclasses for every knob, loaded from YAML and overridden from the command line, validated with clear errors."""

from __future__ import annotations

import dataclasses
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
        checks = [
            ("lr", self.lr > 0, "must be > 0"), ("epochs", self.epochs > 0 or self.max_steps > 0, "must be > 0"),
            ("max_steps", self.max_steps >= 0, "must be >= 0"), ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"), ("warmup_ratio", 0 <= self.warmup_ratio < 1,
                                                                  "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"), ("max_length", self.max_length >= 8,
                                                                       "must be >= 8"),
            ("scheduler", self.scheduler in ("constant", "linear", "cosine"), "must be constant, linear or cosine"),
            ("pairing", self.pairing in ("random", "sequential", "cyclic"), "must be random, sequential or cyclic"),
            ("save_every", self.save_every >= 0, "must be >= 0"), ("loss_bound", self.loss_bound > 0, "must be > 0"),
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
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        raise ConfigError(f"{path}: not valid YAML ({where}: {getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(value).__name__}")
    return value
