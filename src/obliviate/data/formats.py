"""Readers for JSON, JSONL, CSV and Parquet, accepting the field names of TOFU, RWKU and MUSE as published.

``read_records`` returns plain dicts; ``read_qa`` and ``read_documents`` turn them into validated records. Every problem is
reported as a ``DataError`` naming the file, the record (0-based index, or line number for line-oriented files) and the
field.

TOFU's files come in three layouts, all accepted: one JSON array (``forget10_perturbed.json``), several JSON arrays one per
line (``full.json``, ``retain90.json``), and ``prompt``/``response`` keys instead of ``question``/``answer``
(``forget10.json``).

Only regular files are read (a named pipe would block forever, a device never ends), and none larger than
``MAX_FILE_BYTES`` (environment variable ``OBLIVIATE_MAX_FILE_BYTES`` to change it). CSV is parsed as CSV: a quoted cell
keeps its line breaks, and U+2028, form feed and the other separators ``str.splitlines`` knows are plain characters.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
from pathlib import Path

from ..errors import ConfigError, DataError
from .records import Document, QAItem

# Accepted names for each field, first match wins.
QUESTION_KEYS = ("question", "prompt", "query", "instruction")
ANSWER_KEYS = ("answer", "response", "completion", "output")
ENTITY_KEYS = ("entity", "author", "subject", "target", "title")
TEXT_KEYS = ("text", "content", "document", "passage")

SUPPORTED = (".json", ".jsonl", ".csv", ".parquet")

# The largest data file read; OBLIVIATE_MAX_FILE_BYTES (a number of bytes) overrides it. A bigger file is refused with
# one line rather than reaching a MemoryError half-way through.
MAX_FILE_BYTES = 2 * 1024**3
MAX_FILE_BYTES_ENV = "OBLIVIATE_MAX_FILE_BYTES"
# The largest CSV cell (characters), the csv module's field_size_limit while obliviate reads a CSV file (its default,
# 128 KiB, is smaller than one of MUSE's books).
CSV_FIELD_LIMIT = 128 * 1024**2

_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _located(path: Path, where: str, what: str) -> DataError:
    return DataError(f"{path}: {where}: {what}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _human(n: int) -> str:
    """``1234 bytes (1.2 KiB)``; below 1 KiB only the bytes."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n} bytes ({n / size:.1f} {unit})"
    return f"{n} bytes"


def max_file_bytes() -> int:
    """The size limit for data files: ``OBLIVIATE_MAX_FILE_BYTES`` if set, else ``MAX_FILE_BYTES``."""
    raw = os.environ.get(MAX_FILE_BYTES_ENV, "").strip()
    if not raw:
        return MAX_FILE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_FILE_BYTES_ENV} = {raw[:40]!r} must be a whole number of bytes > 0 "
                          f"(e.g. {4 * 1024**3} for 4 GiB)")
    return value


def _file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _check_data_file(path: Path) -> os.stat_result:
    """Stat ``path`` without opening it (opening a named pipe blocks) and refuse anything but a regular file."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL byte in the path
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EBADF):  # a symlink loop: what Path.exists calls not there
            raise DataError(f"{path}: file not found") from None
        raise
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a directory, expected a data file ({', '.join(SUPPORTED)})")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file ({_file_kind(st.st_mode)}), expected a data file "
                        f"({', '.join(SUPPORTED)})")
    return st


def _check_size(path: Path, size: int) -> None:
    limit = max_file_bytes()
    if size > limit:
        raise DataError(f"{path}: {_human(size)}, over the limit of {_human(limit)} for a data file; set "
                        f"{MAX_FILE_BYTES_ENV} to a larger number of bytes to read it")


def _out_of_memory(path: Path) -> DataError:
    try:
        size = f" ({_human(os.stat(path).st_size)})"
    except (OSError, ValueError):
        size = ""
    return DataError(f"{path}: too large to load into memory{size}; set {MAX_FILE_BYTES_ENV} lower to refuse such "
                     "files up front, or split the file")


def _read_bytes(path: Path) -> bytes:
    """The bytes of a data file that ``_check_data_file`` accepted. Opened non-blocking and checked again once open,
    in case the path was swapped for a named pipe in between."""
    _check_size(path, _check_data_file(path).st_size)
    limit = max_file_bytes()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: not a regular file ({_file_kind(mode)}), expected a data file "
                            f"({', '.join(SUPPORTED)})")
        try:
            data = f.read(limit + 1)
        except MemoryError:
            raise _out_of_memory(path) from None
        if len(data) > limit:  # it grew since the check
            _check_size(path, max(os.fstat(fd).st_size, len(data)))
    return data


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except MemoryError:
        raise _out_of_memory(path) from None


def read_text_file(path: str | Path) -> str:
    """A data file's UTF-8 text, with the checks every data file gets (a regular file, within the size limit)."""
    return _read_text(Path(path))


