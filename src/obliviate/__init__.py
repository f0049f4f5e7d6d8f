"""obliviate: make a language model forget what it is told to forget, keep everything else, and prove both.

The public API, in the order data flows::

    from obliviate import load_benchmark, load_model, make_method, train, audit_model

The names are loaded on first use, so ``import obliviate`` (and ``obliviate --help``) stays instant.
"""

__version__ = "0.1.0"

_API = {"AuditConfig": "config", "TrainConfig": "config", "ObliviateError": "errors", "QAItem": "data",
        "load_benchmark": "data", "write_fictional_authors": "data", "load_model": "models", "make_method": "methods",
        "train": "engine", "audit_model": "audit", "compare_to_oracle": "audit"}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'obliviate' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_API])
