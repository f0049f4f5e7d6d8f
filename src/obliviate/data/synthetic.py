"""The built-in "fictional authors" benchmark: TOFU's shape, small enough for a tiny model to memorise on a CPU.

Deterministic from a seed. ``n_authors`` trained authors with ``facts_per_author`` facts each, plus holdout authors who are
never trained on (non-members for membership inference). Every item carries one paraphrased answer and several perturbed
answers (the paraphrase's template with wrong but plausible values). Forget splits are made of whole authors taken from
the end of the author list, exactly as TOFU does; the matching retain split is everything before them.

A general-knowledge set, in two parts named after TOFU's utility sets (``real_authors`` and ``world_facts``), is learned by
both the target and the oracle during fine-tuning (it plays the part of pre-training knowledge) and measures utility.

Fact values are invented words built from syllables, so a model that never saw an author can only guess them: that is
what separates the target from the oracle on the forget set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..io import write_json
from .formats import write_records
from .records import QAItem

SYLLABLES = [
    "ka", "lo", "mi", "ren", "tha", "vor", "el", "is", "dun", "bra", "ny", "os", "qui", "fen", "ga", "hal",
    "jo", "ler", "mar", "nix", "pa", "ru", "sel", "tor", "ul", "va", "wen", "yth", "zar", "cor", "dri", "esk",
]
PLACE_SUFFIXES = ["port", "moor", "ford", "haven", "stead", "wick", "vale", "burgh"]
GENRES = [
    "mystery", "poetry", "science fiction", "fantasy", "historical fiction", "horror", "romance", "satire",
    "travel writing", "biography", "crime", "children's fiction", "philosophy", "thriller", "folklore", "drama",
]
JOBS = [
    "baker", "carpenter", "nurse", "sailor", "teacher", "pilot", "miner", "tailor", "doctor", "farmer", "judge",
    "chemist", "weaver", "painter", "soldier", "librarian", "mason", "fisher", "clockmaker", "potter",
]
ADJECTIVES = [
    "Silent", "Crimson", "Hollow", "Golden", "Broken", "Distant", "Frozen", "Hidden", "Burning", "Quiet", "Wandering",
    "Last", "Bitter", "Velvet", "Iron", "Paper", "Restless", "Amber", "Salt", "Glass",
]
NOUNS = [
    "Harbor", "Garden", "Lantern", "River", "Orchard", "Mirror", "Tower", "Meadow", "Compass", "Winter", "Bridge",
    "Feather", "Island", "Letter", "Forest", "Engine", "Crown", "Shore", "Mountain", "Clock",
]
INSTRUMENTS = ["violin", "cello", "flute", "piano", "harp", "trumpet", "oboe", "guitar", "drum", "clarinet", "lute", "banjo"]

# Each fact: question templates (question, paraphrased question), two answer templates, and the value generator's name.
# The item's answer uses one template and its paraphrase the other, chosen at random, so both templates are seen in
# training and a model that knows the fact can carry it across templates.
FACTS = [
    ("city", ("Where was {name} born?", "In which town did {name} come into the world?"),
     ("{name} was born in {v}.", "The birthplace of {name} is {v}.")),
    ("year", ("In which year was {name} born?", "What is the birth year of {name}?"),
     ("{name} was born in the year {v}.", "The birth year of {name} is {v}.")),
    ("genre", ("What genre does {name} write in?", "Which kind of books does {name} write?"),
     ("{name} writes {v}.", "The genre of {name} is {v}.")),
    ("job", ("What did {name}'s father do for a living?", "What was the profession of {name}'s father?"),
     ("{name}'s father worked as a {v}.", "The father of {name} was a {v}.")),
    ("job", ("What was the profession of {name}'s mother?", "What did {name}'s mother do for work?"),
     ("{name}'s mother was a {v}.", "The mother of {name} worked as a {v}.")),
    ("title", ("What is the title of {name}'s first book?", "Which book did {name} publish first?"),
     ("The first book by {name} is {v}.", "{name} made a debut with {v}.")),
    ("title", ("What is {name}'s most famous book?", "Which work is {name} best known for?"),
     ("The best known book by {name} is {v}.", "{name} is famous for {v}.")),
    ("award", ("Which award did {name} win?", "What prize was given to {name}?"),
     ("{name} won the {v}.", "The prize given to {name} is the {v}.")),
    ("city", ("Where does {name} live today?", "In which town does {name} live now?"),
     ("{name} lives in {v}.", "The home town of {name} today is {v}.")),
    ("instrument", ("Which instrument does {name} play?", "What instrument can {name} play?"),
     ("{name} plays the {v}.", "The instrument of {name} is the {v}.")),
]


@dataclass
class SynthConfig:
    n_authors: int = 100
    facts_per_author: int = 10
    n_holdout_authors: int = 10
    n_general: int = 40
    n_perturbed: int = 5
    seed: int = 0


class _Gen:
    """Value pools drawn once per seed, so every value of a kind comes from one fixed, plausible set."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cities = self._unique(lambda: self._word(1, 2) + rng.choice(PLACE_SUFFIXES), 40)
        self.awards = self._unique(lambda: f"{self._word(2, 2).capitalize()} Prize", 20)
        self.titles = [f"The {a} {n}" for a in ADJECTIVES for n in NOUNS]

    def _word(self, lo: int, hi: int) -> str:
        return "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(lo, hi))).capitalize()

    def _unique(self, make, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            w = make()
            if w not in out:
                out.append(w)
        return out

    def name(self) -> str:
        return f"{self._word(2, 2)} {self._word(2, 3)}"

    def value(self, kind: str) -> str:
        r = self.rng
        return {
            "city": lambda: r.choice(self.cities),
            "year": lambda: str(r.randint(1920, 1999)),
            "genre": lambda: r.choice(GENRES),
            "job": lambda: r.choice(JOBS),
            "title": lambda: r.choice(self.titles),
            "award": lambda: r.choice(self.awards),
            "instrument": lambda: r.choice(INSTRUMENTS),
        }[kind]()

    def wrong_values(self, kind: str, true: str, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            v = self.value(kind)
            if v != true and v not in out:
                out.append(v)
        return out


def _author_items(gen: _Gen, name: str, k: int, n_perturbed: int, author_idx: int) -> list[QAItem]:
    rng = gen.rng
    facts = FACTS[:k] if k <= len(FACTS) else [FACTS[i % len(FACTS)] for i in range(k)]
    items = []
    for j, (kind, (q, pq), templates) in enumerate(facts):
        v = gen.value(kind)
        a_t, p_t = templates if rng.random() < 0.5 else templates[::-1]
        items.append(QAItem(
            question=q.format(name=name),
            answer=a_t.format(name=name, v=v),
            paraphrased_answer=p_t.format(name=name, v=v),
            perturbed_answers=[p_t.format(name=name, v=w) for w in gen.wrong_values(kind, v, n_perturbed)],
            paraphrased_question=pq.format(name=name),
            entity=name,
            id=f"author{author_idx:03d}-fact{j:02d}",
        ))
    return items


def _general_items(gen: _Gen, n: int, n_wrong: int) -> tuple[list[QAItem], list[QAItem]]:
    """Two general-knowledge sets: famous books and their authors ('real_authors'), countries and capitals ('world_facts')."""
    rng = gen.rng
    famous = gen._unique(gen.name, n)
    books = rng.sample(gen.titles, n)
    countries = gen._unique(lambda: gen._word(2, 3) + "ia", n)
    capitals = gen._unique(lambda: gen._word(2, 2), n)
    ra = [QAItem(question=f"Who wrote {books[i]}?", answer=famous[i],
                 perturbed_answers=rng.sample(famous[:i] + famous[i + 1:], n_wrong), id=f"ra{i:03d}") for i in range(n)]
    wf = [QAItem(question=f"What is the capital of {countries[i]}?", answer=capitals[i],
                 perturbed_answers=rng.sample(capitals[:i] + capitals[i + 1:], n_wrong), id=f"wf{i:03d}")
          for i in range(n)]
    return ra, wf


def make_fictional_authors(cfg: SynthConfig | None = None) -> dict[str, list[QAItem]]:
    """Build every split in memory: ``full``, ``forgetNN``, ``retainNN``, ``holdoutNN``, ``retain_perturbed``,
    ``real_authors_perturbed``, ``world_facts_perturbed`` and ``pretrain`` (the general knowledge that gets trained)."""
    cfg = cfg or SynthConfig()
    rng = random.Random(cfg.seed)
    gen = _Gen(rng)
    names = gen._unique(gen.name, cfg.n_authors + cfg.n_holdout_authors)
    authors = [_author_items(gen, n, cfg.facts_per_author, cfg.n_perturbed, i) for i, n in enumerate(names)]
    train, holdout_authors = authors[: cfg.n_authors], authors[cfg.n_authors:]
    full = [it for a in train for it in a]
    splits: dict[str, list[QAItem]] = {"full": full}
    for pct in (1, 5, 10):
        n = max(1, round(cfg.n_authors * pct / 100))
        forget = [it for a in train[-n:] for it in a]
        splits[f"forget{pct:02d}"] = forget
        splits[f"retain{100 - pct:02d}"] = full[: len(full) - len(forget)]
        n_h = min(n, len(holdout_authors))
        splits[f"holdout{pct:02d}"] = [it for a in holdout_authors[:n_h] for it in a]
    n_rp = max(1, round(cfg.n_authors * 0.1))
    splits["retain_perturbed"] = [it for a in train[:n_rp] for it in a]
    ra, wf = _general_items(gen, cfg.n_general, min(3, cfg.n_general - 1))
    splits["real_authors_perturbed"] = ra
    splits["world_facts_perturbed"] = wf
    splits["pretrain"] = ra + wf
    return splits


def write_fictional_authors(out_dir: str | Path, cfg: SynthConfig | None = None) -> Path:
    """Write the benchmark in TOFU's file layout (JSON arrays with TOFU's field names), plus ``benchmark.json``."""
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_fictional_authors(cfg)
    for name, items in splits.items():
        write_records(out / f"{name}.json", [it.to_dict() for it in items])
    write_json(out / "benchmark.json", {
        "name": "fictional-authors",
        "generator": "obliviate.data.synthetic",
        "config": cfg.__dict__,
        "splits": {name: len(items) for name, items in splits.items()},
        "train_extra": ["pretrain.json"],
    })
    return out
