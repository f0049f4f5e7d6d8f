"""``obliviate learn`` and ``obliviate requests``: a task sequence learned with several strategies, and a stream of
learn and forget requests, each written to a run folder with ``report.json`` and ``report.html``.

The starting model already knows the benchmark's general-knowledge items (for the tiny model: built in-process and
fine-tuned on them first, the way the target of ``obliviate finetune`` learns them; for another model: loaded, then
fine-tuned on them the same way), so general-knowledge retention has something to retain. Every strategy starts from
a copy of that model. Without ``--data`` the built-in fictional-authors benchmark is written at a small size
(``LEARN_SYNTH``: 20 authors x 5 facts, 5 tasks of 4 new authors).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from ..config import PRETRAINED_LEARN, TINY_LEARN, TrainConfig
from ..continual.requests import parse_requests, run_requests
from ..continual.runner import run_sequence
from ..continual.strategies import make_strategy
from ..continual.tasks import Task, split_tasks, tasks_from_files
from ..data import SynthConfig, load_benchmark, write_fictional_authors
from ..engine.loop import train
from ..engine.run_folder import check_run_folder, run_folder
from ..errors import ConfigError, TrainingError
from ..io import write_json
from ..methods.base import make_method
from ..models import TinyConfig, load_model, tiny_from_texts
from ..pipeline import benchmark_texts, load_data

LEARN_SYNTH = SynthConfig(n_authors=20, facts_per_author=5, n_holdout_authors=2, n_general=10, seed=0)
LEARN_TINY = TinyConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128, seed=0)
# forgets: GradDiff on the tiny model, a few gentle epochs (forgetting 5 items is quick)
TINY_FORGET = {"lr": 1e-3, "epochs": 10, "batch_size": 8, "scheduler": "constant", "warmup_ratio": 0.0}
DEFAULT_STRATEGIES = ("sequential", "multitask", "replay", "ewc", "gere")
GENERAL_REPEAT = 3  # the general items are learned three times over, as pre-training knowledge


def _benchmark(data, out: Path, log):
    if data is None:
        root = out / "data"
        if not (root / "benchmark.json").exists():
            write_fictional_authors(root, LEARN_SYNTH)
        return load_benchmark(root, "forget10")
    return load_data(data, log=log)


def starting_model(bench, model: str, cfg: TrainConfig, run_dir: Path, progress: bool, log):
    """The model before the first task: it knows the general-knowledge items."""
    if model == "tiny":
        torch.manual_seed(LEARN_TINY.seed)
        net, tok = tiny_from_texts(benchmark_texts(bench), LEARN_TINY)
    else:
        net, tok = load_model(model, dtype="fp32")
    if bench.pretrain:
        log(f"[obliviate] starting model: learning {len(bench.pretrain)} general-knowledge items")
        net = train(net, tok, make_method("finetune"), {"train": bench.pretrain * GENERAL_REPEAT}, cfg, run_dir,
                    progress=progress)
    return net, tok


def _tasks(bench, n_tasks: int, authors_per_task: int, task_files) -> list[Task]:
    return tasks_from_files(task_files) if task_files else split_tasks(bench, n_tasks, authors_per_task)


def _cfg(model: str, options: dict | None) -> TrainConfig:
    return (TINY_LEARN if model == "tiny" else PRETRAINED_LEARN).with_options(options)


def learn(out: str | Path, data=None, model: str = "tiny", strategies=DEFAULT_STRATEGIES, n_tasks: int = 5,
          authors_per_task: int = 0, task_files=None, options: dict | None = None,
          strategy_options: dict[str, dict] | None = None, eval_every: int = 5, progress: bool = False,
          log=print) -> dict:
    """Learn the task sequence with every strategy; write ``out/report.json`` and ``out/report.html``."""
    out = Path(out)
    cfg = _cfg(model, options)
    strategy_options = strategy_options or {}
    made = [make_strategy(s, **strategy_options.get(s, {})) for s in strategies]  # checked before anything runs
    unknown = sorted(set(strategy_options) - set(strategies))
    if unknown:
        raise ConfigError(f"options given for strategies not run: {', '.join(unknown)}")
    check_run_folder(out, {"--data": data, "--model": model})
    with run_folder(out, {"--data": data, "--model": model}):
        bench = _benchmark(data, out, log)
        tasks = _tasks(bench, n_tasks, authors_per_task, task_files)
        base, tok = starting_model(bench, model, cfg, out / "base.run", progress, log)
        results, failed = {}, {}
        for strategy in made:
            log(f"[obliviate] strategy {strategy.name}")
            try:
                results[strategy.name] = run_sequence(copy.deepcopy(base), tok, tasks, bench.pretrain, strategy, cfg,
                                                      out / strategy.name, eval_every, progress, log)
            except TrainingError as e:  # one strategy diverging (a too stiff EWC, say) costs only its own row
                log(f"[obliviate] {strategy.name} stopped: {e}")
                failed[strategy.name] = str(e)
        report = {"kind": "continual", "model": model, "data": str(bench.root), "eval_every": eval_every,
                  "accuracy": "mean answer probability (Q_A_Prob)", "train": dataclasses.asdict(cfg),
                  "tasks": [{"name": t.name, "authors": t.authors, "items": len(t.items)} for t in tasks],
                  "strategies": results, "failed": failed, "table": comparison(results),
                  "created": time.strftime("%Y-%m-%d %H:%M")}
        write_json(out / "report.json", report)
        from ..report.continual_page import write_learn_report

        write_learn_report(out)
    return report


def comparison(results: dict[str, dict]) -> list[dict]:
    """One row per strategy: the sequence metrics, task 1 kept (final over just-learned) and final average accuracy
    over multi-task training's."""
    ref = results.get("multitask", {}).get("metrics", {}).get("avg_acc")
    rows = []
    for name, r in results.items():
        R = r["accuracy_matrix"]
        row = {"strategy": name, **r["metrics"]}
        if len(R) > 1:
            row["task1_learned"], row["task1_final"] = R[0][0], R[-1][0]
            row["task1_kept"] = R[-1][0] / R[0][0] if R[0][0] else None
        row["avg_vs_multitask"] = r["metrics"]["avg_acc"] / ref if ref else None
        rows.append(row)
    return rows


