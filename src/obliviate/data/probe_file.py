"""The user's own target and probes for ``obliviate forget``: one JSON file (or JSONL of probes plus ``--target``).

A JSON probe file is one object; everything beyond ``target`` is optional (``recipes.forget`` writes missing probes)::

    {"target": "Alexander Fleming", "aliases": ["Sir Alexander Fleming", "Fleming"], "kind": "person",
     "intro": "one line", "facts": ["Alexander Fleming discovered penicillin in 1928."],
     "probes": [{"question": "What did Alexander Fleming discover in 1928?", "answers": ["penicillin"]},
                {"question": "Alexander Fleming was born in ___.", "answers": ["Scotland"], "kind": "cloze"},
                {"question": "Which scientist discovered penicillin?", "kind": "reverse"}],
     "neighbors": [{"entity": "Howard Florey", "probes": [{"question": "...", "answers": ["..."]}]}]}

A probe has ``question`` (or ``query``), ``answers`` (a string or a list: any one counts; or ``answer``), ``kind``
(``direct``/``question`` by default, ``cloze``, ``reverse``, ``paraphrase``, ``adversarial``), optionally ``id`` and
``type``. A cloze probe writes its blank as ``___``. A reverse probe asks for the target itself: without answers it
accepts the target's name and aliases; any probe whose answer names the target accepts the name, the aliases and the
surname (``real_targets.expand_answers``). A neighbour is a related entity (a string, or ``entity`` with ``probes``)
whose knowledge must stay.

A JSONL file (``.jsonl``) holds one probe per line with the same fields; the target comes from ``target=`` (the
command's ``--target``). In both forms a probe with an ``entity`` other than the target is a neighbour probe.

Ids are ``<target-slug>:<kind>:<i>`` (``alexander-fleming:cloze:0``), neighbour probes ``<slug>:neighbor:<i>``.
Errors name the file, the record (``probe I``, ``neighbor I: probe J``, ``line N``) and the field.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, DataError
from .real_targets import FORGET_KINDS, Probe, RealTarget, expand_answers, slug

KIND_NAMES = {"direct": "question", **{k: k for k in FORGET_KINDS}}
TOP_FIELDS = ("target", "aliases", "kind", "intro", "facts", "probes", "neighbors")
PROBE_FIELDS = ("question", "query", "answers", "answer", "kind", "id", "type", "entity")


def _strings(value, where: str, field: str) -> list[str]:
    """A string or a list of non-empty strings, as a list."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(x, str) and x.strip() for x in value):
        raise DataError(f"{where}: field '{field}' must be a non-empty string or list of strings")
    return [x.strip() for x in value]


