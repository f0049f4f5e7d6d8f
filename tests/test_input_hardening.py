"""Inputs that must never hang obliviate, exhaust its memory or be silently corrupted: named pipes and devices where a
file belongs, YAML alias bombs, oversized files, and CSV cells holding line breaks, separators and other hostile text.

The tests about the command line run the real ``obliviate`` command in a subprocess with a timeout, so that a
regression fails instead of hanging the suite."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obliviate.config import load_yaml
from obliviate.data import formats, load_benchmark, read_qa, read_records, write_records
from obliviate.data.formats import read_documents, read_lines
from obliviate.errors import ConfigError, DataError

ERROR = "obliviate: error:"
TIMEOUT = 60  # seconds; each command below answers in a few

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


def run_cli(*args: str, env: dict | None = None) -> tuple[int, str, float]:
    """Run `python -m obliviate` as a user would; returns (exit code, stderr, seconds)."""
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "obliviate", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False,
                       stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    return p.returncode, p.stderr, time.monotonic() - start


def one_error_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(ERROR)]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hardening")


@pytest.fixture
def bench(small_bench_dir, tmp_path) -> Path:
    dst = tmp_path / "bench"
    shutil.copytree(small_bench_dir, dst)
    return dst


def unlearn_args(target: Path, bench: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", "--model", str(target), "--data", str(bench), "--out", str(out), "--max-steps", "1",
            "--batch-size", "4", "--quiet", *extra]


class Unblock:
    """Should a reader open a named pipe after all, open its other end after a while so the test fails, not hangs."""

    def __init__(self, fifo: Path, after: float = 10.0):
        self.fifo, self.stop = fifo, threading.Event()
        self.thread = threading.Thread(target=self._run, args=(after,), daemon=True)

    def _run(self, after: float) -> None:
        deadline = time.monotonic() + after
        while not self.stop.wait(0.2):
            if time.monotonic() < deadline:
                continue
            try:  # non-blocking: succeeds only while a reader has the pipe open
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ------------------------------------------------------------------------------------ not a regular file

@needs_fifo
def test_a_named_pipe_as_a_data_file_is_one_line_and_exit_2(bench, target_path, tmp_path):
    (bench / "forget10.json").unlink()
    os.mkfifo(bench / "forget10.json")
    out = tmp_path / "run"
    code, err, _ = run_cli(*unlearn_args(target_path, bench, out))
    one_error_line(code, err, f"{bench}/forget10.json", "not a regular file (a named pipe)")
    assert not out.exists()


@needs_fifo
def test_a_named_pipe_as_the_config_file_is_one_line_and_exit_2(target_path, tmp_path):
    os.mkfifo(tmp_path / "run.yaml")
    out = tmp_path / "run"
    code, err, _ = run_cli("unlearn", "--config", str(tmp_path / "run.yaml"), "--model", str(target_path), "--out",
                           str(out))
    one_error_line(code, err, f"{tmp_path}/run.yaml", "not a regular file (a named pipe)")
    assert not out.exists()


@needs_fifo
@pytest.mark.parametrize("name,read", [("d.json", read_records), ("d.jsonl", read_records), ("d.csv", read_records),
                                       ("d.parquet", read_records), ("d.json", read_qa), ("d.csv", read_documents),
                                       ("idk.jsonl", read_lines)])
def test_every_reader_refuses_a_named_pipe_without_opening_it(tmp_path, name, read):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with Unblock(fifo), pytest.raises(DataError) as e:
        read(fifo)
    assert str(e.value) == f"{fifo}: not a regular file (a named pipe), expected a data file " \
                          f"(.json, .jsonl, .csv, .parquet)"


def test_a_device_is_refused_before_its_file_type(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    for read in (read_records, read_lines):
        with pytest.raises(DataError, match=r"^/dev/zero: not a regular file \(a character device\)"):
            read("/dev/zero")
    with pytest.raises(ConfigError, match=r"^/dev/zero: not a regular file \(a character device\), expected a YAML"):
        load_yaml("/dev/zero")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.json"
    if len(str(path)) > 100:
        pytest.skip("temporary path too long for a unix socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        with pytest.raises(DataError, match=r"not a regular file \(a socket\)"):
            read_records(path)


def test_missing_files_and_folders_keep_their_messages(tmp_path):
    with pytest.raises(DataError, match=r"no-such\.json: file not found$"):
        read_records(tmp_path / "no-such.json")
    with pytest.raises(DataError, match=r": is a directory, expected a data file"):
        read_records(tmp_path)
    with pytest.raises(ConfigError, match=r"no-such\.yaml: config file not found$"):
        load_yaml(tmp_path / "no-such.yaml")
    with pytest.raises(ConfigError, match=r"config file is a folder, not a YAML file$"):
        load_yaml(tmp_path)


# ---------------------------------------------------------------------------------------------- YAML aliases

def alias_bomb(key: str = "lr", width: int = 9, levels: int = 9) -> str:
    """A "billion laughs": 9 levels of 9 aliases each, 9**9 strings once expanded, all in one option's value."""
    lines = [f"{key}:", "  - &l0 [" + ",".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"  - &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_in_config_is_one_line_and_fast(target_path, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(alias_bomb())
    out = tmp_path / "run"
    code, err, seconds = run_cli("unlearn", "--config", str(config), "--model", str(target_path), "--out", str(out))
    line = one_error_line(code, err, f"{config}: not valid YAML (line ", "too many aliases")
    assert len(line) < 300 and "lol" not in line
    assert seconds < 30  # the refusal itself takes milliseconds; the rest is starting Python on a busy machine
    assert not out.exists()


def test_the_alias_bomb_is_refused_in_well_under_a_second(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(alias_bomb("hparams", width=20, levels=20))
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        load_yaml(config)
    assert time.monotonic() - start < 1.0
    assert "too many aliases" in str(e.value) and "lol" not in str(e.value)


def test_a_merge_key_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 {" + ", ".join(f"k{j}: v" for j in range(9)) + "}"]
    for i in range(1, 6):  # small enough that a loader without the bound still returns, in a second or two
        lines.append(f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 9) + "]}")
    config = tmp_path / "run.yaml"
    config.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="too many aliases"):
        load_yaml(config)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("text,problem", [
    ("a: &x [1, *x]\n", "line 1: alias *x stands inside the value it names"),
    ("lr: " + "[" * 150 + "]" * 150 + "\n", "line 1: values nested deeper than 100 levels"),
    ("lr: " + "[" * 100_000 + "\n", "values nested deeper than 100 levels"),
    ("a: &d0 [1]\n" + "".join(f"d{i}: &d{i} [[[[[[[[[[*d{i - 1}]]]]]]]]]]\n" for i in range(1, 12)),
     "aliases nest values deeper than 100 levels"),
    ("x: *" + "u" * 5000 + "\n", "found undefined alias"),
], ids=["alias_loop", "nested_150", "nested_100k_unclosed", "aliases_nest_deep", "long_undefined_alias"])
def test_yaml_loops_and_deep_nesting_are_one_short_line(tmp_path, text, problem):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_yaml(config)
    msg = str(e.value)
    assert msg.startswith(f"{config}: not valid YAML (") and problem in msg, msg
    assert "\n" not in msg and len(msg) < len(str(config)) + 250


