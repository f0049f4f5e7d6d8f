"""``metrics.jsonl``, a run's training log (one JSON record per optimizer step, written by the training loop), read
the forgiving way a report needs: whatever can be read is shown.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl; a missing file is no records, an unreadable line (a run killed mid-write) is
    skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
