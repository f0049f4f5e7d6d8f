"""RWKU (Real-World Knowledge Unlearning; Jin et al., NeurIPS 2024 D&B), read as published.

A release folder holds one sub-folder per target, ``<id>_<Name>/``, with ``intro.json`` (the unlearning target and a
one-line description), forget probes at three levels (``forget_level1.json`` cloze, ``forget_level2.json`` questions,
``forget_level3.json`` adversarial: prefix injection, role play, reverse query, ...), neighbour probes at two levels,
membership-inference texts (``forget_mia.json`` members, ``retain_mia.json`` non-members), Wikipedia passages and
fluency instructions. Probes become ``QAItem``s (``query`` -> question, ``subject`` -> entity; ``type``, ``level`` and
``neighbor`` kept in ``meta``); texts become ``Document``s.

A target is found (``find_target``) by id, folder name, or name as written in ``intro.json`` with accents, case and
punctuation folded: "J. K. Rowling", "j k rowling", "Beyoncé" and "Beyonce" all name the same folders; a near miss
names the closest targets with their ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .formats import read_documents, read_qa, read_records
from .real_targets import close_names, fold_name
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


# root (resolved) -> [(id, folder, name in intro.json)], read once per process when a name is not a folder's
_NAMES: dict[str, list[tuple[int, str, str]]] = {}


def target_names(root: str | Path) -> list[tuple[int, str, str]]:
    """(id, folder, target name from ``intro.json``) of every target; read once per folder per process. A folder
    without a readable ``intro.json`` is listed under its folder name."""
    root = Path(root)
    key = str(root.resolve())
    if key not in _NAMES:
        out = []
        for i, f in list_targets(root):
            try:
                name = str(json.loads((root / f / "intro.json").read_text(encoding="utf-8"))[0]["target"])
            except (OSError, ValueError, LookupError, TypeError):
                name = f.split("_", 1)[-1].replace("_", " ")
            out.append((i, f, name))
        _NAMES[key] = out
    return _NAMES[key]


def find_target(root: str | Path, query: int | str) -> tuple[int, str]:
    """(id, folder name) of the target ``query`` names: an id (``141`` or ``"141"``), a folder name
    (``"141_J__K__Rowling"``, or without its id), or the target's name as in ``intro.json``, compared with accents,
    case and punctuation folded, then with spaces dropped too ("JK Rowling"). No match: a ``DataError`` naming up to
    five near matches with their ids."""
    root = Path(root)
    targets = list_targets(root)
    q = str(query).strip()
    for i, f in targets:
        if q == str(i) or q.lower() == f.lower():
            return i, f
    want = fold_name(q)
    if want:
        # the folder's name part first (no file read), then the names in intro.json (read once, only when needed)
        for i, f in targets:
            if fold_name(f.split("_", 1)[-1]) == want:
                return i, f
        names = target_names(root)
        for compact in (False, True):
            for i, f, name in names:
                folded = fold_name(name)
                if (folded.replace(" ", "") == want.replace(" ", "")) if compact else folded == want:
                    return i, f
    names = target_names(root)
    close = close_names(q, [n for _, _, n in names])
    ids = {n: i for i, _, n in reversed(names)}
    if close:
        hint = "did you mean: " + ", ".join(f"{ids[n]} {n}" for n in close) + "?"
    else:
        hint = f"`obliviate forget --list-targets --rwku {root}` lists them"
    raise DataError(f"{root}: no RWKU target '{query}'; {hint}")


def load_target(root: str | Path, target: int | str, texts: bool = True) -> RWKUTarget:
    """Load one target by id (``1``), name as written (``"Stephen King"``, ``"Beyoncé"``) or folder
    (``find_target``)."""
    root = Path(root)
    tid, name = find_target(root, target)
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