def test_ordinary_configs_load_as_before(tmp_path):
    import yaml

    texts = ["method: NPO\nlr: 1e-4\nbatch-size: 8\nhparams: {beta: 0.1, alpha: 1.0}\n", "", "# only a comment\n",
             "base: &b {beta: 0.1}\nhparams: *b\n", "a: &a {x: 1}\nb: {<<: *a, y: 2}\n", "x: [[[[1]]]]\nd: 2024-01-02\n",
             "data: ../x\r\nout: runs/a\r\n", "s: |\n  two\n  lines\n"]
    for text in texts:
        config = tmp_path / "run.yaml"
        config.write_bytes(text.encode())
        assert load_yaml(config) == (yaml.safe_load(text) or {}), text


def test_an_oversized_config_is_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("# " + "x" * (1024**2) + "\nlr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(config)
    assert str(e.value) == f"{config}: config file of {config.stat().st_size} bytes, over the limit of 1048576 bytes " \
                           f"(1 MiB) for a config file"


# ----------------------------------------------------------------------------------------------------- sizes

def test_an_oversized_data_file_is_refused_by_the_command(bench, target_path, tmp_path):
    out = tmp_path / "run"
    code, err, _ = run_cli(*unlearn_args(target_path, bench, out), env={"OBLIVIATE_MAX_FILE_BYTES": "64"})
    line = one_error_line(code, err, f"{bench}/", "over the limit of 64 bytes for a data file",
                          "set OBLIVIATE_MAX_FILE_BYTES to a larger number of bytes")
    name = line.split(f"{bench}/")[1].split(":")[0]
    assert f"{(bench / name).stat().st_size} bytes" in line
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_every_format_honours_the_size_limit(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"d{suffix}"
    write_records(path, [{"question": "q?", "answer": "a" * 3000}])
    size = path.stat().st_size
    monkeypatch.setenv("OBLIVIATE_MAX_FILE_BYTES", str(size))
    assert len(read_qa(path)) == 1  # exactly at the limit: read
    monkeypatch.setenv("OBLIVIATE_MAX_FILE_BYTES", str(size - 1))
    with pytest.raises(DataError) as e:
        read_qa(path)
    assert str(e.value) == f"{path}: {size} bytes ({size / 1024:.1f} KiB), over the limit of {size - 1} bytes " \
                           f"({(size - 1) / 1024:.1f} KiB) for a data file; set OBLIVIATE_MAX_FILE_BYTES to a " \
                           f"larger number of bytes to read it"


def test_a_bad_size_limit_is_a_config_error(tmp_path, monkeypatch):
    path = tmp_path / "d.json"
    write_records(path, [{"question": "q?", "answer": "a"}])
    for bad in ("lots", "-5", "0", "1.5"):
        monkeypatch.setenv("OBLIVIATE_MAX_FILE_BYTES", bad)
        with pytest.raises(ConfigError, match=r"^OBLIVIATE_MAX_FILE_BYTES = .* must be a whole number of bytes > 0"):
            read_qa(path)


def test_running_out_of_memory_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    write_records(path, [{"question": "q?", "answer": "a"}])

    def exhausted(*_):
        raise MemoryError

    monkeypatch.setattr(formats, "_parse_json_lines", exhausted)
    with pytest.raises(DataError) as e:
        read_records(path)
    assert str(e.value) == f"{path}: too large to load into memory ({path.stat().st_size} bytes); set " \
                           f"OBLIVIATE_MAX_FILE_BYTES lower to refuse such files up front, or split the file"


def test_the_default_limits_are_bounded():
    assert 0 < formats.MAX_FILE_BYTES <= 16 * 1024**3
    assert 128 * 1024 < formats.CSV_FIELD_LIMIT <= formats.MAX_FILE_BYTES


def test_csv_cells_are_bounded_by_the_field_limit(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    long = "word " * 60_000  # 300 KB: over the csv module's default limit, well under obliviate's
    write_records(path, [{"text": long}])
    before = csv.field_size_limit()
    assert read_documents(path)[0].text == long
    assert csv.field_size_limit() == before  # the process-wide setting is restored
    monkeypatch.setattr(formats, "CSV_FIELD_LIMIT", 1000)
    with pytest.raises(DataError, match=r"^.*d\.csv: not valid CSV \(field larger than field limit \(1000\)\)$"):
        read_documents(path)
    assert csv.field_size_limit() == before


# ------------------------------------------------------------------------------------------ CSV, exactly

HOSTILE = [
    "a\r\nb", "a\nb", "a\rb", "\r\n", "\n", "\r", "line\u2028sep", "para\u2029sep", "next\x85line", "fs\x1cgs\x1drs\x1e",
    "vt\x0bff\x0c", "nul\x00byte", "\x00", '"quoted"', '"', '""', "'", "a,b", ",", ',"\n"', "\ttab\t", "  spaces  ",
    " ", "emoji \U0001f389 \u00e9 \u4e2d", "\ufeffbom", "\\", "\\n", "[1, 2]", '["a", "b"]', "[]", "[", "]", "[not json]",
    '"[1]"', '"\\"\\""', '"x"', "null", "1", "true", "", "lone \ud800 surrogate", "=1+1", "-", "#", "q\u2028" * 50,
]


def test_csv_round_trips_hostile_strings_exactly(tmp_path):
    path = tmp_path / "h.csv"
    records = [{"question": f"q{i}?", "answer": "a", "x": s, "y": [s, "w"] if s else ["w"]} for i, s in enumerate(HOSTILE)]
    records.append({"question": "q-missing?", "answer": "a"})  # no x, no y: missing, unlike ""
    write_records(path, records)
    back = read_records(path)
    assert len(back) == len(records)
    for want, got in zip(records, back):
        assert got == {"x": None, "y": None, **want}, (want, got)


def test_read_qa_keeps_hostile_questions_and_answers(tmp_path):
    path = tmp_path / "h.csv"
    texts = [s for s in HOSTILE if s.strip() and "\ud800" not in s]  # a lone surrogate is refused: next test
    write_records(path, [{"question": f"{s}?", "answer": s, "perturbed_answer": [s, s + "!"]} for s in texts])
    items = read_qa(path)
    assert [(it.question, it.answer, it.perturbed_answers) for it in items] == \
           [(f"{s}?", s, [s, s + "!"]) for s in texts]


def test_a_lone_surrogate_is_refused_where_it_stands(tmp_path):
    """Text no tokenizer can encode is refused when read, naming the file, the record and the field."""
    path = tmp_path / "s.json"
    path.write_text('[{"question": "ok?", "answer": "fine"}, {"question": "Who? \\ud800", "answer": "x"}]')
    with pytest.raises(DataError, match=r"s.json: record 1: field 'question' holds a lone surrogate U\+D800"):
        read_qa(path)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({"question": st.text(st.characters(blacklist_categories=()), max_size=12),
                                            "answer": st.one_of(st.none(), st.text(max_size=12)),
                                            "more": st.lists(st.text(st.characters(blacklist_categories=()),
                                                                     max_size=6), max_size=3)}),
                     min_size=1, max_size=5))
def test_csv_round_trips_any_text(scratch, rows):
    path = scratch / "any.csv"
    write_records(path, rows)
    assert read_records(path) == rows


def test_a_csv_split_with_quoted_line_breaks_reads_every_record(bench):
    """An external tool's CSV: multi-line cells quoted, U+2028 and friends unquoted, as csv.writer leaves them."""
    recs = json.loads((bench / "forget10.json").read_text())
    (bench / "forget10.json").unlink()
    seps = ["\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]
    rows = [{"question": r["question"], "answer": r["answer"] + seps[i % len(seps)] + "More text."}
            for i, r in enumerate(recs)]
    with open(bench / "forget10.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerows(rows)
    text = (bench / "forget10.csv").read_bytes().decode("utf-8")
    assert "\u2028More text." in text and len(text.splitlines()) > 2 * len(recs)  # what splitting at lines would see
    forget = load_benchmark(bench, "forget10").forget
    assert len(forget) == len(recs)
    assert [(it.question, it.answer) for it in forget] == [(r["question"], r["answer"]) for r in rows]


def test_jsonl_round_trips_line_separators(tmp_path):
    path = tmp_path / "d.jsonl"
    records = [{"question": f"q{i}\u2028?", "answer": f"a\x85{i}\u2029"} for i in range(5)]
    write_records(path, records)
    assert "\u2028" in path.read_text(encoding="utf-8")  # written as is, one record a line
    assert read_records(path) == records
    lines = tmp_path / "idk.jsonl"
    lines.write_text("I don't know\u2028really.\nNo idea.\r\n\r\nUnknown.\n", encoding="utf-8")
    assert read_lines(lines) == ["I don't know\u2028really.", "No idea.", "Unknown."]
