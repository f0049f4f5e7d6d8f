"""Train a task sequence with one strategy, evaluating every earlier task every k steps (continual evaluation).

End-of-task evaluation samples the accuracy curve only where it has recovered; evaluating every ``eval_every``
optimizer steps over the whole sequence shows the *stability gap*, the dip in earlier tasks' accuracy right after a new
task starts (De Lange et al., ICLR 2023). ``run_sequence`` returns the accuracy matrix, the curves, the sequence
metrics of ``evaluate.summary`` and the per-module weight change between tasks.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import TrainConfig
from ..engine.loop import train
from .evaluate import accuracy, answer_kinds, forgetting_kinds, summary
from .strategies import Strategy
from .tasks import Task


class Probe:
    """Evaluates every task and the general set every ``every`` optimizer steps of the whole sequence."""

    def __init__(self, tokenizer, tasks: list[Task], general: list, every: int, grad_accum: int, max_length: int):
        self.tok, self.tasks, self.general = tokenizer, tasks, general
        self.every, self.grad_accum, self.max_length = every, grad_accum, max_length
        self.calls = 0
        self.step = 0  # optimizer steps done over the whole sequence
        self.stage = ""
        self.records: list[dict] = []

    def measure(self, model) -> dict:
        accs = {t.name: accuracy(model, self.tok, t.items, self.max_length) for t in self.tasks}
        row = {"step": self.step, "stage": self.stage, "acc": accs}
        if self.general:
            row["general"] = accuracy(model, self.tok, self.general, self.max_length)
        return row

    def __call__(self, model) -> None:
        if self.calls % self.grad_accum == 0:
            self.step = self.calls // self.grad_accum
            measured = self.records and self.records[-1]["step"] == self.step  # a stage's end is the next's start
            if self.every and self.step % self.every == 0 and not measured:
                self.records.append(self.measure(model))
        self.calls += 1


def module_changes(before: dict[str, torch.Tensor], model) -> dict[str, float]:
    """Per parameter tensor: ``||theta_after - theta_before|| / ||theta_before||`` (the FPF analysis's movement)."""
    out = {}
    for n, p in model.named_parameters():
        if n in before:
            b = before[n].float()
            out[n] = float((p.detach().float().cpu() - b).norm() / b.norm().clamp(min=1e-12))
    return out


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


def run_sequence(model, tokenizer, tasks: list[Task], general: list, strategy: Strategy, cfg: TrainConfig,
                 run_dir: str | Path, eval_every: int = 5, progress: bool = False, log=print,
                 sefe: bool = True) -> dict:
    """Learn ``tasks`` in order with ``strategy``; return the run's record (JSON-ready). ``model`` is trained.
    ``sefe``: classify greedy answers of each task just after it is learned and at the end (superficial vs essential
    forgetting), which costs a generation pass over every item."""
    run_dir = Path(run_dir)
    probe = Probe(tokenizer, tasks, general, eval_every, cfg.grad_accum, cfg.max_length)
    start = probe.measure(model)
    base = [start["acc"][t.name] for t in tasks]
    general_start = start.get("general", float("nan"))
    strategy.begin(model, tokenizer, general)
    rows, ends, changes, t0 = [], [], [], time.time()
    kinds_learned: dict[str, list[str]] = {}
    by_name = {t.name: t for t in tasks}
    probe.records.append(start)
    for i, (name, items) in enumerate(strategy.stages(tasks)):
        probe.stage = name
        before = snapshot(model)
        method = strategy.method(name)
        method.probe = probe
        data = strategy.data(items)
        log(f"[obliviate] {strategy.name}: stage {i + 1} {name} ({len(data['train'])} items)")
        steps_before = probe.calls // cfg.grad_accum
        model = train(model, tokenizer, method, data, cfg, run_dir / f"stage{i + 1:02d}-{name}", progress=progress)
        probe.calls = (steps_before + _steps_of(run_dir / f"stage{i + 1:02d}-{name}")) * cfg.grad_accum
        probe.step = probe.calls // cfg.grad_accum
        strategy.after_stage(model, tokenizer, items)
        end = probe.measure(model)
        probe.records.append(end)
        row = [end["acc"][t.name] for t in tasks]
        if name.startswith("consolidate") and rows:  # not a task: the row after the task it follows is replaced
            rows[-1], ends[-1] = row, probe.step
        else:
            rows.append(row)
            ends.append(probe.step)
        changes.append({"stage": name, "change": module_changes(before, model)})
        if sefe and name in by_name:
            kinds_learned[name] = answer_kinds(model, tokenizer, items, cfg.max_length)
    curves = [[(r["step"], r["acc"][t.name]) for r in probe.records] for t in tasks]
    general_final = probe.records[-1].get("general", float("nan"))
    metrics = summary(rows, base, curves, ends, general_start, general_final)
    forgetting = {}
    if sefe and kinds_learned:
        for t in tasks:
            if t.name in kinds_learned:
                forgetting[t.name] = forgetting_kinds(kinds_learned[t.name],
                                                      answer_kinds(model, tokenizer, t.items, cfg.max_length))
        for kind in ("superficial", "essential"):
            metrics[f"{kind}_forgetting"] = sum(f[kind] for f in forgetting.values())
    return {"strategy": strategy.name, "hparams": strategy.hparams(), "tasks": [t.name for t in tasks],
            "stages": [n for n, _ in strategy.stages(tasks) if not n.startswith("consolidate")],
            "accuracy_matrix": rows, "base_accuracy": base,
            "general_start": general_start, "general_final": general_final, "ends": ends,
            "evaluations": probe.records, "metrics": metrics, "forgetting_kinds": forgetting, "module_changes": changes,
            "seconds": round(time.time() - t0, 2)}


def _steps_of(stage_dir: Path) -> int:
    """Optimizer steps the engine ran in one stage (the last line of its ``metrics.jsonl``)."""
    from ..io import read_jsonl

    records = read_jsonl(stage_dir / "metrics.jsonl") if (stage_dir / "metrics.jsonl").exists() else []
    return records[-1]["step"] if records else 0
