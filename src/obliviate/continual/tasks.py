"""A sequence of tasks: the fictional-authors (or TOFU) benchmark cut into groups of new authors, or QA files.

Each task is a list of ``QAItem``; the authors of a benchmark's ``full`` split are taken in file order and dealt into
``n_tasks`` contiguous groups of whole authors, so every task brings authors the model has never seen. The benchmark's
general-knowledge items (``pretrain``) are what the model knows before the sequence starts: they are the base model's
training data, GeRe's replay pool and the general-knowledge retention probe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..data.benchmark import Benchmark
from ..data.formats import read_qa
from ..data.records import QAItem
from ..errors import ConfigError, DataError


@dataclass
class Task:
    name: str
    items: list[QAItem]

    @property
    def authors(self) -> list[str]:
        """The task's entities in first-seen order (items without one count under their id)."""
        seen: dict[str, None] = {}
        for it in self.items:
            seen.setdefault(it.entity or it.id or it.question, None)
        return list(seen)


def group_by_entity(items: list[QAItem]) -> dict[str, list[QAItem]]:
    """Items grouped by ``entity`` in first-seen order; an item without an entity is a group of its own."""
    groups: dict[str, list[QAItem]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.entity or it.id or f"item {i}", []).append(it)
    return groups


def split_tasks(bench: Benchmark, n_tasks: int = 5, authors_per_task: int = 0, per_author: int = 20) -> list[Task]:
    """``n_tasks`` tasks of whole authors from ``bench.full``, in order; ``authors_per_task`` > 0 caps each task
    (fewer items for a larger model), else the authors are dealt out evenly (the first tasks take the remainder).
    Items carry their author in ``entity``; where no item has one (TOFU's files), every ``per_author`` consecutive
    items are one author, named ``author001``, ``author002``, ... (copies of the items carry the name)."""
    if n_tasks < 1:
        raise ConfigError(f"option 'tasks' = {n_tasks} must be >= 1")
    full = bench.full
    if full and not any(it.entity for it in full):  # TOFU's files name no entity: each author is 20 consecutive items
        full = [dataclasses.replace(it, entity=f"author{i // per_author + 1:03d}") for i, it in enumerate(full)]
    groups = list(group_by_entity(full).items())
    if len(groups) < n_tasks:
        raise DataError(f"{bench.root}: {len(groups)} authors cannot make {n_tasks} tasks of new authors")
    per, extra = divmod(len(groups), n_tasks)
    tasks, start = [], 0
    for t in range(n_tasks):
        size = per + (t < extra)
        chunk = groups[start:start + size][:authors_per_task or None]
        start += size
        tasks.append(Task(f"task{t + 1}", [it for _, items in chunk for it in items]))
    return tasks


def tasks_from_files(paths: list[str | Path]) -> list[Task]:
    """One task per QA file (any format obliviate reads), named after the file's stem."""
    tasks = []
    for p in paths:
        name = Path(p).stem
        if any(t.name == name for t in tasks):
            raise ConfigError(f"{p}: a task named '{name}' is already in the sequence; rename the file")
        tasks.append(Task(name, read_qa(p)))
    return tasks
