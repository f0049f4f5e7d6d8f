"""A benchmark is a folder in TOFU's layout; ``load_benchmark`` turns it into the splits unlearning and the audit use.

Files read for forget split ``forgetNN`` (NN = 01, 05, 10, ...):

============================  ============================================================================
``forgetNN_perturbed.json``   the forget set with paraphrased and perturbed answers (else ``forgetNN.json``)
``retain{100-NN}.json``       what the oracle is trained on and what unlearning keeps (the retain set)
``retain_perturbed.json``     retain items with perturbed answers, for the audit (else the first retain items)
``holdoutNN.json``            never-trained items of the same kind: the non-members of membership inference
``real_authors_perturbed``,   general knowledge, for model utility (optional)
``world_facts_perturbed``
``full.json``                 everything the target is fine-tuned on (else retain + forget)
``pretrain.json``             extra general knowledge that both target and oracle are fine-tuned on (optional;
                              the built-in synthetic benchmark uses it)
============================  ============================================================================

Any extension in ``formats.SUPPORTED`` can stand in for ``.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, DataWarning
from .formats import SUPPORTED, read_qa
from .records import QAItem

UTILITY_SPLITS = {"ra": "real_authors_perturbed", "wf": "world_facts_perturbed"}


@dataclass
class Benchmark:
    name: str
    root: Path
    forget_split: str
    forget: list[QAItem]
    retain: list[QAItem]
    holdout: list[QAItem]
    retain_eval: list[QAItem]
    utility: dict[str, list[QAItem]] = field(default_factory=dict)
    full: list[QAItem] = field(default_factory=list)
    pretrain: list[QAItem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # id(item) -> (file, record number) for every item read from a file, so that an error about an item names its file
    # and record even in a subset or a re-ordered split (the items are the same objects)
    origins: dict[int, tuple[Path, int]] = field(default_factory=dict, repr=False, compare=False)

    def where(self, item: QAItem, fallback: str) -> str:
        """``"path/file.json: record 7"`` for an item read from a file, else ``fallback`` (e.g. ``"forget item 7"``)."""
        origin = self.origins.get(id(item))
        return f"{origin[0]}: record {origin[1]}" if origin is not None else fallback

    def target_train_items(self, pretrain_repeat: int = 1) -> list[QAItem]:
        """What the target model is fine-tuned on: every author (``full``) plus the general knowledge, the latter
        repeated ``pretrain_repeat`` times (it stands for pre-training knowledge, which a model knows well)."""
        return self.full + self.pretrain * pretrain_repeat

    def oracle_train_items(self, pretrain_repeat: int = 1) -> list[QAItem]:
        """What the oracle ("retrained without the forget set") is fine-tuned on."""
        return self.retain + self.pretrain * pretrain_repeat

    def eval_splits(self) -> dict[str, list[QAItem]]:
        """The audit's splits, named as in open-unlearning's metric names."""
        splits = {"forget": self.forget, "retain": self.retain_eval, "holdout": self.holdout}
        splits.update(self.utility)
        return {k: v for k, v in splits.items() if v}

    def fingerprint(self) -> str:
        """A hash of the files read, so caches of models trained on this data notice an edit."""
        h = hashlib.sha256()
        for p in sorted(self.files):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16]


def _find(root: Path, stem: str) -> Path | None:
    for ext in SUPPORTED:
        p = root / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def load_benchmark(root: str | Path, forget_split: str = "forget10") -> Benchmark:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: benchmark folder not found")
    m = re.fullmatch(r"forget(\d+)", forget_split)
    if not m:
        raise DataError(f"{root}: forget split '{forget_split}' must be named forgetNN (forget01, forget05, forget10, ...)")
    pct = int(m.group(1))
    digits = len(m.group(1))
    files: list[Path] = []
    sources: dict[str, Path] = {}
    origins: dict[int, tuple[Path, int]] = {}

    def read(stem: str, required: bool, split: str) -> list[QAItem]:
        p = _find(root, stem)
        if p is None:
            if required:
                raise DataError(f"{root}: no file for split '{stem}' ({stem}.json, .jsonl, .csv or .parquet)")
            return []
        files.append(p)
        sources[split] = p
        items = read_qa(p)
        origins.update((id(it), (p, i)) for i, it in enumerate(items))
        return items

    forget = read(f"{forget_split}_perturbed", False, "forget") or read(forget_split, True, "forget")
    retain = read(f"retain{100 - pct:0{digits}d}", True, "retain")
    holdout = read(f"holdout{pct:0{digits}d}", False, "holdout")
    retain_eval = read("retain_perturbed", False, "retain_eval") or retain[: len(forget)]
    utility = {short: read(stem, False, short) for short, stem in UTILITY_SPLITS.items()}
    full = read("full", False, "full") or (retain + forget)
    pretrain = read("pretrain", False, "pretrain")
    forget_q = {it.question + "\x00" + it.answer for it in forget}
    shared = [j for j, it in enumerate(retain) if it.question + "\x00" + it.answer in forget_q]
    if shared:
        import warnings

        warnings.warn(f"{sources['retain']}: {len(shared)} of {len(retain)} retain items (first: record {shared[0]}) "
                      f"also appear in {sources['forget'].name}; they are both forgotten and kept", DataWarning,
                      stacklevel=2)
    return Benchmark(
        name=root.name, root=root, forget_split=forget_split, forget=forget, retain=retain, holdout=holdout,
        retain_eval=retain_eval, utility={k: v for k, v in utility.items() if v}, full=full, pretrain=pretrain,
        files=files, origins=origins,
    )


@dataclass
class SubsetBenchmark(Benchmark):
    """A benchmark cut down to some authors; its fingerprint includes the cut, so caches keep subsets apart."""

    subset: str = ""

    def fingerprint(self) -> str:
        return hashlib.sha256((super().fingerprint() + "|" + self.subset).encode()).hexdigest()[:16]


def tofu_subset(bench: Benchmark, authors: int, facts_per_author: int = 0, per_author: int = 20) -> Benchmark:
    """Keep the forget split's authors plus the first ``authors`` minus that many retain authors.

    TOFU lists each author's ``per_author`` (20) QA pairs consecutively, retain authors first. ``facts_per_author`` > 0
    keeps only that many QA pairs per kept author (for smoke tests). The retain-eval and holdout splits are cut to the
    kept authors / the same number of facts; the utility splits (real authors, world facts) stay whole.
    """
    n_forget_authors = max(1, -(-len(bench.forget) // per_author))
    n_retain = authors - n_forget_authors
    if n_retain < 1:
        raise ConfigError(f"--authors {authors}: the {bench.forget_split} split alone has {n_forget_authors} authors; "
                          f"ask for at least {n_forget_authors + 1}")
    if n_retain * per_author > len(bench.retain):
        raise ConfigError(f"--authors {authors}: only {len(bench.retain) // per_author + n_forget_authors} authors exist")

    def cut(items: list[QAItem]) -> list[QAItem]:
        if not facts_per_author:
            return list(items)
        return [it for i, it in enumerate(items) if i % per_author < facts_per_author]

    retain = cut(bench.retain[: n_retain * per_author])
    forget = cut(bench.forget)
    keep_q = {it.question for it in retain}
    retain_eval = [it for it in bench.retain_eval if it.question in keep_q] or retain[: len(forget)]
    holdout = cut(bench.holdout)
    subset = f"authors={authors},facts={facts_per_author}"
    fields = {f.name: getattr(bench, f.name) for f in dataclasses.fields(Benchmark)}
    fields.update(name=f"{bench.name}[{subset}]", forget=forget, retain=retain, retain_eval=retain_eval, holdout=holdout,
                  full=retain + forget)
    return SubsetBenchmark(**fields, subset=subset)
