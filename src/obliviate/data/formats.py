"""Readers for JSON, JSONL, CSV and Parquet, accepting the field names of TOFU, RWKU and MUSE as published.

``read_records`` returns plain dicts; ``read_qa`` and ``read_documents`` turn them into validated records. Every problem is
reported as a ``DataError`` naming the file, the record (0-based index, or line number for line-oriented files) and the
field.

TOFU's files come in three layouts, all accepted: one JSON array (``forget10_perturbed.json``), several JSON arrays one per
line (``full.json``, ``retain90.json``), and ``prompt``/``response`` keys instead of ``question``/``answer``
(``forget10.json``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import DataError
from .records import Document, QAItem

# Accepted names for each field, first match wins.
QUESTION_KEYS = ("question", "prompt", "query", "instruction")
ANSWER_KEYS = ("answer", "response", "completion", "output")
ENTITY_KEYS = ("entity", "author", "subject", "target", "title")
TEXT_KEYS = ("text", "content", "document", "passage")

SUPPORTED = (".json", ".jsonl", ".csv", ".parquet")


def _located(path: Path, where: str, what: str) -> DataError:
    return DataError(f"{path}: {where}: {what}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _parse_json_lines(path: Path, text: str) -> list:
    """Each non-empty line is a JSON object (one record) or a JSON array (many records)."""
    records: list = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise _located(path, f"line {lineno}", f"not valid JSON ({e.msg}, column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a number too long to convert, nesting too deep
            raise _located(path, f"line {lineno}", f"not valid JSON ({_first_line(e)})") from None
        if isinstance(value, list):
            records.extend(value)
        else:
            records.append(value)
    return records


def read_records(path: str | Path) -> list[dict]:
    """Read a data file into a list of dicts; raise ``DataError`` for anything unreadable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file ({', '.join(SUPPORTED)})")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED)})")
    if suffix == ".parquet":
        records = _read_parquet(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
        if suffix == ".csv":
            records = _read_csv(path, text)
        elif suffix == ".jsonl":
            records = _parse_json_lines(path, text)
        else:
            try:
                value = json.loads(text)
                records = value if isinstance(value, list) else [value]
            except (ValueError, RecursionError):  # not one JSON document: one per line, as TOFU's full.json
                records = _parse_json_lines(path, text)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _located(path, f"record {i}", f"expected an object with named fields, got {type(record).__name__}")
    return records


def _read_csv(path: Path, text: str) -> list[dict]:
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as e:
        raise DataError(f"{path}: not valid CSV ({e})") from None
    for i, row in enumerate(rows):
        if None in row:
            raise _located(path, f"record {i}", "more values than header columns")
        for key, value in row.items():
            if value == "":
                row[key] = None  # an empty cell is a missing value
            # list-valued fields (perturbed answers) are stored as JSON arrays in a cell
            elif isinstance(value, str) and value.startswith("[") and value.endswith("]"):
                try:
                    row[key] = json.loads(value)
                except (ValueError, RecursionError):
                    pass  # text that happens to be bracketed
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__})") from None


def _pick(record: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in record and record[key] is not None:
            return key, record[key]
    return None, None


def _text_field(path: Path, i: int, record: dict, keys: tuple[str, ...], required: bool) -> str | None:
    key, value = _pick(record, keys)
    if key is None:
        if required:
            raise _located(path, f"record {i}", f"field '{keys[0]}' is missing")
        return None
    if not isinstance(value, str):
        raise _located(path, f"record {i}", f"field '{key}' must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise _located(path, f"record {i}", f"field '{key}' is empty")
    return value


def qa_from_record(path: Path, i: int, record: dict) -> QAItem:
    question = _text_field(path, i, record, QUESTION_KEYS, required=True)
    answer = _text_field(path, i, record, ANSWER_KEYS, required=True)
    paraphrased = _text_field(path, i, record, ("paraphrased_answer",), required=False)
    para_q = _text_field(path, i, record, ("paraphrased_question",), required=False)
    perturbed = record.get("perturbed_answer", record.get("perturbed_answers", []))
    if perturbed is None:
        perturbed = []
    if isinstance(perturbed, str):
        perturbed = [perturbed]
    if not isinstance(perturbed, list) or not all(isinstance(p, str) and p.strip() for p in perturbed):
        raise _located(path, f"record {i}", "field 'perturbed_answer' must be a list of non-empty texts")
    ekey, entity = _pick(record, ENTITY_KEYS)
    ikey, rid = _pick(record, ("id", "index", "idx"))
    used = {_pick(record, QUESTION_KEYS)[0], _pick(record, ANSWER_KEYS)[0], ekey, ikey, "paraphrased_answer",
            "paraphrased_question", "perturbed_answer", "perturbed_answers"}
    return QAItem(
        question=question,
        answer=answer,
        paraphrased_answer=paraphrased,
        perturbed_answers=list(perturbed),
        paraphrased_question=para_q,
        entity=None if entity is None else str(entity),
        id=None if rid is None else str(rid),
        meta={k: v for k, v in record.items() if k not in used},
    )


def _check_unique_ids(path: Path, ids: list[str | None]) -> None:
    """Two records of one file with the same id are an editing mistake that silently skews per-item results."""
    seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        if rid is None:
            continue
        if rid in seen:
            raise _located(path, f"record {i}", f"field 'id' = {rid!r} repeats record {seen[rid]}; ids must be unique")
        seen[rid] = i


def read_qa(path: str | Path, allow_empty: bool = False) -> list[QAItem]:
    """Read question-answer items from any supported file."""
    path = Path(path)
    items = [qa_from_record(path, i, r) for i, r in enumerate(read_records(path))]
    if not items and not allow_empty:
        raise DataError(f"{path}: holds no records")
    _check_unique_ids(path, [it.id for it in items])
    return items


def read_documents(path: str | Path, allow_empty: bool = False) -> list[Document]:
    """Read plain documents (field ``text`` or an alias) from any supported file."""
    path = Path(path)
    docs = []
    for i, record in enumerate(read_records(path)):
        text = _text_field(path, i, record, TEXT_KEYS, required=True)
        _, entity = _pick(record, ENTITY_KEYS)
        _, rid = _pick(record, ("id", "index", "idx"))
        docs.append(Document(text=text, id=None if rid is None else str(rid), entity=None if entity is None else str(entity)))
    if not docs and not allow_empty:
        raise DataError(f"{path}: holds no records")
    _check_unique_ids(path, [d.id for d in docs])
    return docs


def read_lines(path: str | Path) -> list[str]:
    """Plain text, one entry per non-empty line (TOFU's ``idontknow.jsonl`` is such a file despite its name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def write_records(path: str | Path, records: list[dict]) -> None:
    """Write records in the format the file name asks for (.json array, .jsonl, .csv, .parquet), atomically."""
    from ..io import atomic_path, dumps, write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_text(path, dumps(records) + "\n")
    elif suffix == ".jsonl":
        write_text(path, "".join(dumps(r, indent=None) + "\n" for r in records))
    elif suffix == ".csv":
        keys = list(dict.fromkeys(k for r in records for k in r))
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in records:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(k for r in records for k in r))
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records]), tmp)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED)})")
