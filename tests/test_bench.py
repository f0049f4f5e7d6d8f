"""``obliviate bench``: runs, reuse of finished runs, failed rows, the tables it writes, and the command line."""

import json

import pytest

from obliviate.config import AuditConfig, TrainConfig
from obliviate.errors import ConfigError
from obliviate.recipes.bench import MARKER, markdown_table, plan, run_bench


def test_plan_expands_grids_and_seeds_and_validates_first():
    runs = plan(["NPO", "SSD"], {"NPO": {"alpha": "2"}}, {"NPO": {"beta": ["0.1", "0.2"], "train.lr": ["1e-4"]}},
                seeds=[0, 1])
    assert [(r.method, r.hparams.get("beta"), r.train, r.seed) for r in runs if r.method == "NPO"] == [
        ("NPO", "0.1", {"lr": 1e-4}, 0), ("NPO", "0.1", {"lr": 1e-4}, 1),
        ("NPO", "0.2", {"lr": 1e-4}, 0), ("NPO", "0.2", {"lr": 1e-4}, 1)]
    assert runs[0].label == "NPO beta=0.1,train.lr=0.0001 seed=0"
    assert len({r.key() for r in runs}) == len(runs) == 6
    k = plan(["KFADE"], seeds=[3])[0]
    assert k.hparams["seed"] == 3  # methods with their own seed get the run's
    with pytest.raises(ConfigError, match="out of range"):
        plan(["NPO"], {"NPO": {"beta": "-1"}})
    with pytest.raises(ConfigError, match="unknown method"):
        plan(["Nope"])
    with pytest.raises(ConfigError, match="not in the run list"):
        plan(["NPO"], {"SSD": {"alpha": "1"}})
    with pytest.raises(ConfigError, match="unknown training option"):
        plan(["NPO"], {"NPO": {"train.lrr": "1"}})


def test_bench_runs_audits_reuses_and_writes_the_tables(small_bench, trained_models, tmp_path):
    from obliviate.pipeline import audit

    runs = plan(["GradAscent", "SSD", "RMU"], {"RMU": {"layer": "9"}}, {"GradAscent": {"train.max_steps": ["2", "3"]}})
    out = tmp_path / "bench"
    md = tmp_path / "results.md"
    md.write_text("old table\n" + MARKER + "\n\n## Reading\n\nhand-written text\n")
    logs = []
    acfg = AuditConfig(generate=False)
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=4, scheduler="constant")
    rows = run_bench(small_bench, runs, out, cfg, acfg, models=trained_models, markdown=md, command="obliviate bench x",
                     progress=False, log=logs.append)
    assert [r["method"] for r in rows] == ["target", "oracle", "GradAscent train.max_steps=2",
                                           "GradAscent train.max_steps=3", "SSD", "RMU"]
    ga2, ga3, ssd, rmu = rows[2:]
    assert ga2["steps"] == 2 and ga3["steps"] == 3 and ga2["time_per_step_s"] > 0
    assert ssd["status"] == "ok" and ssd["time_per_step_s"] is None and ssd["unlearn_s"] > 0
    assert rmu["status"].startswith("failed") and "decoder layers" in rmu["status"]
    # the row's numbers are the audit of the run's model compared with the oracle
    again = audit(tmp_path / "bench" / "runs" / ssd["run_dir"].split("/runs/")[1] / "model", small_bench, acfg,
                  progress=False, log=lambda *a: None)
    assert ssd["forget_prob"] == pytest.approx(again["metrics"]["forget_Q_A_Prob"])
    assert rows[0]["forget_prob"] > ssd["forget_prob"]  # SSD forgets something
    saved = json.loads((out / "bench.json").read_text())
    assert saved["complete"] and [r["method"] for r in saved["rows"]] == [r["method"] for r in rows]
    table = (out / "results.md").read_text()
    assert "Regenerate with: `obliviate bench x`" in table
    assert table.count("\n| ") == len(rows) + 1 and "failed" in table
    text = md.read_text()
    assert "old table" not in text and text.endswith("## Reading\n\nhand-written text\n") and MARKER in text
    assert "<html" in (out / "report.html").read_text(encoding="utf-8").lower()
    # a second bench reuses the finished runs
    logs.clear()
    run_bench(small_bench, runs, out, cfg, acfg, models=trained_models, progress=False, log=logs.append)
    assert sum("using the finished run" in str(x) for x in logs) == 3


def test_markdown_table_marks_references_and_failures():
    rows = [{"method": "target", "reference": True, "forget_quality": 1e-9, "model_utility": 0.7},
            {"method": "NPO", "settings": "alpha=5", "forget_quality": 0.5, "model_utility": 0.61,
             "time_per_step_s": 0.08, "unlearn_s": 12.0, "status": "ok"},
            {"method": "RMU", "settings": "layer=9", "status": "failed: layer"}]
    table = markdown_table(rows).splitlines()
    assert table[2].startswith("| *target* (reference) | before unlearning | 1.0e-09 | 0.700 |")
    assert table[3] == "| NPO | alpha=5 | 0.500 | 0.610 | – | – | – | 0.080 | 12.000 |"
    assert table[4].startswith("| RMU | layer=9 | failed: layer |")


def test_cli_bench_errors_are_one_line(capsys, small_bench_dir, tmp_path):
    from obliviate.cli import main

    common = ["--data", str(small_bench_dir), "--out", str(tmp_path)]
    assert main(["bench", "--methods", "Nope", *common]) == 2
    assert "unknown method 'Nope'" in capsys.readouterr().err
    assert main(["bench", "--methods", "NPO", "--hp", "beta=1", *common]) == 2
    assert "METHOD:KEY=VALUE" in capsys.readouterr().err
    assert main(["bench", "--methods", "NPO", "--grid", "NPO:beta=-1,0.1", *common]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["bench", "--methods", "NPO", "--seeds", "a", *common]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_workers_unlearn_runs_side_by_side_and_equal_one_after_the_other(small_bench, small_bench_dir, trained_models,
                                                                          tmp_path):
    """--workers 2: two processes unlearn at once; the bench reuses their runs and its rows equal a sequential bench."""
    runs = plan(["GradAscent", "NPO"], {}, {})
    acfg = AuditConfig(generate=False, splits=["forget", "retain", "holdout"])
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=4, scheduler="constant")
    data = {"data": str(small_bench_dir), "forget_split": "forget10", "authors": 0, "facts_per_author": 0}
    one = run_bench(small_bench, runs, tmp_path / "one", cfg, acfg, models=trained_models, progress=False,
                    log=lambda *a: None)
    logs = []
    two = run_bench(small_bench, runs, tmp_path / "two", cfg, acfg, models=trained_models, progress=False,
                    log=logs.append, workers=2, data_args=data)
    assert any("2 runs on 2 worker processes" in str(x) for x in logs)
    assert sum("using the finished run" in str(x) for x in logs) == 2  # the workers' runs, audited here
    for a, b in zip(one[2:], two[2:]):
        assert a["status"] == b["status"] == "ok"
        assert a["forget_prob"] == pytest.approx(b["forget_prob"], rel=1e-6)
        assert a["steps"] == b["steps"] == 2
