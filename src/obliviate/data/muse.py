"""MUSE's published layout, read as it is (``muse-bench/MUSE-News`` / ``-Books``, and ``swj0419/muse_bench``'s
``data/<corpus>/``).

A MUSE folder holds, each file in any format obliviate reads (``.json`` / ``.jsonl`` / ``.csv`` / ``.parquet``) and
found by its name without extension:

=================================  =========================================================================  ==========
``raw/forget``, ``raw/retain1``,    the corpora: one document per record (``text``), or a ``.txt`` file (one   forget
``raw/retain2`` (or ``retain``),    document, as muse_bench ships them)                                         required
``raw/holdout``
``verbmem/forget``                  ``{prompt, gt}``: a prefix of a forget text and its true continuation      optional
``knowmem/forget_qa``,              ``{question, answer}``; ``*_qa_icl`` are the in-context examples put       optional
``knowmem/retain_qa``, ``*_icl``    before each question
``privleak/forget``, ``/retain``,   ``{text}`` (or a JSON list of strings): members, and never-trained         optional
``/holdout``                        non-members for Min-K% privacy leakage
``scal/forget_N``, ``sust/forget_N``  growing forget sets (scalability), sequential requests (sustainability)   optional
=================================  =========================================================================  ==========

Books ships no knowmem files: an absent optional file leaves its part of the audit out. A file present but unreadable
is a ``DataError`` naming the file, record and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .documents import read_corpus
from .formats import SUPPORTED, read_qa, read_records, read_text_file
from .records import Document, QAItem


@dataclass
class MuseData:
    """Everything a MUSE folder holds; absent optional parts are empty."""

    root: Path
    forget: list[Document]
    retain: list[Document] = field(default_factory=list)
    holdout: list[Document] = field(default_factory=list)
    verbmem: list[dict] = field(default_factory=list)          # {prompt, gt, id}
    knowmem_forget: list[QAItem] = field(default_factory=list)
    knowmem_retain: list[QAItem] = field(default_factory=list)
    knowmem_forget_icl: list[QAItem] = field(default_factory=list)
    knowmem_retain_icl: list[QAItem] = field(default_factory=list)
    privleak: dict[str, list[Document]] = field(default_factory=dict)   # forget / retain / holdout
    scal: list[list[Document]] = field(default_factory=list)   # forget_1, forget_2, ... in order
    sust: list[list[Document]] = field(default_factory=list)


def _find(root: Path, stem: str) -> Path | None:
    """``root/stem`` with a supported extension (or ``.txt``), or None; two candidates are ambiguous."""
    found = [root / f"{stem}{ext}" for ext in (*SUPPORTED, ".txt") if (root / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{root / stem}: {len(found)} files ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _texts(path: Path) -> list[Document]:
    """Documents from a corpus file; a JSON array of plain strings (muse_bench's privleak files) is accepted too."""
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(read_text_file(path))
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            for i, v in enumerate(value):
                if not v.strip():
                    raise DataError(f"{path}: record {i}: field 'text' is empty")
            return [Document(text=v, id=str(i)) for i, v in enumerate(value)]
    return read_corpus(path)


def _verbmem(path: Path) -> list[dict]:
    out = []
    for i, r in enumerate(read_records(path)):
        for key in ("prompt", "gt"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"{path}: record {i}: field '{key}' is missing or empty")
        out.append({"prompt": r["prompt"], "gt": r["gt"], "id": str(r.get("id", i))})
    return out


def _numbered(root: Path, folder: str) -> list[list[Document]]:
    out = []
    while (p := _find(root, f"{folder}/forget_{len(out) + 1}")) is not None:
        out.append(_texts(p))
    return out


def load_muse(root: str | Path) -> MuseData:
    """Read a MUSE folder (see the module docstring); ``raw/forget`` is required, the rest is optional."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected MUSE's layout: raw/, verbmem/, knowmem/, privleak/)")
    forget = _find(root, "raw/forget")
    if forget is None:
        raise DataError(f"{root}: raw/forget is missing (one of {', '.join(('.txt', *SUPPORTED))}); not MUSE's layout")
    retain: list[Document] = []
    for stem in ("raw/retain", "raw/retain1", "raw/retain2"):
        if (p := _find(root, stem)) is not None:
            retain += _texts(p)

    def optional(stem: str, read):
        p = _find(root, stem)
        return read(p) if p is not None else []

    return MuseData(
        root=root, forget=_texts(forget), retain=retain, holdout=optional("raw/holdout", _texts),
        verbmem=optional("verbmem/forget", _verbmem),
        knowmem_forget=optional("knowmem/forget_qa", read_qa), knowmem_retain=optional("knowmem/retain_qa", read_qa),
        knowmem_forget_icl=optional("knowmem/forget_qa_icl", read_qa),
        knowmem_retain_icl=optional("knowmem/retain_qa_icl", read_qa),
        privleak={name: docs for name in ("forget", "retain", "holdout")
                  if (docs := optional(f"privleak/{name}", _texts))},
        scal=_numbered(root, "scal"), sust=_numbered(root, "sust"))