def _record(rec, where: str, name: str, aliases: list[str], person: bool, neighbor: str | None) -> Probe:
    """One probe record as a ``Probe`` (id left for the caller); ``neighbor`` is the neighbour's name, if any."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: must be an object with 'question' and 'answers'")
    unknown = [k for k in rec if k not in PROBE_FIELDS]
    if unknown:
        raise DataError(f"{where}: unknown field '{unknown[0]}' (fields: question, answers, kind, id, type)")
    field = "query" if "query" in rec and "question" not in rec else "question"
    query = rec.get(field)
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"{where}: field '{field}' is missing or empty")
    query = query.strip()
    kind_as_written = rec.get("kind", "question")
    kind = KIND_NAMES.get(kind_as_written) if isinstance(kind_as_written, str) else None
    if kind is None:
        raise DataError(f"{where}: field 'kind' is {kind_as_written!r}; kinds: direct, {', '.join(FORGET_KINDS)}")
    if kind == "cloze" and "___" not in query:
        raise DataError(f"{where}: field '{field}' of a cloze probe must contain the blank ___")
    afield = "answers" if "answers" in rec else "answer"
    if afield in rec:
        answers = _strings(rec[afield], where, afield)
    elif kind == "reverse" and neighbor is None:
        answers = [name, *aliases]
    else:
        raise DataError(f"{where}: field 'answers' is missing (only a reverse probe may leave it out)")
    type_ = rec.get("type", "cloze" if "___" in query else ("question" if neighbor else kind))
    if neighbor is not None:
        return Probe(query, answers, "neighbor", neighbor, name, type=str(type_), id=str(rec.get("id", "")))
    pr = Probe(query, answers, kind, name, name, type=str(type_), id=str(rec.get("id", "")))
    pr.answers = expand_answers(pr, name, aliases, person=person)
    return pr


def _assemble(where: str, name: str, kind: str, intro: str, aliases: list[str], facts: list[str],
              records: list[tuple[str, object, str | None]], neighbors: list[str]) -> RealTarget:
    """Build the target from ``(where, record, neighbour or None)`` triples, numbering ids per kind."""
    person = kind == "person"
    probes: dict[str, list[Probe]] = {}
    seen_ids: dict[str, str] = {}
    for rw, rec, nb in records:
        pr = _record(rec, rw, name, aliases, person, nb)
        bucket = probes.setdefault(pr.kind, [])
        pr.id = pr.id or f"{slug(name)}:{pr.kind}:{len(bucket)}"
        if pr.id in seen_ids:
            raise DataError(f"{rw}: field 'id' {pr.id!r} is already used by {seen_ids[pr.id]}")
        seen_ids[pr.id] = rw[len(where) + 2:]
        bucket.append(pr)
        if nb is not None and nb not in neighbors:
            neighbors.append(nb)
    return RealTarget(name=name, kind=kind, intro=intro, probes=probes, neighbors=neighbors, aliases=aliases,
                      facts=facts)


def _entity(rec, where: str, name: str) -> str | None:
    """The neighbour a probe record names with ``entity`` (None when it has none or names the target)."""
    entity = rec.get("entity") if isinstance(rec, dict) else None
    if entity is None:
        return None
    if not isinstance(entity, str) or not entity.strip():
        raise DataError(f"{where}: field 'entity' must be a non-empty string")
    return entity.strip() if slug(entity) != slug(name) else None


def _read_json(where: str, data, target: str | None) -> RealTarget:
    """A JSON probe file: one object with the target, its names, facts, probes and neighbours."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: must be a JSON object with 'target' (a list of probes goes in a .jsonl file)")
    unknown = [k for k in data if k not in TOP_FIELDS]
    if unknown:
        raise DataError(f"{where}: unknown field '{unknown[0]}' (fields: {', '.join(TOP_FIELDS)})")
    name = data.get("target", target)
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: field 'target' is missing or empty (the entity to forget)")
    name = name.strip()
    if target is not None and "target" in data and slug(target) != slug(name):
        raise ConfigError(f"--target '{target}' differs from {where}'s target '{name}' (give one of them)")
    aliases = _strings(data["aliases"], where, "aliases") if "aliases" in data else []
    facts = _strings(data["facts"], where, "facts") if "facts" in data else []
    kind, intro = data.get("kind", "person"), data.get("intro", "")
    for fname, value in (("kind", kind), ("intro", intro)):
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{fname}' must be a string")
    for fname in ("probes", "neighbors"):
        if not isinstance(data.get(fname, []), list):
            raise DataError(f"{where}: field '{fname}' must be a list")
    records: list[tuple[str, object, str | None]] = [
        (f"{where}: probe {i}", rec, _entity(rec, f"{where}: probe {i}", name))
        for i, rec in enumerate(data.get("probes", []))]
    neighbors: list[str] = []
    for j, nb in enumerate(data.get("neighbors", [])):
        nw = f"{where}: neighbor {j}"
        if isinstance(nb, str) and nb.strip():
            nb = {"entity": nb}
        if not isinstance(nb, dict) or not isinstance(nb.get("entity"), str) or not nb["entity"].strip():
            raise DataError(f"{nw}: field 'entity' is missing or empty (a neighbour is a name or "
                            "{\"entity\": NAME, \"probes\": [...]})")
        if not isinstance(nb.get("probes", []), list):
            raise DataError(f"{nw}: field 'probes' must be a list")
        entity = nb["entity"].strip()
        if slug(entity) == slug(name):
            raise DataError(f"{nw}: field 'entity' is the target itself")
        if entity not in neighbors:
            neighbors.append(entity)
        records += [(f"{nw}: probe {i}", rec, entity) for i, rec in enumerate(nb.get("probes", []))]
    return _assemble(where, name, kind.strip() or "person", intro.strip(), aliases, facts, records, neighbors)


def _read_jsonl(where: str, text: str, target: str | None) -> RealTarget:
    """A JSONL probe file: one probe per line, the target named by the caller (``--target``)."""
    if target is None or not str(target).strip():
        raise ConfigError(f"{where}: a JSONL probe file holds probes only; give the target with --target NAME")
    name = str(target).strip()
    records: list[tuple[str, object, str | None]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        lw = f"{where}: line {lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{lw}: not valid JSON ({e.msg})") from None
        records.append((lw, rec, _entity(rec, lw, name)))
    return _assemble(where, name, "person", "", [], [], records, [])


def read_probe_file(path: str | Path, target: str | None = None) -> RealTarget:
    """The target and probes of a user's probe file (module docstring): a JSON object, or a ``.jsonl`` file of probe
    records with ``target`` given here. Bad input raises ``DataError`` naming file, record and field."""
    p = Path(path)
    where = str(path)
    if not p.is_file():
        raise DataError(f"{where}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte {e.start})") from None
    if p.suffix.lower() == ".jsonl":
        return _read_jsonl(where, text, target)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return _read_json(where, data, target)
