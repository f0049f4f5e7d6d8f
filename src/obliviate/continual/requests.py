"""A stream of learn and forget requests: the model's knowledge over its life, audited after every request.

A request file is YAML or JSON, a mapping::

    learn_strategy: replay          # a continual strategy (continual.strategies), default replay
    learn_options: {}               # its hyperparameters
    forget_method: GradDiff         # an unlearning method (obliviate methods), default GradDiff
    forget_options: {}              # its hyperparameters
    forget_train: {}                # training options for forgets (lr, epochs, ...) on top of the learn settings
    requests:
      - learn: task1                # a task of the sequence, by name
      - forget: Corren Quivordun    # an author (entity) learned by an earlier request
      - learn: task2

Every request is checked against the tasks before anything is trained or written (``parse_requests``): one line
naming the file, the request and the field, exit code 2. ``run_requests`` replays the stream; after each request it
measures what should hold: each forgotten author stays forgotten (forget quality, TOFU's KS test on truth ratios,
against an *oracle* trained from the starting model on exactly the items that should remain, the general ones
included), each learned task stays learned (accuracy relative to just after it was learned, forgotten authors' items
left out) and utility holds (the general-knowledge accuracy).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig, load_yaml
from ..engine.loop import train
from ..errors import ConfigError
from ..methods.base import make_method
from ..scoring import metrics as M
from ..scoring.passes import score_items
from .evaluate import accuracy
from .strategies import make_strategy
from .strategies.sequential import TaskNLL
from .tasks import Task, group_by_entity

KEYS = ("learn_strategy", "learn_options", "forget_method", "forget_options", "forget_train", "requests")


@dataclass
class RequestPlan:
    requests: list[tuple[str, str]]  # ("learn", task name) or ("forget", author)
    learn_strategy: str = "replay"
    learn_options: dict = field(default_factory=dict)
    forget_method: str = "GradDiff"
    forget_options: dict = field(default_factory=dict)
    forget_train: dict = field(default_factory=dict)


def _mapping(path, key, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: field '{key}' must be a mapping of names to values, got {type(value).__name__}")
    return value


def parse_requests(path: str | Path, tasks: list[Task]) -> RequestPlan:
    """Read and check a request file against ``tasks``; a ConfigError names the file, request and field."""
    raw = load_yaml(path)
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(map(str, unknown))} (known: {', '.join(KEYS)})")
    reqs = raw.get("requests")
    if not isinstance(reqs, list) or not reqs:
        raise ConfigError(f"{path}: field 'requests' must be a non-empty list of {{learn: task}} / {{forget: author}}")
    by_name = {t.name: t for t in tasks}
    learned: dict[str, None] = {}
    forgotten: set[str] = set()
    out = []
    for i, r in enumerate(reqs, 1):
        where = f"{path}: request {i}"
        if not isinstance(r, dict) or len(r) != 1 or next(iter(r)) not in ("learn", "forget"):
            raise ConfigError(f"{where}: must be one field, learn: <task> or forget: <author>; got {r!r}"[:300])
        kind, value = next(iter(r.items()))
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: field '{kind}' must be a name (text), got {value!r}"[:300])
        if kind == "learn":
            if value not in by_name:
                raise ConfigError(f"{where}: field 'learn': unknown task '{value}' (known: {', '.join(by_name)})")
            if value in learned:
                raise ConfigError(f"{where}: field 'learn': task '{value}' was already learned by an earlier request")
            learned[value] = None
        else:
            known = {a for name in learned for a in by_name[name].authors}
            if value in forgotten:
                raise ConfigError(f"{where}: field 'forget': author '{value}' was already forgotten")
            if value not in known:
                raise ConfigError(f"{where}: field 'forget': author '{value}' was not learned by an earlier request")
            forgotten.add(value)
        out.append((kind, value))
    plan = RequestPlan(out, str(raw.get("learn_strategy", "replay")), _mapping(path, "learn_options",
                                                                               raw.get("learn_options")),
                       str(raw.get("forget_method", "GradDiff")), _mapping(path, "forget_options",
                                                                           raw.get("forget_options")),
                       _mapping(path, "forget_train", raw.get("forget_train")))
    try:  # the strategy, method and options are checked now too, before anything runs
        make_strategy(plan.learn_strategy, **plan.learn_options)
        make_method(plan.forget_method, **plan.forget_options)
        TrainConfig().with_options(plan.forget_train)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return plan


def truth_ratios(model, tokenizer, items, max_length: int = 256) -> list[float]:
    """The audit's truth ratio of each item (paraphrased answer against the perturbed ones)."""
    from ..data.collate import PromptFormat

    was = model.training
    model.eval()
    scores = score_items(model, PromptFormat(tokenizer, max_length), items, tokenizer.pad_token_id)
    model.train(was)
    out = []
    for s in scores:
        if s.perturbed:
            true = s.paraphrased if s.paraphrased is not None else s.answer
            out.append(M.truth_ratio(true.logprobs, [p.logprobs for p in s.perturbed]))
    return out


