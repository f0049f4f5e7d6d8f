"""The catalogue of bad inputs (docs/errors.md): each one stops the command with exit code 2 and one line naming the
file, the record and the field, without a traceback and without leaving anything half-written.

Each case is run through ``obliviate.cli.main`` in-process (the code path of the ``obliviate`` command: an exception
that escaped it would fail the test with a traceback); a few are also run as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from obliviate.cli import main

ERROR = "obliviate: error:"


@dataclass
class Ctx:
    tmp: Path
    bench: Path  # a private copy of the small synthetic benchmark
    target: Path
    oracle: Path
    out: Path

    def unlearn(self, *extra: str) -> list[str]:
        return ["unlearn", "--model", str(self.target), "--data", str(self.bench), "--out", str(self.out),
                "--max-steps", "1", "--batch-size", "4", "--quiet", *extra]

    def model_copy(self, name: str = "model") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.target, dst, ignore=shutil.ignore_patterns("audits"))
        return dst


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], list[str]]
    needles: tuple[str, ...]  # formatted with the Ctx's fields: {bench}, {tmp}, {out}, {target}
    check_written: Callable[[Ctx], None] | None = None  # default: the output folder was never created


CASES: list[Case] = []


def case(id: str, *needles: str, written: Callable[[Ctx], None] | None = None):
    def register(fn):
        CASES.append(Case(id, fn, needles, written))
        return fn

    return register


def records(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def rewrite(path: Path, edit: Callable[[list[dict]], None]) -> None:
    recs = records(path)
    edit(recs)
    path.write_text(json.dumps(recs))


def move_forget_to(ctx: Ctx, suffix: str) -> tuple[Path, list[dict]]:
    """Replace forget10.json by a file of another format holding the same records; returns the new path."""
    recs = records(ctx.bench / "forget10.json")
    (ctx.bench / "forget10.json").unlink()
    return ctx.bench / f"forget10{suffix}", recs


# ---------------------------------------------------------------------------------------------- malformed files

@case("json_malformed", "{bench}/forget10.json", "line 1", "not valid JSON")
def _(ctx):
    (ctx.bench / "forget10.json").write_text("this is { not json")
    return ctx.unlearn()


@case("jsonl_malformed_line", "{bench}/retain90.jsonl", "line 3", "not valid JSON")
def _(ctx):
    recs = records(ctx.bench / "retain90.json")
    (ctx.bench / "retain90.json").unlink()
    lines = [json.dumps(r) for r in recs]
    lines[2] = lines[2][:-5]  # cut the third line short
    (ctx.bench / "retain90.jsonl").write_text("\n".join(lines) + "\n")
    return ctx.unlearn()


@case("csv_extra_values", "{bench}/forget10.csv", "record 1", "more values than header columns")
def _(ctx):
    path, recs = move_forget_to(ctx, ".csv")
    rows = ["question,answer"] + [f'"{r["question"]}","{r["answer"]}"' for r in recs]
    rows[2] += ",surplus"
    path.write_text("\n".join(rows) + "\n")
    return ctx.unlearn()


@case("csv_missing_column", "{bench}/forget10.csv", "record 0", "field 'answer' is missing")
def _(ctx):
    path, recs = move_forget_to(ctx, ".csv")
    path.write_text("question,notes\n" + "".join(f'"{r["question"]}",x\n' for r in recs))
    return ctx.unlearn()


@case("parquet_not_parquet", "{bench}/forget10.parquet", "not a readable Parquet file")
def _(ctx):
    path, _ = move_forget_to(ctx, ".parquet")
    path.write_bytes(b"PAR1 this is not really parquet")
    return ctx.unlearn()


@case("parquet_wrong_type", "{bench}/forget10.parquet", "record 0", "field 'answer' must be text, got int")
def _(ctx):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, recs = move_forget_to(ctx, ".parquet")
    pq.write_table(pa.Table.from_pylist([{"question": r["question"], "answer": i} for i, r in enumerate(recs)]), path)
    return ctx.unlearn()


@case("not_utf8", "{bench}/retain90.json", "not UTF-8 text")
def _(ctx):
    (ctx.bench / "retain90.json").write_bytes(b'[{"question": "caf\xe9?", "answer": "x"}]')
    return ctx.unlearn()


@case("record_not_an_object", "{bench}/forget10.json", "record 1", "expected an object with named fields, got list")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r.__setitem__(1, ["a", "b"]))
    return ctx.unlearn()


@case("split_empty", "{bench}/forget10.json", "holds no records")
def _(ctx):
    (ctx.bench / "forget10.json").write_text("[]")
    return ctx.unlearn()


@case("split_file_missing", "{bench}", "no file for split 'retain90'")
def _(ctx):
    (ctx.bench / "retain90.json").unlink()
    return ctx.unlearn()


@case("benchmark_folder_missing", "{tmp}/no-such-bench", "benchmark folder not found")
def _(ctx):
    return ["unlearn", "--model", str(ctx.target), "--data", str(ctx.tmp / "no-such-bench"), "--out", str(ctx.out)]


@case("forget_split_badly_named", "forget split 'ten'", "forgetNN")
def _(ctx):
    return ctx.unlearn("--forget-split", "ten")


# --------------------------------------------------------------------------------- wrong types, missing, empty

@case("answer_wrong_type", "{bench}/forget10.json", "record 4", "field 'answer' must be text, got int")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[4].__setitem__("answer", 42))
    return ctx.unlearn()


@case("question_wrong_type", "{bench}/retain90.json", "record 7", "field 'question' must be text, got list")
def _(ctx):
    rewrite(ctx.bench / "retain90.json", lambda r: r[7].__setitem__("question", ["what?"]))
    return ctx.unlearn()


@case("paraphrase_wrong_type", "{bench}/forget10.json", "record 2", "field 'paraphrased_answer' must be text, got dict")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[2].__setitem__("paraphrased_answer", {"text": "x"}))
    return ctx.unlearn()


@case("perturbed_wrong_type", "{bench}/forget10.json", "record 3", "field 'perturbed_answer' must be a list of non-empty "
                                                                    "texts")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[3].__setitem__("perturbed_answer", [1, 2]))
    return ctx.unlearn()


@case("answer_missing", "{bench}/retain90.json", "record 3", "field 'answer' is missing")
def _(ctx):
    rewrite(ctx.bench / "retain90.json", lambda r: r[3].pop("answer"))
    return ctx.unlearn()


@case("question_missing", "{bench}/forget10.json", "record 0", "field 'question' is missing")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[0].pop("question"))
    return ctx.unlearn()


@case("answer_empty", "{bench}/forget10.json", "record 5", "field 'answer' is empty")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[5].__setitem__("answer", "   "))
    return ctx.unlearn()


@case("duplicate_ids", "{bench}/retain90.json", "record 3", "field 'id' = 'author000-fact01' repeats record 1")
def _(ctx):
    rewrite(ctx.bench / "retain90.json", lambda r: r[3].__setitem__("id", r[1]["id"]))
    assert records(ctx.bench / "retain90.json")[1]["id"] == "author000-fact01"
    return ctx.unlearn()


@case("perturbed_missing_in_some_records", "{bench}/forget10.json", "record 2", "field 'perturbed_answer' is missing",
      "truth ratio")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[2].pop("perturbed_answer"))
    return ctx.unlearn("--oracle", str(ctx.oracle), "--no-generate")


@case("perturbed_missing_for_forget_quality", "{bench}/forget10.json", "record 0", "field 'perturbed_answer' is missing",
      "forget quality (--oracle)")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: [x.pop("perturbed_answer") for x in r])
    return ctx.unlearn("--oracle", str(ctx.oracle), "--no-generate")


LONG_QUESTION = "Which of the many fictional authors wrote this? " * 40


@case("prompt_longer_than_context", "{bench}/retain90.json", "record 6", "field 'question'",
      "too long for the model's context of 128 positions")
def _(ctx):
    rewrite(ctx.bench / "retain90.json", lambda r: r[6].__setitem__("question", LONG_QUESTION))
    return ctx.unlearn()  # max_length 256 by default; the tiny model has 128 positions


@case("prompt_longer_than_max_length", "{bench}/forget10.json", "record 1", "field 'question'",
      "too long for max_length 64")
def _(ctx):
    rewrite(ctx.bench / "forget10.json", lambda r: r[1].__setitem__("question", LONG_QUESTION))
    return ctx.unlearn("--max-length", "64")


@case("paraphrased_question_too_long_for_the_audit", "{bench}/retain_perturbed.json", "record 2",
      "field 'paraphrased_question'", "too long for")
def _(ctx):
    rewrite(ctx.bench / "retain_perturbed.json", lambda r: r[2].__setitem__("paraphrased_question", LONG_QUESTION))
    return ctx.unlearn("--oracle", str(ctx.oracle), "--no-generate")


# -------------------------------------------------------------------------------------------------------- models

@case("model_folder_missing", "{tmp}/no-such-model", "model folder does not exist")
def _(ctx):
    ctx.target = ctx.tmp / "no-such-model"
    return ctx.unlearn()


@case("model_without_weights", "{tmp}/model", "model folder has no weights")
def _(ctx):
    ctx.target = ctx.model_copy()
    (ctx.target / "model.safetensors").unlink()
    return ctx.unlearn()


@case("model_without_config", "{tmp}/model", "model folder has no config.json")
def _(ctx):
    ctx.target = ctx.model_copy()
    (ctx.target / "config.json").unlink()
    return ctx.unlearn()


@case("model_is_a_file", "{bench}/full.json", "expected a model folder")
def _(ctx):
    ctx.target = ctx.bench / "full.json"
    return ctx.unlearn()


@case("model_weights_damaged", "{tmp}/model", "could not load the model", "SafetensorError")
def _(ctx):
    ctx.target = ctx.model_copy()
    (ctx.target / "model.safetensors").write_bytes(b"\x00" * 64)
    return ctx.unlearn()


def _pickle_model(ctx) -> Path:
    from safetensors.torch import load_file

    model = ctx.model_copy("pickled")
    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    return model


@case("model_pickle_without_allow_pickle", "{tmp}/pickled", "pickle checkpoint", "--allow-pickle")
def _(ctx):
    ctx.target = _pickle_model(ctx)
    return ctx.unlearn()


def _tokenizer_without(ctx, *keys) -> Path:
    model = ctx.model_copy("no-eos")
    path = model / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for k in keys:
        config.pop(k, None)
    path.write_text(json.dumps(config))
    return model


@case("tokenizer_without_eos", "{tmp}/no-eos", "tokenizer has no EOS token", "eos_token")
def _(ctx):
    ctx.target = _tokenizer_without(ctx, "eos_token")
    return ctx.unlearn()


@case("tokenizer_without_pad_or_eos", "{tmp}/no-eos", "tokenizer has neither a pad nor an EOS token", "eos_token")
def _(ctx):
    ctx.target = _tokenizer_without(ctx, "eos_token", "pad_token")
    return ctx.unlearn()


# ---------------------------------------------------------------------------------- methods and hyperparameters

@case("unknown_method", "unknown method 'Forgetron'", "NPO")
def _(ctx):
    return ctx.unlearn("--method", "Forgetron")


@case("unknown_hyperparameter", "method NPO", "unknown hyperparameter 'gamma2'", "beta")
def _(ctx):
    return ctx.unlearn("--method", "NPO", "--hp", "gamma2=1")


@case("hyperparameter_out_of_range", "method NPO", "hyperparameter 'beta' = -1.0 is out of range")
def _(ctx):
    return ctx.unlearn("--method", "NPO", "--hp", "beta=-1")


@case("hyperparameter_not_a_number", "method NPO", "hyperparameter 'alpha' = 'lots' is not a number")
def _(ctx):
    return ctx.unlearn("--method", "NPO", "--hp", "alpha=lots")


@case("hyperparameter_not_finite", "method NPO", "hyperparameter 'beta' = 'nan' is not a finite number")
def _(ctx):
    return ctx.unlearn("--method", "NPO", "--hp", "beta=nan")


@case("hyperparameter_not_a_choice", "method GradDiff", "hyperparameter 'retain_loss' = 'l2' must be one of")
def _(ctx):
    return ctx.unlearn("--method", "GradDiff", "--hp", "retain_loss=l2")


# ------------------------------------------------------------------------------------------------------ options

@case("learning_rate_not_positive", "option 'lr' = 0.0 must be > 0")
def _(ctx):
    return ctx.unlearn("--lr", "0")


@case("batch_size_zero", "option 'batch_size' = 0 must be >= 1")
def _(ctx):
    return ctx.unlearn("--batch-size", "0")


@case("max_length_too_small", "option 'max_length' = 4 must be >= 8")
def _(ctx):
    return ctx.unlearn("--max-length", "4")


@case("loss_bound_not_positive", "option 'loss_bound' = -1.0 must be > 0")
def _(ctx):
    return ctx.unlearn("--loss-bound", "-1")


@case("seed_negative", "option 'seed' = -1 must be in [0, 2**32)")
def _(ctx):
    return ctx.unlearn("--seed", "-1")


@case("audit_batch_size_zero", "option 'audit_batch_size' = 0 must be a whole number >= 1")
def _(ctx):
    return ctx.unlearn("--oracle", str(ctx.oracle), "--audit-batch-size", "0")


# ------------------------------------------------------------------------------------------------ output folder

def _out_untouched(ctx):
    assert ctx.out.is_file() and ctx.out.read_text() == "keep me"


@case("output_folder_is_a_file", "{out}", "--out names a file", written=_out_untouched)
def _(ctx):
    ctx.out.write_text("keep me")
    return ctx.unlearn()


@case("output_folder_under_a_file", "{tmp}/blocker/run", "cannot be created", "{tmp}/blocker is a file")
def _(ctx):
    (ctx.tmp / "blocker").write_text("a file where a folder should be")
    ctx.out = ctx.tmp / "blocker" / "run"
    return ctx.unlearn()


def _unwritable_folder(ctx) -> Path:
    if os.geteuid() != 0:
        ro = ctx.tmp / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        return ro
    import tempfile

    for candidate in (Path("/sys"), Path("/proc")):  # root may write anywhere else
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no folder here is read-only for this user")


@case("output_folder_not_writable", "--out is not writable")
def _(ctx):
    ctx.out = _unwritable_folder(ctx) / "run"
    return ctx.unlearn()


# ------------------------------------------------------------------------------------------------- config files

def _config(ctx, text: str | bytes, name: str = "run.yaml") -> str:
    path = ctx.tmp / "cfg" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _with_config(ctx, text, name="run.yaml"):
    return ["unlearn", "--config", _config(ctx, text, name), "--model", str(ctx.target), "--data", str(ctx.bench),
            "--out", str(ctx.out), "--max-steps", "1", "--quiet"]


@case("config_not_yaml", "{tmp}/cfg/run.yaml", "not valid YAML", "line 2")
def _(ctx):
    return _with_config(ctx, "method: NPO\nlr: 0.1: 2\n")


@case("config_not_text", "{tmp}/cfg/run.yaml", "not a UTF-8 text file")
def _(ctx):
    return _with_config(ctx, b"\xff\xfe\x00binary")


@case("config_not_a_mapping", "{tmp}/cfg/run.yaml", "expected a mapping of option names to values, got list")
def _(ctx):
    return _with_config(ctx, "- lr: 0.1\n- method: NPO\n")


@case("config_missing", "{tmp}/no-such.yaml", "config file not found")
def _(ctx):
    return ["unlearn", "--config", str(ctx.tmp / "no-such.yaml"), "--model", str(ctx.target), "--out", str(ctx.out)]


@case("config_unknown_option", "{tmp}/cfg/run.yaml", "unknown option 'bogus_option'")
def _(ctx):
    return _with_config(ctx, "method: NPO\nbogus_option: 3\n")


@case("config_value_wrong_type", "{tmp}/cfg/run.yaml", "option 'lr' = 'fast' should be a number")
def _(ctx):
    return _with_config(ctx, "lr: fast\n")


@case("config_value_not_whole", "{tmp}/cfg/run.yaml", "option 'batch-size' = 2.5 should be a whole number")
def _(ctx):
    return _with_config(ctx, "batch-size: 2.5\n")


@case("config_value_not_a_choice", "{tmp}/cfg/run.yaml", "option 'scheduler' = 'sawtooth' must be one of")
def _(ctx):
    return _with_config(ctx, "scheduler: sawtooth\n")


@case("config_flag_not_boolean", "{tmp}/cfg/run.yaml", "option 'resume' = 'maybe' should be true or false")
def _(ctx):
    return _with_config(ctx, "resume: maybe\n")


@case("config_hparams_not_a_mapping", "{tmp}/cfg/run.yaml", "'hparams' must be a mapping")
def _(ctx):
    return _with_config(ctx, "hparams: [beta, 0.1]\n")


@case("config_data_path_escapes", "{tmp}/cfg/run.yaml", "option 'data' = '../bench'", "leads outside the config "
                                                                                        "file's folder")
def _(ctx):
    path = _config(ctx, "data: ../bench\n")  # ../bench exists: the path is refused, not just missing
    return ["unlearn", "--config", path, "--model", str(ctx.target), "--out", str(ctx.out), "--max-steps", "1"]


# -------------------------------------------------------------------------------------------- resume, divergence

def _resume_refused(ctx):
    assert json.loads((ctx.out / "config.json").read_text())["hparams"]["beta"] == 0.5  # untouched
    assert sorted(p.name for p in ctx.out.iterdir()) == [".obliviate-run", "config.json"]


@case("resume_a_different_run", "{out}/config.json", "--resume needs the settings this folder was run with",
      "'hparams.beta' was 0.5, now 0.1", written=_resume_refused)
def _(ctx):
    import dataclasses

    from obliviate.cli import _train_options, build_parser
    from obliviate.data import load_benchmark
    from obliviate.methods import make_method
    from obliviate.pipeline import train_config

    # the run folder that `unlearn --hp beta=0.5` makes: its marker and config.json (the fields of pipeline.unlearn),
    # without the training
    ctx.out.mkdir()
    (ctx.out / ".obliviate-run").write_text("{}")
    bench = load_benchmark(ctx.bench, "forget10")
    args = build_parser().parse_args(ctx.unlearn("--hp", "beta=0.5"))
    m = make_method("NPO", beta=0.5)
    (ctx.out / "config.json").write_text(json.dumps({
        "method": m.name, "hparams": m.hparams(),
        "train": dataclasses.asdict(train_config("unlearn", ctx.target, _train_options(args))),
        "model": str(ctx.target), "benchmark": str(bench.root), "forget_split": "forget10", "lora": None,
        "data_fingerprint": bench.fingerprint()}))
    return ctx.unlearn("--hp", "beta=0.1", "--resume")


def _diverged(ctx):
    status = json.loads((ctx.out / "status.json").read_text())
    assert status["state"] == "diverged" and status["step"] == 0
    assert not (ctx.out / "model").exists() and not (ctx.out / "report.json").exists()


@case("loss_past_the_bound", "step 1: loss is", "(bound 1e-06)", "last good checkpoint: none", written=_diverged)
def _(ctx):
    return ctx.unlearn("--loss-bound", "1e-6", "--max-steps", "2")


# ---------------------------------------------------------------------------------------------------- the tests

@pytest.fixture
def ctx(small_bench_dir, trained_models, tmp_path) -> Ctx:
    bench = tmp_path / "bench"
    shutil.copytree(small_bench_dir, bench)
    return Ctx(tmp=tmp_path, bench=bench, target=trained_models["target"], oracle=trained_models["oracle"],
               out=tmp_path / "run")


def error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(ERROR)]
    assert len(lines) == 1, err
    return lines[0]


MESSAGES: dict[str, str] = {}


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, capsys):
    argv = case.setup(ctx)
    code = main(argv)
    line = error_line(code, capsys.readouterr().err)
    for needle in case.needles:
        assert needle.format(**vars(ctx)) in line, line
    if case.check_written is None:
        assert not ctx.out.exists(), sorted(p.name for p in ctx.out.rglob("*"))
    else:
        case.check_written(ctx)
    MESSAGES[case.id] = line.replace(str(ctx.tmp), "TMP")


def test_every_message_is_distinct():
    if len(MESSAGES) < len(CASES):
        pytest.skip("runs after the whole catalogue")
    assert len(set(MESSAGES.values())) == len(MESSAGES)


@pytest.mark.parametrize("case_id", ["jsonl_malformed_line", "tokenizer_without_eos"])
def test_bad_input_in_a_real_process(case_id, ctx):
    """The installed command (not just main()) prints the one line and exits 2 without a traceback."""
    case = next(c for c in CASES if c.id == case_id)
    argv = case.setup(ctx)
    p = subprocess.run([sys.executable, "-m", "obliviate", *argv], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = error_line(p.returncode, p.stderr)
    for needle in case.needles:
        assert needle.format(**vars(ctx)) in line, line
    assert not ctx.out.exists()


def test_forget_and_retain_overlap_is_one_warning_line_and_the_run_goes_on(ctx, capsys):
    forget = records(ctx.bench / "forget10.json")
    rewrite(ctx.bench / "retain90.json", lambda r: r.extend(forget[:2]))
    assert main(ctx.unlearn("--batch-size", "2")) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("obliviate: warning:")]
    assert warnings == [f"obliviate: warning: {ctx.bench}/retain90.json: 2 of 92 retain items (first: record 90) also "
                        f"appear in forget10.json; they are both forgotten and kept"], err
    assert ERROR not in err and "Traceback" not in err
    assert json.loads((ctx.out / "status.json").read_text())["state"] == "completed"


def test_allow_pickle_loads_a_pickle_checkpoint(ctx, capsys):
    ctx.target = _pickle_model(ctx)
    assert main(ctx.unlearn("--allow-pickle", "--batch-size", "2")) == 0, capsys.readouterr().err
    assert (ctx.out / "model" / "model.safetensors").exists()  # what obliviate writes is safetensors again
    assert not (ctx.out / "model" / "pytorch_model.bin").exists()
