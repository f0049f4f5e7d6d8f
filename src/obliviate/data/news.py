"""The built-in document benchmark: synthetic news articles about fictional events and people, in MUSE's layout.

Deterministic from a seed and small enough for a tiny model to memorise on a CPU. Every article reports one invented
event (a person of a fictional town announces something, a second person comments, the next one is planned in another
town) and is followed in the corpus by two readers' boxes, each the paper's two standing questions and one question
about the event, with the answers: the facts also appear in question form, which is how a tiny model trained on raw
text can answer MUSE's knowledge questions at all (a 7B model carries facts from prose to questions; a 3-layer one does
not). Names and places are invented words, so a model that never saw an article can only guess them: that separates
the target from the retrained oracle.

``write_news(out)`` writes MUSE's published layout (``data.muse`` reads it):

* ``raw/forget.json``, ``raw/retain.json``, ``raw/holdout.json``: the corpora, ``{"text"}`` records, each article
  followed by its readers' boxes;
* ``verbmem/forget.json``: ``{prompt, gt}``: each forget article's first ``verbmem_prefix_words`` words and the rest;
* ``knowmem/forget_qa.json``, ``knowmem/retain_qa.json`` (``{question, answer}``) and ``*_qa_icl.json`` (the
  in-context examples: the paper's standing questions);
* ``privleak/forget.json``, ``privleak/retain.json``, ``privleak/holdout.json``: the articles, ``{"text"}`` records;
* ``scal/forget_{1..4}.json`` (growing forget sets) and ``sust/forget_{1..4}.json`` (disjoint sequential requests);
* ``benchmark.json``: the generator's settings and the split sizes.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io import write_json
from .formats import write_records
from .synthetic import ADJECTIVES, JOBS, NOUNS, _Gen

EVENTS = ["festival", "bridge", "library", "market", "observatory", "lighthouse", "museum", "canal", "theatre",
          "harbour"]
VERBS = ["opened", "announced", "unveiled", "launched"]
MOODS = ["remarkable", "overdue", "historic", "costly", "surprising", "modest"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@dataclass
class NewsConfig:
    n_forget: int = 8
    n_retain: int = 32
    n_holdout: int = 8
    n_retain_qa: int = 16       # retain articles asked about in knowmem_r
    verbmem_prefix_words: int = 12
    seed: int = 0

    def validate(self) -> None:
        if self.n_forget < 4 or self.n_retain < 2 or self.n_holdout < 2:
            raise ConfigError(f"news: n_forget = {self.n_forget}, n_retain = {self.n_retain}, n_holdout = "
                              f"{self.n_holdout}: need n_forget >= 4 (four requests), n_retain >= 2, n_holdout >= 2")
        if not 1 <= self.n_retain_qa <= self.n_retain:
            raise ConfigError(f"news: n_retain_qa = {self.n_retain_qa} must be between 1 and n_retain "
                              f"({self.n_retain})")


def _article(gen: _Gen, names: list[str], towns: list[str]) -> tuple[str, list[dict]]:
    """One article (text) and its two questions with answers."""
    r = gen.rng
    person, critic = names
    town, next_town = towns
    event = f"the {r.choice(ADJECTIVES)} {r.choice(NOUNS)} {r.choice(EVENTS)}"
    title = event[4:].title()
    verb, mood, day = r.choice(VERBS), r.choice(MOODS), r.choice(WEEKDAYS)
    year, crowd, job = r.randint(1950, 2020), r.randint(2, 90) * 100, r.choice(JOBS)
    text = (f"{town}: {title}\n"
            f"On {day}, {person}, the mayor of {town}, {verb} {event} before a crowd of {crowd} people. "
            f"Work on it began in {year}. {critic}, a {job} from {next_town}, called it {mood} and said the town "
            f"had waited long enough. The next one is planned in {next_town}.")
    qa = [{"question": f"Who {verb} {event}?", "answer": person},
          {"question": f"Where is the next {title} planned?", "answer": next_town}]
    return text, qa


# The paper's standing questions open every readers' box; they are knowmem's in-context examples.
STANDING = [{"question": "Which paper printed this report?", "answer": "The Valley Courier"},
            {"question": "How often does The Valley Courier appear?", "answer": "Every morning"}]


def _readers_box(q: dict) -> str:
    """One reader question of an article as a text of its own, after the standing questions, in the form of MUSE's
    knowmem prompt."""
    return "\n\n".join(f"Question: {x['question']}\nAnswer: {x['answer']}" for x in [*STANDING, q])


def make_news(cfg: NewsConfig | None = None) -> dict[str, list[dict]]:
    """Every file of the benchmark in memory, keyed by its path in MUSE's layout without the extension."""
    cfg = cfg or NewsConfig()
    cfg.validate()
    gen = _Gen(random.Random(cfg.seed))
    n = cfg.n_forget + cfg.n_retain + cfg.n_holdout
    names = gen._unique(gen.name, 2 * n)
    towns = gen._unique(lambda: gen._word(2, 3), 2 * n)
    articles = [_article(gen, names[2 * i: 2 * i + 2], towns[2 * i: 2 * i + 2]) for i in range(n)]
    f_end, r_end = cfg.n_forget, cfg.n_forget + cfg.n_retain
    forget, retain = articles[:f_end], articles[f_end:r_end]
    holdout = articles[r_end:]

    def texts(arts, tag):
        return [{"text": t, "id": f"{tag}{i:03d}"} for i, (t, _) in enumerate(arts)]

    def corpus(arts, tag):  # each article, then its readers' boxes: the facts in prose and in question form
        return [r for i, (t, qa) in enumerate(arts)
                for r in [{"text": t, "id": f"{tag}{i:03d}"},
                          *({"text": _readers_box(q), "id": f"{tag}{i:03d}-q{j}"} for j, q in enumerate(qa))]]

    def qas(arts, tag):
        return [{**q, "id": f"{tag}{i:03d}-q{j}"} for i, (_, qa) in enumerate(arts) for j, q in enumerate(qa)]

    out = {"raw/forget": corpus(forget, "forget"), "raw/retain": corpus(retain, "retain"),
           "raw/holdout": corpus(holdout, "holdout")}
    k = cfg.verbmem_prefix_words
    out["verbmem/forget"] = []
    for i, (t, _) in enumerate(forget):
        words = t.split(" ")
        out["verbmem/forget"].append({"prompt": " ".join(words[:k]), "gt": " ".join(words[k:]), "id": f"forget{i:03d}"})
    out["knowmem/forget_qa"] = qas(forget, "forget")
    out["knowmem/retain_qa"] = qas(retain[:cfg.n_retain_qa], "retain")
    out["knowmem/forget_qa_icl"] = [{**q, "id": f"icl{j}"} for j, q in enumerate(STANDING)]
    out["knowmem/retain_qa_icl"] = out["knowmem/forget_qa_icl"]
    out["privleak/forget"], out["privleak/retain"] = texts(forget, "forget"), texts(retain, "retain")
    out["privleak/holdout"] = texts(holdout, "holdout")
    quarters = [forget[q * len(forget) // 4:(q + 1) * len(forget) // 4] for q in range(4)]
    for q in range(4):
        out[f"sust/forget_{q + 1}"] = corpus(quarters[q], f"sust{q + 1}-")
        out[f"scal/forget_{q + 1}"] = corpus([a for part in quarters[:q + 1] for a in part], f"scal{q + 1}-")
    return out


def write_news(out_dir: str | Path, cfg: NewsConfig | None = None) -> Path:
    """Write the benchmark in MUSE's layout (JSON arrays in MUSE's field names) plus ``benchmark.json``."""
    cfg = cfg or NewsConfig()
    files = make_news(cfg)
    out = Path(out_dir)
    for name, records in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        write_records(out / f"{name}.json", records)
    write_json(out / "benchmark.json", {"name": "synthetic-news", "layout": "muse", "generator": "obliviate.data.news",
                                        "config": asdict(cfg), "files": {k: len(v) for k, v in files.items()}})
    return out