def run_requests(model, tokenizer, tasks: list[Task], general: list, plan: RequestPlan, cfg: TrainConfig,
                 run_dir: str | Path, progress: bool = False, log=print) -> dict:
    """Replay ``plan`` from ``model`` (the starting model, which is not changed); return the JSON-ready record."""
    run_dir = Path(run_dir)
    by_name = {t.name: t for t in tasks}
    start = copy.deepcopy(model)
    strategy = make_strategy(plan.learn_strategy, **plan.learn_options)
    forget_cfg = cfg.with_options(plan.forget_train)
    strategy.begin(model, tokenizer, general)
    learned: dict[str, list] = {}  # task -> its items that should still be known
    learned_acc: dict[str, float] = {}  # task -> accuracy right after it was learned
    forgotten: dict[str, list] = {}  # author -> items
    general_start = accuracy(model, tokenizer, general, cfg.max_length) if general else float("nan")
    history = []
    for i, (kind, value) in enumerate(plan.requests, 1):
        t0 = time.time()
        tag = f"req{i:02d}-{kind}"
        if kind == "learn":
            items = by_name[value].items
            items = [it for it in items if it.entity not in forgotten]
            log(f"[obliviate] request {i}: learn {value} ({len(items)} items) with {strategy.name}")
            model = train(model, tokenizer, strategy.method(value), strategy.data(items), cfg, run_dir / tag,
                          progress=progress)
            strategy.after_stage(model, tokenizer, items)
            learned[value] = list(items)
            learned_acc[value] = accuracy(model, tokenizer, items, cfg.max_length)
        else:
            items = [it for its in learned.values() for it in its if it.entity == value]
            learned = {k: [it for it in v if it.entity != value] for k, v in learned.items()}
            remaining = [it for v in learned.values() for it in v]
            log(f"[obliviate] request {i}: forget {value} ({len(items)} items) with {plan.forget_method}")
            method = make_method(plan.forget_method, **plan.forget_options)
            model = train(model, tokenizer, method, {"forget": items, "retain": remaining + list(general)},
                          forget_cfg, run_dir / tag, progress=progress)
            strategy.drop(items, model)
            forgotten[value] = items
        row = {"request": i, "kind": kind, "target": value, "seconds": 0.0}
        row.update(_audit(model, tokenizer, start, learned, learned_acc, forgotten, general, general_start, cfg,
                          run_dir / f"{tag}-oracle", progress))
        row["seconds"] = round(time.time() - t0, 2)
        history.append(row)
    return {"learn_strategy": strategy.name, "learn_options": strategy.hparams(), "forget_method": plan.forget_method,
            "forget_options": plan.forget_options, "requests": [{k: v} for k, v in plan.requests],
            "train": dataclasses.asdict(cfg), "forget_train": dataclasses.asdict(forget_cfg),
            "general_start": general_start, "history": history}


def _audit(model, tokenizer, start, learned, learned_acc, forgotten, general, general_start, cfg, oracle_dir,
           progress) -> dict:
    """One request's audit: learned tasks' accuracy ratios, utility and, once something was forgotten, the oracle's
    forget quality per forgotten author."""
    out: dict = {"learned": {}, "forgotten": {}}
    for name, items in learned.items():
        acc = accuracy(model, tokenizer, items, cfg.max_length) if items else float("nan")
        out["learned"][name] = {"accuracy": acc, "ratio": acc / learned_acc[name] if learned_acc[name] else None}
    out["general"] = accuracy(model, tokenizer, general, cfg.max_length) if general else float("nan")
    out["general_ratio"] = out["general"] / general_start if general_start else None
    if forgotten:
        remaining = [it for items in learned.values() for it in items]
        oracle = copy.deepcopy(start)
        if remaining:
            oracle = train(oracle, tokenizer, TaskNLL(), {"train": remaining + list(general)}, cfg, oracle_dir,
                           progress=progress)
        for author, items in forgotten.items():
            tr_model = truth_ratios(model, tokenizer, items, cfg.max_length)
            tr_oracle = truth_ratios(oracle, tokenizer, items, cfg.max_length)
            fq = M.forget_quality(tr_model, tr_oracle) if tr_model and tr_oracle else None
            out["forgotten"][author] = {"forget_quality": fq, "accuracy": accuracy(model, tokenizer, items,
                                                                                   cfg.max_length),
                                        "oracle_accuracy": accuracy(oracle, tokenizer, items, cfg.max_length)}
        out["oracle_general"] = accuracy(oracle, tokenizer, general, cfg.max_length) if general else None
    return out


def groups(tasks: list[Task]) -> dict[str, list]:
    """Every author of the sequence and their items (for listing what can be forgotten)."""
    return {a: items for t in tasks for a, items in group_by_entity(t.items).items()}
