"""obliviate: make a language model forget what it is told to forget, keep everything else, and prove both.

The public API, in the order data flows::

    from obliviate import load_benchmark, load_model, make_method, train, audit_model
"""

__version__ = "0.1.0"

from .audit import audit_model, compare_to_oracle
from .config import AuditConfig, TrainConfig
from .data import QAItem, load_benchmark, write_fictional_authors
from .engine import train
from .errors import ObliviateError
from .methods import make_method
from .models import load_model

__all__ = ["AuditConfig", "ObliviateError", "QAItem", "TrainConfig", "audit_model", "compare_to_oracle",
           "load_benchmark", "load_model", "make_method", "train", "write_fictional_authors"]
