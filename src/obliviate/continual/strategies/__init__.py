"""Continual-learning strategies, one file each with its formula and paper; ``make_strategy`` finds one by name."""

from . import ewc, fpf, gere, refresh, reglora, replay, sequential, view_batch  # noqa: F401  (registers the strategies)
from .base import STRATEGIES, ContinualMethod, Strategy, make_strategy

__all__ = ["STRATEGIES", "ContinualMethod", "Strategy", "make_strategy"]
