"""Never lose a run: a SIGKILLed `obliviate unlearn` resumes to the uninterrupted result; a crash never looks finished;
NaN / infinite / out-of-bound losses stop the run and keep the last good checkpoint."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from obliviate.cli import main
from obliviate.config import TrainConfig
from obliviate.engine import train
from obliviate.errors import TrainingError
from obliviate.methods import make_method
from obliviate.methods.base import Method

STEPS = 8


def unlearn_args(trained_models, bench_dir, out):
    return ["unlearn", "--model", str(trained_models["target"]), "--data", str(bench_dir), "--out", str(out),
            "--method", "NPO", "--max-steps", str(STEPS), "--batch-size", "4", "--save-every", "2", "--seed", "3",
            "--oracle", str(trained_models["oracle"]), "--no-generate", "--quiet"]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_sigkilled_unlearn_resumes_to_the_uninterrupted_report(trained_models, small_bench_dir, tmp_path):
    # the uninterrupted run (in-process: the same code path as the command, without a second interpreter start)
    full = tmp_path / "full"
    assert main(unlearn_args(trained_models, small_bench_dir, full)) == 0

    # the same run in a subprocess, SIGKILLed as soon as its first checkpoint is complete
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "obliviate", *unlearn_args(trained_models, small_bench_dir, killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("step-*/trainer_state.json")):
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before a checkpoint appeared: " \
                                    f"{proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert still_running and proc.returncode == -signal.SIGKILL
    # a killed run never looks finished
    assert json.loads((killed / "status.json").read_text())["state"] == "running"
    assert not (killed / "model").exists() and not (killed / "report.json").exists()
    logged = read_lines(killed / "metrics.jsonl")
    assert 1 <= len(logged) < STEPS
    # the kill may land in the middle of a log line: leave a cut-off line behind, as such a kill would
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"step": %d, "loss": 0.12' % (len(logged) + 1))

    # `obliviate unlearn --resume` with the same options finishes the run
    p = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((killed / "status.json").read_text())["state"] == "completed"

    # final weights, per-step log and report agree with the uninterrupted run to 1e-6
    wa, wb = load_file(str(full / "model" / "model.safetensors")), load_file(str(killed / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    la, lb = read_lines(full / "metrics.jsonl"), read_lines(killed / "metrics.jsonl")
    assert [r["step"] for r in lb] == list(range(1, STEPS + 1))
    for ra, rb in zip(la, lb):
        for key in ("loss", "forget_loss", "retain_loss", "lr", "epoch"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-6), (ra["step"], key)
    ra, rb = json.loads((full / "report.json").read_text()), json.loads((killed / "report.json").read_text())
    assert ra["metrics"].keys() == rb["metrics"].keys() and "forget_quality" in ra["metrics"]
    metric_diff = max(abs(ra["metrics"][k] - rb["metrics"][k]) for k in ra["metrics"]
                      if not (math.isnan(ra["metrics"][k]) and math.isnan(rb["metrics"][k])))
    print(f"\nresume vs uninterrupted: max |weight diff| {weight_diff:.3g}, max |report metric diff| {metric_diff:.3g}")
    assert weight_diff <= 1e-6 and metric_diff <= 1e-6
    # seeds and library versions are recorded in the report
    for report in (ra, rb):
        assert report["config"]["seed"] == 3 and report["config"]["max_steps"] == STEPS
        assert {"python", "torch", "transformers", "accelerate"} <= set(report["versions"]) and report["config_hash"]


@dataclass
class BreakAt(Method):
    """NPO's loss until the ``at``-th batch, which gives ``value`` (NaN, inf, huge) or raises ``RuntimeError``."""

    at: int = 10**9
    value: float = float("nan")
    calls: int = 0
    uses_retain = True
    reference = "logprobs"

    def loss(self, model, batch, ref):
        self.calls += 1
        loss, logs = make_method("NPO").loss(model, batch, ref)
        if self.calls == self.at:
            if self.value is None:
                raise RuntimeError("simulated failure inside the loss")
            return loss * 0 + self.value, logs
        return loss, logs


@pytest.mark.parametrize("value,shown", [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf"),
                                         (5e4, "50000.0")])
def test_bad_loss_stops_the_run_and_keeps_the_last_good_checkpoint(load_target, small_bench, tmp_path, value, shown):
    data = {"forget": small_bench.forget, "retain": small_bench.retain}
    cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=4, save_every=2, scheduler="constant", loss_bound=1e4)
    model, tok = load_target()
    with pytest.raises(TrainingError) as e:
        train(model, tok, BreakAt(at=3, value=value), data, cfg, tmp_path, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"step 3: loss is {shown} (bound 10000.0); run stopped, last good checkpoint: ")
    assert msg.rstrip().endswith("(lower --lr, or raise --loss-bound)") and "\n" not in msg
    assert str(tmp_path / "checkpoints" / "step-2") in msg
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "diverged" and status["step"] == 2
    assert json.loads((tmp_path / "checkpoints" / "step-2" / "trainer_state.json").read_text())["step"] == 2
    assert [r["step"] for r in read_lines(tmp_path / "metrics.jsonl")] == [1, 2]
    if value != value:  # NaN: the kept checkpoint is good, and resuming from it finishes the run
        model, tok = load_target()
        model = train(model, tok, BreakAt(), data, cfg, tmp_path, resume=True, progress=False)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert [r["step"] for r in read_lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


def test_an_exception_marks_the_run_failed_and_a_fresh_run_starts_clean(load_target, small_bench, tmp_path):
    data = {"forget": small_bench.forget, "retain": small_bench.retain}
    cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=4, save_every=2)
    model, tok = load_target()
    with pytest.raises(RuntimeError, match="simulated failure"):
        train(model, tok, BreakAt(at=3, value=None), data, cfg, tmp_path, progress=False)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status == {"state": "failed", "step": 2, "error": "RuntimeError: simulated failure inside the loss",
                      "last_checkpoint": str(tmp_path / "checkpoints" / "step-2")}
    # a fresh run (no resume) in the same folder does not inherit the failed run's checkpoints or reference cache
    stale_cache = (tmp_path / "reference_cache.safetensors").stat().st_mtime_ns
    model, tok = load_target()
    train(model, tok, BreakAt(), data, TrainConfig(lr=1e-3, max_steps=1, batch_size=4), tmp_path, progress=False)
    assert not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "reference_cache.safetensors").stat().st_mtime_ns != stale_cache
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "running"  # the caller marks completion
    assert [r["step"] for r in read_lines(tmp_path / "metrics.jsonl")] == [1]