def _lines(text: str) -> list[str]:
    """Lines as a text file has them: split at LF, CR LF or CR only (``str.splitlines`` also splits at U+2028, U+0085,
    form feed, ..., which may stand inside a JSON string or a line of text)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _parse_json_lines(path: Path, text: str) -> list:
    """Each non-empty line is a JSON object (one record) or a JSON array (many records)."""
    records: list = []
    for lineno, line in enumerate(_lines(text), start=1):
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
    _check_data_file(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED)})")
    try:
        if suffix == ".parquet":
            _check_size(path, os.stat(path).st_size)
            records = _read_parquet(path)
        else:
            text = _read_text(path)
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
    except MemoryError:
        raise _out_of_memory(path) from None
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _located(path, f"record {i}", f"expected an object with named fields, got {type(record).__name__}")
    return records


# CSV cells are text. A list is written as a JSON array (TOFU's perturbed answers), and a cell that parses as one is
# read back as a list; an empty cell is a missing value. A string the plain cell cannot carry (the empty string, text
# that would read back as a list, a NUL, which Python 3.10's csv cannot read, a lone surrogate, which UTF-8 cannot
# encode) is written as a JSON string literal, "...", and read back from one: write_records -> read_records returns
# every string exactly.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _json_string(text: str) -> str | None:
    """The string a cell holding a JSON string literal stands for, else None."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def _needs_literal(text: str) -> bool:
    """Whether a string must be written to a CSV cell as a JSON string literal to read back as itself."""
    if text == "" or "\x00" in text or _SURROGATE.search(text):
        return True
    if text.startswith("[") and text.endswith("]"):
        return _parses_as_json(text)
    inner = _json_string(text)  # a cell that itself looks like a literal; each level doubles the escapes, so shallow
    return inner is not None and _needs_literal(inner)


def _to_cell(value):
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, str) and _needs_literal(value):
        return json.dumps(value, ensure_ascii=bool(_SURROGATE.search(value)))
    return value


def _from_cell(value: str):
    if value == "":
        return None  # an empty cell is a missing value
    inner = _json_string(value)
    if inner is not None and _needs_literal(inner):
        return inner
    # list-valued fields (perturbed answers) are stored as JSON arrays in a cell
    if value.startswith("[") and value.endswith("]"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            pass  # text that happens to be bracketed
    return value


def _read_csv(path: Path, text: str) -> list[dict]:
    old_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        # parsed as CSV from the text as it is (newline=""): a quoted cell keeps its CR LF, and U+2028 is a character
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(f"{path}: not valid CSV ({_first_line(e)})") from None
    finally:
        csv.field_size_limit(old_limit)
    for i, row in enumerate(rows):
        if None in row:
            raise _located(path, f"record {i}", "more values than header columns")
        for key, value in row.items():
            if isinstance(value, str):
                row[key] = _from_cell(value)
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except MemoryError:
        raise
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
    lone = _SURROGATE.search(value)
    if lone:  # no tokenizer can encode it: refused here, with its place, not deep inside tokenisation
        raise _located(path, f"record {i}", f"field '{key}' holds a lone surrogate U+{ord(lone.group()):04X} at "
                                            f"character {lone.start()}: not encodable text (a broken \\u escape?)")
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
    try:
        return [line.strip() for line in _lines(_read_text(path)) if line.strip()]
    except MemoryError:
        raise _out_of_memory(path) from None


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
                w.writerow({k: _to_cell(v) for k, v in r.items()})
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(k for r in records for k in r))
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records]), tmp)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED)})")
