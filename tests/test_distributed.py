"""Multi-process runs on this CPU (gloo, 2 processes through ``torch.distributed.run``) equal one-process runs.

What is shown, on the tiny model and real launches (no mocks):

* NPO and GradDiff on 2 processes with ``grad_accum`` 1 equal 1 process with ``grad_accum`` 2 (the same global batch
  of the same seeded schedule): final weights within 1e-5 max-abs, every logged number of metrics.jsonl within 1e-5;
* rank 1 killed (SIGKILL) mid-run of NPO (reference log-probs cached): ``resume=True`` on 2 processes, and on 1
  process with ``grad_accum`` 2, finish with the uninterrupted run's weights and metrics; a resume with another global
  batch is refused with one line; FSDP/DeepSpeed refusals name what blocks them;
* the audit's per-item passes sharded over 2 processes give the one-process scores, item for item, and `obliviate
  audit` (``pipeline.audit_models``) on 2 processes writes the one-process report.json.

This file is also the worker the launches run (``__main__`` below), so the test and what it launches stay together.
Two launches of 2 processes are made once per module (the ``launched`` fixture); each costs ~15 s of start-up here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = dict(lr=1e-3, max_steps=6, batch_size=4, save_every=2, warmup_ratio=0.0, seed=3)
METHODS = {"npo": ("NPO", {}), "gd": ("GradDiff", {})}
KILL_AT = 5  # rank 1 dies in its 5th loss call: during step 5, after checkpoint step-4


def _final(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "final.safetensors"))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _train(spec: dict, run: Path, grad_accum: int, resume: bool = False, kill_rank: int | None = None) -> None:
    """One engine run of ``spec`` (model folder, benchmark folder, method); the main process saves the final weights."""
    from safetensors.torch import save_file

    from obliviate.config import TrainConfig
    from obliviate.data import load_benchmark
    from obliviate.engine import train
    from obliviate.methods import make_method
    from obliviate.models import load_model
    from obliviate.scoring.passes import process_shard

    model, tok = load_model(spec["model"], dtype="fp32", device="cpu")
    bench = load_benchmark(spec["bench"], "forget10")
    name, hp = METHODS[spec["method"]]
    method = make_method(name, **hp)
    world, rank = process_shard()
    if kill_rank == rank:  # fault injection by the test, not by the library: this process dies mid-step
        calls, loss = [0], method.loss

        def dying_loss(*args):
            calls[0] += 1
            if calls[0] == KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss(*args)

        method.loss = dying_loss
    cfg = TrainConfig(**STEPS, grad_accum=grad_accum)
    net = train(model, tok, method, {"forget": bench.forget, "retain": bench.retain}, cfg, run, resume=resume,
                progress=False)
    if rank == 0:
        save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()},
                  str(run / "final.safetensors"))


def _score(spec: dict, out: Path) -> None:
    """Score every candidate answer of the forget split; the main process writes the per-token numbers."""
    import numpy as np

    from obliviate.data import PromptFormat, load_benchmark
    from obliviate.models import load_model
    from obliviate.scoring.passes import process_shard, score_items

    model, tok = load_model(spec["model"], dtype="fp32", device="cpu")
    bench = load_benchmark(spec["bench"], "forget10")
    scores = score_items(model.eval(), PromptFormat(tok), bench.forget + bench.retain[:7], tok.pad_token_id,
                         batch_size=3)
    if process_shard()[1] == 0:
        rows = [[s.answer.logprobs.tolist(), s.answer.hits.tolist(), s.answer.zscores.tolist(),
                 [p.logprobs.tolist() for p in s.perturbed]] for s in scores]
        out.write_text(json.dumps(rows))
        assert all(np.isfinite(r.answer.logprobs).all() for r in scores)


AUDIT = dict(batch_size=8, max_new_tokens=6, splits=["forget", "holdout"])


def _audit(spec: dict, model: str, out: Path) -> None:
    """``obliviate audit`` as the CLI runs it (``pipeline.audit_models``): report.json in ``out``."""
    from obliviate.config import AuditConfig
    from obliviate.data import load_benchmark
    from obliviate.pipeline import audit_models

    audit_models(model, load_benchmark(spec["bench"], "forget10"), AuditConfig(**AUDIT), out, progress=False,
                 log=lambda *a: None)


def _worker(jobs_file: str) -> None:
    for job in json.loads(Path(jobs_file).read_text()):
        if job["kind"] == "train":
            _train(job, Path(job["run"]), job["grad_accum"], job.get("resume", False), job.get("kill_rank"))
        elif job["kind"] == "audit":
            _audit(job, job["model"], Path(job["out"]))
        else:
            _score(job, Path(job["out"]))


def _launch(jobs: list[dict], folder: Path, name: str) -> subprocess.CompletedProcess:
    jobs_file = folder / f"{name}.json"
    jobs_file.write_text(json.dumps(jobs))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(29400 + (2 * os.getpid() + (name == "second")) % 1000), __file__, str(jobs_file)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def launched(random_model, small_bench_dir, tmp_path_factory):
    """Both launches: (1) the audit, NPO, GradDiff, the sharded scoring, then NPO with rank 1 killed; (2) the resume
    of the killed run."""
    import shutil

    from obliviate.models import save_model

    root = tmp_path_factory.mktemp("dist")
    model, tok = random_model
    save_model(model, tok, root / "model")
    shutil.copytree(root / "model", root / "model1")  # audited on one process: its own audit cache
    base = {"model": str(root / "model"), "bench": str(small_bench_dir)}
    first = [{**base, "kind": "audit", "out": str(root / "audit2")}]
    first += [{**base, "kind": "train", "method": m, "run": str(root / f"{m}2"), "grad_accum": 1} for m in METHODS]
    first.append({**base, "kind": "score", "out": str(root / "scores2.json")})
    first.append({**base, "kind": "train", "method": "npo", "run": str(root / "killed"), "grad_accum": 1,
                  "kill_rank": 1})
    killed = _launch(first, root, "first")
    shutil.copytree(root / "killed", root / "killed1")  # resumed below on one process
    second = _launch([{**base, "kind": "train", "method": "npo", "run": str(root / "killed"), "grad_accum": 1,
                       "resume": True}], root, "second")
    return {"root": root, "base": base, "killed": killed, "resumed": second}


@pytest.fixture(scope="module")
def single(launched):
    """The one-process runs with grad_accum 2 (the same global batch), in this process."""
    root, base = launched["root"], launched["base"]
    for m in METHODS:
        _train({**base, "method": m}, root / f"{m}1", grad_accum=2)
    return root


def _assert_same_run(a: Path, b: Path, tol: float = 1e-5) -> None:
    wa, wb = _final(a), _final(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= tol, f"weights differ by {worst}"
    ma, mb = _metrics(a), _metrics(b)
    gap = max(abs(ra[k] - rb[k]) for ra, rb in zip(ma, mb) for k in ra if k != "elapsed_s")
    print(f"{a.name} vs {b.name}: weights max-abs {worst:.3g}, metrics max-abs {gap:.3g}")  # shown with -s
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(1, STEPS["max_steps"] + 1))
    for ra, rb in zip(ma, mb):
        for key in ra:
            if key != "elapsed_s":
                assert abs(ra[key] - rb[key]) <= tol, (key, ra, rb)


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_equal_one(launched, single, method):
    assert launched["killed"].returncode != 0, launched["killed"].stderr[-2000:]  # the launch had to see the kill
    root = single
    assert (root / f"{method}2" / "final.safetensors").exists(), launched["killed"].stderr[-3000:]
    _assert_same_run(root / f"{method}2", root / f"{method}1")
    # the runs did train: the weights moved from the start, so equal weights are not two untouched copies
    from safetensors.torch import load_file

    start = load_file(str(root / "model" / "model.safetensors"))
    final = _final(root / f"{method}2")
    assert max((final[k] - start[k]).abs().max().item() for k in start if k in final) > 1e-4
    # exactly one metrics line per step: only the main process writes
    assert len(_metrics(root / f"{method}2")) == STEPS["max_steps"]


def test_killed_rank_resumes_to_the_same_result(launched, single):
    root = launched["root"]
    assert launched["resumed"].returncode == 0, launched["resumed"].stderr[-3000:]
    state = json.loads((root / "killed1" / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["batching"] == {"batch_size": 4, "grad_accum": 1, "processes": 2}
    assert not (root / "killed1" / "final.safetensors").exists()  # it really died before the end
    assert (root / "killed1" / "reference_cache.safetensors").exists()  # NPO's reference log-probs, reused on resume
    _assert_same_run(root / "killed", root / "npo1")
    # the same checkpoint resumed on one process with grad_accum 2 (same global batch) ends the same way
    _train({**launched["base"], "method": "npo"}, root / "killed1", grad_accum=2, resume=True)
    _assert_same_run(root / "killed1", root / "npo1")


def test_resume_with_another_global_batch_is_refused(launched):
    from obliviate.engine.checkpoint import check_global_batch
    from obliviate.errors import ConfigError

    ckpt = launched["root"] / "killed1" / "checkpoints" / "step-4"
    check_global_batch(ckpt, 4, 2, 1)  # 4 x 2 x 1 = 4 x 1 x 2: allowed
    with pytest.raises(ConfigError, match=r"global batch of 8 .*this run has 4"):
        check_global_batch(ckpt, 4, 1, 1)


def test_sharded_scoring_equals_one_process(launched):
    root, base = launched["root"], launched["base"]
    assert (root / "scores2.json").exists(), launched["killed"].stderr[-3000:]
    _score(base, root / "scores1.json")
    assert json.loads((root / "scores2.json").read_text()) == json.loads((root / "scores1.json").read_text())


def test_two_process_audit_report_equals_one_process(launched):
    root, base = launched["root"], launched["base"]
    assert (root / "audit2" / "report.json").exists(), launched["killed"].stderr[-3000:]
    _audit(base, str(root / "model1"), root / "audit1")
    two, one = (json.loads((root / d / "report.json").read_text()) for d in ("audit2", "audit1"))
    for report in (two, one):  # when it was made and how long it took are not results
        del report["created"], report["cost"]["seconds"]
    assert two == one
    assert two["metrics"], "the report holds the audit's metrics"


def test_sharded_strategies_refuse_with_one_line(monkeypatch):
    """FSDP/DeepSpeed cannot run on this CPU (accelerate turns them into DDP), so the refusals are checked on an
    object carrying accelerate's own distributed type, the one thing ``check_strategy`` reads."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from obliviate.engine.distributed import check_strategy
    from obliviate.errors import ConfigError
    from obliviate.methods import make_method

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)
    with pytest.raises(ConfigError, match=r"^method SSD keeps its per-parameter importances, which needs the whole "
                                          r"model on every process, and FSDP shards"):
        check_strategy(make_method("SSD"), fsdp)
    with pytest.raises(ConfigError, match=r"LoRA adapters .* DEEPSPEED shards .*ddp.yaml"):
        check_strategy(make_method("NPO"), SimpleNamespace(distributed_type=DistributedType.DEEPSPEED), lora=True)
    with pytest.raises(ConfigError, match=r"^FSDP: obliviate's training loop does not gather sharded weights"):
        check_strategy(make_method("NPO"), fsdp)
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    check_strategy(make_method("SSD"), ddp)  # DDP: every process holds the whole model
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.warns(UserWarning, match="FSDP was asked for, but accelerate runs MULTI_CPU"):
        check_strategy(make_method("NPO"), ddp)


if __name__ == "__main__":
    _worker(sys.argv[1])
