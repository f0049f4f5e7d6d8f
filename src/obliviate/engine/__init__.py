from .loop import latest_checkpoint, train
from .reference import Reference

__all__ = ["Reference", "latest_checkpoint", "train"]
