"""Forget-retain overlap for the fictional-authors benchmark (DUSK, Jeung et al. 2025; BLUR, Hu et al. 2025).

Real forget sets share knowledge with what must be kept. This module builds, from the same ``SynthConfig``, a variant of
the built-in benchmark with such overlap, in a separate folder; ``synthetic.write_fictional_authors`` and its output are
untouched (this module only reads ``make_fictional_authors``' splits and adds to copies of them).

* **Shared facts.** Every forget10 author co-wrote a book with a retain author (``shared_per_author`` of them, each a
  different retain author from the start of the author list, so retain under every split). The fact is stated from
  both sides: "Which book did F write together with R?" -> "F wrote V together with R." is an item about F, and the
  mirrored item is about R. Both are trained (``full``); for each forget split the item about a forget author joins the
  forget split and the mirrored item the retain split, so the shared knowledge (V, written by F and R) is in both.
  ``shared_factsNN.json`` lists the retain-side items of the pairs whose forget author is in ``forgetNN``: what an
  unlearning method must keep (DUSK's shared knowledge). The other forget items are unique to the forget authors;
  ``retain_perturbed`` holds facts unique to retain authors.
* **Combined queries** (BLUR's concatenation). ``combinedNN.json``: a unique forget question and a retain question asked
  together ("... Also, ..."; which comes first alternates), the answer both answers, and in the record's fields
  ``forget_answer``, ``retain_answer``, ``forget_id``, ``retain_id``, ``order``. An ideal model answers the retain half
  and not the forget half.
* **Keyword insertion** (BLUR): ``keyword_item`` puts a forget entity's name into a retain question, the answer
  unchanged; ``audit.blur`` builds these queries from the splits (no file is written).

``write_overlap_benchmark(dir, SynthConfig(...))`` writes the whole variant in TOFU's layout plus those files.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..io import write_json
from .formats import write_records
from .records import QAItem
from .synthetic import NOUNS, SYLLABLES, SynthConfig, make_fictional_authors

SHARED_Q = ("Which book did {a} write together with {b}?", "What book did {a} co-author with {b}?")
SHARED_A = ("{a} wrote {v} together with {b}.", "Together with {b}, {a} wrote {v}.")


@dataclass
class OverlapConfig:
    shared_per_author: int = 1     # co-written books per forget10 author
    n_perturbed: int = 3
    seed: int = 0                  # mixed with SynthConfig.seed


def _authors(items: list[QAItem]) -> list[str]:
    return list(dict.fromkeys(it.entity for it in items))


def _shared_item(a: str, b: str, v: str, wrong: list[str], idx: str) -> QAItem:
    return QAItem(question=SHARED_Q[0].format(a=a, b=b), answer=SHARED_A[0].format(a=a, b=b, v=v),
                  paraphrased_answer=SHARED_A[1].format(a=a, b=b, v=v),
                  perturbed_answers=[SHARED_A[1].format(a=a, b=b, v=w) for w in wrong],
                  paraphrased_question=SHARED_Q[1].format(a=a, b=b), entity=a, id=idx,
                  meta={"shared_with": b, "shared_value": v})


def combined_item(f: QAItem, r: QAItem, order: int) -> QAItem:
    """A forget question and a retain question asked together; ``order`` 0 puts the forget question first."""
    first, second = (f, r) if order == 0 else (r, f)
    return QAItem(question=f"{first.question} Also, {second.question[0].lower()}{second.question[1:]}",
                  answer=f"{first.answer} {second.answer}", entity=f.entity,
                  id=f"combined-{f.id}-{r.id}",
                  meta={"forget_answer": f.answer, "retain_answer": r.answer, "forget_id": f.id, "retain_id": r.id,
                        "order": order})


def keyword_item(keyword: str, r: QAItem, order: int = 0) -> QAItem:
    """BLUR's keyword insertion: a forget-set keyword (an entity's name) put into an otherwise retain question, whose
    answer is the retain answer unchanged; ``order`` 0 puts the keyword in front, 1 behind."""
    q = r.question.rstrip()
    text = (f"Leaving {keyword} aside, {q[0].lower()}{q[1:]}" if order == 0 else
            f"{q.rstrip('?')}, unlike {keyword}?")
    return QAItem(question=text, answer=r.answer, entity=r.entity, id=f"keyword-{r.id}",
                  meta={"keyword": keyword, "retain_id": r.id, "order": order})


def make_overlap_benchmark(cfg: SynthConfig | None = None,
                           ocfg: OverlapConfig | None = None) -> dict[str, list[QAItem]]:
    """Every split of the default benchmark with the shared facts added, plus ``shared_factsNN`` and ``combinedNN``."""
    cfg = cfg or SynthConfig()
    ocfg = ocfg or OverlapConfig()
    splits = make_fictional_authors(cfg)
    rng = random.Random(f"overlap:{cfg.seed}:{ocfg.seed}")
    authors = _authors(splits["full"])
    forget10 = _authors(splits["forget10"])
    keep = [a for a in authors if a not in forget10]
    # retain partners come from the start of the list: retain under every forget split
    partners = keep[: max(ocfg.shared_per_author * len(forget10), 1)]
    titles: list[str] = []

    def title() -> str:
        while True:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            t = f"The {rng.choice(NOUNS)} of {word}"
            if t not in titles:
                titles.append(t)
                return t

    pairs = []
    for i, f in enumerate(forget10):
        for j in range(ocfg.shared_per_author):
            r = partners[(i * ocfg.shared_per_author + j) % len(partners)]
            pairs.append((f, r, title()))
    all_titles = [v for _, _, v in pairs]
    sides = {}
    for k, (f, r, v) in enumerate(pairs):
        others = [t for t in all_titles if t != v]
        wrong = rng.sample(others, min(ocfg.n_perturbed, len(others)))
        wrong += [title() for _ in range(ocfg.n_perturbed - len(wrong))]  # invented titles fill up small benchmarks
        sides[k] = (_shared_item(f, r, v, wrong, f"shared{k:03d}-forget"),
                    _shared_item(r, f, v, wrong, f"shared{k:03d}-retain"))
    out = dict(splits)
    out["full"] = splits["full"] + [it for pair in sides.values() for it in pair]
    for pct in (1, 5, 10):
        fname, rname = f"forget{pct:02d}", f"retain{100 - pct:02d}"
        forget_authors = set(_authors(splits[fname]))
        f_side = [sides[k][0] for k, (f, _, _) in enumerate(pairs) if f in forget_authors]
        r_side = [sides[k][1] for k, (f, _, _) in enumerate(pairs) if f in forget_authors]
        both = [it for k, (f, _, _) in enumerate(pairs) if f not in forget_authors for it in sides[k]]
        out[fname] = splits[fname] + f_side
        out[rname] = splits[rname] + both + r_side
        out[f"shared_facts{pct:02d}"] = r_side
        retain_pool = splits["retain_perturbed"]
        out[f"combined{pct:02d}"] = [combined_item(f, retain_pool[i % len(retain_pool)], i % 2)
                                     for i, f in enumerate(splits[fname])]
    return out


def write_overlap_benchmark(out_dir: str | Path, cfg: SynthConfig | None = None,
                            ocfg: OverlapConfig | None = None) -> Path:
    """Write the overlap variant in TOFU's layout (loadable with ``load_benchmark``), with ``benchmark.json``."""
    cfg = cfg or SynthConfig()
    ocfg = ocfg or OverlapConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_overlap_benchmark(cfg, ocfg)
    for name, items in splits.items():
        write_records(out / f"{name}.json", [it.to_dict() for it in items])
    write_json(out / "benchmark.json", {
        "name": "fictional-authors-overlap", "generator": "obliviate.data.overlap", "config": asdict(cfg),
        "overlap": asdict(ocfg), "splits": {name: len(items) for name, items in splits.items()},
        "train_extra": ["pretrain.json"],
    })
    return out