def requests(path: str | Path, out: str | Path, data=None, model: str = "tiny", n_tasks: int = 5,
             authors_per_task: int = 0, task_files=None, options: dict | None = None, progress: bool = False,
             log=print) -> dict:
    """Replay the request file ``path``; write ``out/report.json`` and ``out/report.html``."""
    out = Path(out)
    cfg = _cfg(model, options)
    check_run_folder(out, {"--data": data, "--model": model, "FILE": path})
    if data is None and not task_files:  # the request file is checked against the tasks before anything is written
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            bench = load_benchmark(write_fictional_authors(Path(tmp) / "b", LEARN_SYNTH), "forget10")
            parse_requests(path, _tasks(bench, n_tasks, authors_per_task, None))
    else:
        parse_requests(path, _tasks(_benchmark(data, out, log) if not task_files else None, n_tasks,
                                    authors_per_task, task_files))
    with run_folder(out, {"--data": data, "--model": model}):
        bench = _benchmark(data, out, log)
        tasks = _tasks(bench, n_tasks, authors_per_task, task_files)
        plan = parse_requests(path, tasks)
        plan.forget_train = {**(TINY_FORGET if model == "tiny" else {}), **plan.forget_train}
        base, tok = starting_model(bench, model, cfg, out / "base.run", progress, log)
        record = run_requests(base, tok, tasks, bench.pretrain, plan, cfg, out / "requests", progress, log)
        record.update({"kind": "requests", "model": model, "data": str(bench.root), "request_file": str(path),
                       "accuracy": "mean answer probability (Q_A_Prob)", "created": time.strftime("%Y-%m-%d %H:%M")})
        write_json(out / "report.json", record)
        from ..report.continual_page import write_requests_report

        write_requests_report(out)
    return record
