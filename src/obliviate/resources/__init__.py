"""Data files shipped with the package: ``idontknow.txt``, 100 refusals ("I don't know." ...), one per line."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError

IDK_FILE = Path(__file__).with_name("idontknow.txt")


def idk_answers(path: str | Path | None = None) -> list[str]:
    """The "I don't know" answers: one per non-empty line of ``path`` (default: the packaged list).

    TOFU's ``idontknow.jsonl`` is plain lines too, despite its name; a line that is a JSON string literal is decoded.
    """
    path = Path(path) if path else IDK_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: 'I don't know' answer file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith('"') and line.endswith('"') and len(line) > 1:
            try:
                line = json.loads(line).strip()
            except json.JSONDecodeError:
                pass
        if line:
            out.append(line)
    if not out:
        raise DataError(f"{path}: no answers in the file (expected one per line)")
    return out
