"""A small synthetic benchmark of reasoning traces (question -> steps -> answer), some steps naming forget facts.

For models that write a reasoning trace before the answer, unlearning a fact must remove it from the trace as well as
from the answer, while the trace keeps its structure. Each fictional person has a birth year (all distinct); two
question kinds are written as a trace "Step 1: ... Step 2: ... Step 3: ... Answer: X.":

* age: "In which year did A turn k?" -> A was born in yA. / Turning k means adding k years. / yA plus k is yA+k.
* gap: "How many years apart were A and B born?" -> A was born in yA. / B was born in yB. / The difference of the two
  years is |yA-yB|.

The forget people's items (any item naming one) form the forget split; the rest is the retain split. Every item's
``meta`` holds ``steps`` (the step texts), ``final`` (the answer value) and ``facts``: the values that reveal a forget
person's year (the year itself and what is computed from it; empty for retain items). ``forget_steps`` (which steps
name a fact) and ``replaced_trace`` (the same trace with each fact replaced by a placeholder, structure kept) are the
segment finder and the replacement the ``TraceReplace`` method trains with (``methods.trace_replace.score_traces``
measures generations: whether a forget fact still appears in the trace or the answer, and the ROUGE-L recall of the
steps that carry none).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..errors import ConfigError
from .records import QAItem

_SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "tor", "vel", "dun", "ish", "qua", "bel", "nor", "zin", "hal"]
_STEP = re.compile(r"Step \d+:\s*")
_ANSWER = re.compile(r"\s*Answer:\s*")
_WORD = re.compile(r"\w+")


@dataclass
class TraceConfig:
    n_people: int = 12
    n_forget: int = 2
    ages: tuple[int, ...] = (20, 30, 40, 50)
    gaps_per_person: int = 2
    seed: int = 0


def trace_text(steps: list[str], final: str) -> str:
    return " ".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps)) + f" Answer: {final}."


def parse_trace(text: str) -> tuple[list[str], str]:
    """(steps, final answer) of a generated trace; the answer is "" when the trace never reaches "Answer:"."""
    parts = _ANSWER.split(text, maxsplit=1)
    body, final = parts[0], (parts[1] if len(parts) > 1 else "")
    steps = [s.strip() for s in _STEP.split(body) if s.strip()]
    return steps, final.strip().rstrip(".")


def has_fact(text: str, fact: str) -> bool:
    return fact.lower() in _WORD.findall(text.lower())


def forget_steps(steps: list[str], facts: list[str]) -> list[int]:
    """Indices of the steps that name any of ``facts`` (whole words)."""
    return [i for i, s in enumerate(steps) if any(has_fact(s, f) for f in facts)]


def replace_facts(text: str, facts: list[str], placeholder: str) -> str:
    """``text`` with every whole-word occurrence of a fact replaced by ``placeholder``."""
    for f in sorted(facts, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(f)}\b", placeholder, text)
    return text


def replaced_trace(item: QAItem, placeholder: str) -> str:
    """The item's trace with its facts replaced step by step (never inside the "Step k:" markers) and in the answer."""
    facts = item.meta["facts"]
    return trace_text([replace_facts(s, facts, placeholder) for s in item.meta["steps"]],
                      replace_facts(item.meta["final"], facts, placeholder))


def make_traces(cfg: TraceConfig | None = None) -> dict[str, list[QAItem]]:
    """``{"forget": [...], "retain": [...]}`` of trace items (seeded)."""
    cfg = cfg or TraceConfig()
    if not (1 <= cfg.n_forget < cfg.n_people <= 70 and 0 <= cfg.gaps_per_person < cfg.n_people and cfg.ages):
        raise ConfigError(f"trace benchmark: need 1 <= n_forget < n_people <= 70 (distinct birth years 1930-1999), "
                          f"0 <= gaps_per_person < n_people and some ages; got {cfg}")
    rng = random.Random(cfg.seed)
    names: list[str] = []
    while len(names) < cfg.n_people:
        n = "".join(rng.choice(_SYLLABLES) for _ in range(2)).capitalize() + " " + "".join(
            rng.choice(_SYLLABLES) for _ in range(2)).capitalize()
        if n not in names:
            names.append(n)
    years = dict(zip(names, rng.sample(range(1930, 2000), cfg.n_people)))
    forget = set(names[:cfg.n_forget])
    items = []
    for a in names:
        k = rng.choice(cfg.ages)
        ya = years[a]
        steps = [f"{a} was born in {ya}.", f"Turning {k} means adding {k} years.", f"{ya} plus {k} is {ya + k}."]
        facts = [str(ya), str(ya + k)] if a in forget else []
        items.append((f"In which year did {a} turn {k}?", steps, str(ya + k), facts, a))
        others = [b for b in names if b != a]
        for b in rng.sample(others, cfg.gaps_per_person):
            yb, gap = years[b], abs(ya - years[b])
            steps = [f"{a} was born in {ya}.", f"{b} was born in {yb}.", f"The difference of the two years is {gap}."]
            facts = ([str(ya)] if a in forget else []) + ([str(yb)] if b in forget else [])
            facts += [str(gap)] if facts else []
            items.append((f"How many years apart were {a} and {b} born?", steps, str(gap), facts, a))
    out: dict[str, list[QAItem]] = {"forget": [], "retain": []}
    for i, (q, steps, final, facts, who) in enumerate(items):
        split = "forget" if facts else "retain"
        out[split].append(QAItem(question=q, answer=trace_text(steps, final), entity=who, id=f"trace-{i}",
                                 meta={"steps": steps, "final": final, "facts": facts}))
    return out
