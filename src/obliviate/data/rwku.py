"""RWKU (Real-World Knowledge Unlearning; Jin et al., NeurIPS 2024 D&B), read as published.

A release folder holds one sub-folder per target, ``<id>_<Name>/``, with ``intro.json`` (the unlearning target and a
one-line description), forget probes at three levels (``forget_level1.json`` cloze, ``forget_level2.json`` questions,
``forget_level3.json`` adversarial: prefix injection, role play, reverse query, ...), neighbour probes at two levels,
membership-inference texts (``forget_mia.json`` members, ``retain_mia.json`` non-members), Wikipedia passages and
fluency instructions. Probes become ``QAItem``s (``query`` -> question, ``subject`` -> entity; ``type``, ``level`` and
``neighbor`` kept in ``meta``); texts become ``Document``s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .formats import read_documents, read_qa, read_records
from .records import Document, QAItem

PROBE_FILES = {
    "forget_level1": "forget_level1.json", "forget_level2": "forget_level2.json", "forget_level3": "forget_level3.json",
    "neighbor_level1": "neighbor_level1.json", "neighbor_level2": "neighbor_level2.json",
}
TEXT_FILES = {"forget_mia": "forget_mia.json", "retain_mia": "retain_mia.json", "passage": "passage.json"}


@dataclass
class RWKUTarget:
    id: int
    folder: Path
    target: str
    intro: str
    probes: dict[str, list[QAItem]] = field(default_factory=dict)
    texts: dict[str, list[Document]] = field(default_factory=dict)

    @property
    def forget_probes(self) -> list[QAItem]:
        return [p for k in ("forget_level1", "forget_level2", "forget_level3") for p in self.probes.get(k, [])]

    @property
    def neighbor_probes(self) -> list[QAItem]:
        return [p for k in ("neighbor_level1", "neighbor_level2") for p in self.probes.get(k, [])]


def list_targets(root: str | Path) -> list[tuple[int, str]]:
    """(id, folder name) of every target in a release folder, by id."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: RWKU folder not found")
    index = root / "targets.json"
    if index.exists():
        entries = read_records(index)
        return sorted((int(e["id"]), str(e["folder"])) for e in entries if (root / str(e["folder"])).is_dir())
    out = []
    for p in root.iterdir():
        head = p.name.split("_", 1)[0]
        if p.is_dir() and head.isdigit():
            out.append((int(head), p.name))
    return sorted(out)


def load_target(root: str | Path, target: int | str, texts: bool = True) -> RWKUTarget:
    """Load one target by id (``1``) or by name (``"Stephen King"`` or its folder name)."""
    root = Path(root)
    targets = list_targets(root)
    want = str(target).strip().lower().replace(" ", "_")
    match = [(i, f) for i, f in targets if str(i) == want or f.lower() == want or f.lower().split("_", 1)[-1] == want]
    if not match:
        raise DataError(f"{root}: no RWKU target '{target}'")
    tid, name = match[0]
    folder = root / name
    intro_path = folder / "intro.json"
    if not intro_path.exists():
        raise DataError(f"{intro_path}: file not found")
    intro = read_records(intro_path)[0]
    if "target" not in intro:
        raise DataError(f"{intro_path}: record 0: field 'target' is missing")
    probes = {k: read_qa(folder / f, allow_empty=True) for k, f in PROBE_FILES.items() if (folder / f).exists()}
    docs = {}
    if texts:
        docs = {k: read_documents(folder / f, allow_empty=True) for k, f in TEXT_FILES.items() if (folder / f).exists()}
    return RWKUTarget(id=tid, folder=folder, target=str(intro["target"]), intro=str(intro.get("intro", "")),
                      probes=probes, texts=docs)


def fluency_instructions(folder: str | Path) -> list[str]:
    path = Path(folder) / "fluency.json"
    return [str(r["instruction"]) for r in json.loads(path.read_text(encoding="utf-8"))]
