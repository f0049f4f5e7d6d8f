"""The command line as a user meets it: bad input gives one line and exit 2; commands run end to end."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import TOFU

from obliviate.cli import main


def run_cli(*args, cwd=None):
    """Run `python -m obliviate` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "obliviate", *args], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("obliviate: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def bench_copy(small_bench_dir, tmp_path):
    import shutil

    dst = tmp_path / "bench"
    shutil.copytree(small_bench_dir, dst)
    return dst


def test_file_that_is_not_json(bench_copy, target_path, tmp_path):
    (bench_copy / "forget10_perturbed.json").write_text("this is { not json")
    out = tmp_path / "run"
    code, _, err = run_cli("unlearn", "--model", str(target_path), "--data", str(bench_copy), "--out", str(out))
    assert_one_line_error(code, err, "forget10_perturbed.json", "line 1", "not valid JSON")
    assert not out.exists()


def test_record_without_answer(bench_copy, target_path, tmp_path):
    records = json.loads((bench_copy / "retain90.json").read_text())
    del records[3]["answer"]
    (bench_copy / "retain90.json").write_text(json.dumps(records))
    out = tmp_path / "run"
    code, _, err = run_cli("unlearn", "--model", str(target_path), "--data", str(bench_copy), "--out", str(out))
    assert_one_line_error(code, err, "retain90.json", "record 3", "field 'answer' is missing")
    assert not out.exists()


def test_empty_forget_split(bench_copy, target_path, tmp_path):
    (bench_copy / "forget10_perturbed.json").write_text("[]")
    out = tmp_path / "run"
    code, _, err = run_cli("unlearn", "--model", str(target_path), "--data", str(bench_copy), "--out", str(out))
    assert_one_line_error(code, err, "forget10_perturbed.json", "holds no records")
    assert not out.exists()


def test_unknown_method(bench_copy, target_path, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("unlearn", "--model", str(target_path), "--data", str(bench_copy), "--out", str(out),
                           "--method", "Forgetron")
    assert_one_line_error(code, err, "unknown method 'Forgetron'", "NPO")
    assert not out.exists()


def test_model_directory_that_does_not_exist(bench_copy, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("audit", "--model", str(tmp_path / "no-such-model"), "--data", str(bench_copy), "--out", str(out))
    assert_one_line_error(code, err, "no-such-model", "does not exist")
    assert not out.exists()


def test_config_file_with_overrides_and_bad_keys(bench_copy, target_path, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"method": "NPO", "max-steps": 2, "batch_size": 4, "lr": 1e-4,
                                   "hparams": {"beta": 0.2}, "data": str(bench_copy)}))
    out = tmp_path / "run"
    assert main(["unlearn", "--config", str(cfg), "--model", str(target_path), "--out", str(out), "--max-steps", "1",
                 "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["hparams"]["beta"] == 0.2 and saved["train"]["max_steps"] == 1 and saved["train"]["batch_size"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "model" / "model.safetensors").exists()
    cfg.write_text("method: NPO\nbogus_option: 3\n")
    code, _, err = run_cli("unlearn", "--config", str(cfg), "--model", str(target_path), "--out", str(tmp_path / "r2"))
    assert_one_line_error(code, err, "run.yaml", "unknown option 'bogus_option'")
    cfg.write_text("method: [unclosed\n")
    code, _, err = run_cli("unlearn", "--config", str(cfg), "--model", str(target_path), "--out", str(tmp_path / "r2"))
    assert_one_line_error(code, err, "run.yaml", "not valid YAML")


def test_methods_and_data_synth(tmp_path, capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    for name in ("GradAscent", "GradDiff", "NPO", "SimNPO"):
        assert name in listed
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--authors", "10", "--facts", "3"]) == 0
    assert len(json.loads((tmp_path / "s" / "full.json").read_text())) == 30


@pytest.mark.skipif(not TOFU.exists(), reason="shared TOFU data not present")
def test_audit_runs_on_a_tofu_split_with_a_tiny_model(tmp_path):
    from obliviate.data import load_benchmark
    from obliviate.models import TinyConfig, save_model, tiny_from_texts
    from obliviate.pipeline import benchmark_texts

    bench = load_benchmark(TOFU, "forget01")
    model, tok = tiny_from_texts(benchmark_texts(bench)[:4000], TinyConfig(vocab_size=512, hidden_size=32,
                                                                          intermediate_size=64, num_hidden_layers=1,
                                                                          num_attention_heads=2, max_position_embeddings=512))
    save_model(model, tok, tmp_path / "tiny")
    out = tmp_path / "audit"
    assert main(["audit", "--model", str(tmp_path / "tiny"), "--data", str(TOFU), "--forget-split", "forget01",
                 "--out", str(out), "--max-new-tokens", "4", "--max-length", "512", "--quiet",
                 "--protocol", "open-unlearning", "--prompt-format", "plain", "--system-prompt", "Be brief."]) == 0
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert report["protocol"] == "open-unlearning"
    assert report["prompt_format"]["example_prompt"] == "Be brief.\n\nQuestion: {question}\nAnswer:"
    assert report["per_item"]["forget"][0]["prompt"].startswith("Be brief.\n\nQuestion: ")
    # open-unlearning's own files beside report.json, its per-item truth ratios equal to report.json's
    peer = json.loads((out / "TOFU_EVAL.json").read_text())
    assert [v["score"] for v in peer["forget_truth_ratio"]["value_by_index"].values()] == [
        r["truth_ratio"] for r in report["per_item"]["forget"]]
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    assert summary["forget_Q_A_Prob"] == m["forget_Q_A_Prob"] and summary["model_utility"] == m["model_utility"]
    for key in ("forget_Q_A_Prob", "forget_truth_ratio", "model_utility", "mia_min_k", "extraction_strength",
                "ra_Q_A_Prob_normalised", "wf_truth_ratio"):
        assert key in m and m[key] == m[key], key
    assert len(report["per_item"]["forget"]) == 40 and len(report["per_item"]["retain"]) == 400
    assert {"index", "prompt", "target", "prob", "truth_ratio", "rougeL_recall", "generation"} <= set(
        report["per_item"]["forget"][0])


def test_unlearn_gives_a_pretrained_model_gentle_defaults(random_model, trained_models, small_bench_dir, tmp_path):
    """A model not made by the tiny recipe gets lr 1e-5 (not the tiny model's 5e-4) unless --lr is given."""
    from obliviate.models import save_model

    model, tok = random_model
    save_model(model, tok, tmp_path / "pretrained")  # no obliviate.json: not from the tiny recipe
    common = ["unlearn", "--data", str(small_bench_dir), "--method", "GradAscent", "--max-steps", "1", "--quiet"]
    runs = {"pre": ["--model", str(tmp_path / "pretrained")],
            "pre-lr": ["--model", str(tmp_path / "pretrained"), "--lr", "3e-4"],
            "pre-lr-default": ["--model", str(tmp_path / "pretrained"), "--lr", "5e-4"],  # typed, though the default
            "tiny": ["--model", str(trained_models["target"])]}
    for name, extra in runs.items():
        assert main([*common, *extra, "--out", str(tmp_path / name)]) == 0
    train = {name: json.loads((tmp_path / name / "config.json").read_text())["train"] for name in runs}
    assert (train["pre"]["lr"], train["pre"]["grad_accum"], train["pre"]["scheduler"]) == (1e-5, 4, "linear")
    assert train["pre-lr"]["lr"] == 3e-4 and train["pre-lr"]["grad_accum"] == 4
    assert train["pre-lr-default"]["lr"] == 5e-4
    assert (train["tiny"]["lr"], train["tiny"]["grad_accum"]) == (5e-4, 1)
