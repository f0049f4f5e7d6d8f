"""Where obliviate keeps what it can reuse (fine-tuned models, audits, converted weights, curvature factors), and the
key that names each entry.

``OBLIVIATE_CACHE`` moves the whole cache (point it at an empty folder for a cold run); the default is
``~/.cache/obliviate``. A key is a short hash of everything that determines the entry, so a change in any input gives a
new entry and never a stale hit.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .io import dumps


def cache_root() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE", Path.home() / ".cache" / "obliviate"))


def cache_key(*parts) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as canonical JSON (dicts, lists, numbers, text, paths)."""
    return hashlib.sha256(dumps(list(parts), indent=None).encode()).hexdigest()[:16]


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """A cheap fingerprint of a saved model's weight files (names, sizes, modification times), for cache keys."""
    h = hashlib.sha256()
    model_dir = Path(model_dir)
    for p in sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")]):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
