"""BLUR's overlap tiers ("A Benchmark for LLM Unlearning Robust to Forget-Retain Overlap"; Hu, Kale, Thaker, Fu, Wu,
Smith, arXiv 2506.15699). Only the abstract and a review are public, and the BLUR data set is not used: the tiers
are built from the benchmark's own splits (the shared-facts variant of ``data.overlap_bench`` gives the most).

An unlearned model should fail only what is about the forget set. Each tier is a set of (question, answer) queries,
measured by the mean answer probability P = mean_items exp((1/|y|) sum_t log p(y_t | x, y_<t)):

* ``forget``: the unique forget items (should drop to the oracle's level);
* ``shared``: the retain-side items of facts shared with the forget set (``shared_factsNN``; should stay);
* ``entity``: the other retain items about the retain entities that share a fact with the forget set (should stay);
* ``keyword``: retain questions with a forget entity's name inserted (``overlap_bench.keyword_item``); the answer is
  the retain answer (should stay);
* ``combined_forget`` / ``combined_retain``: a forget and a retain question asked together (BLUR's concatenation,
  ``shared_facts.combined_queries``), each half's answer scored right after the combined question (the forget half
  should drop, the retain half stay);
* ``retain``: the same retain questions as ``keyword`` without the keyword: ``retain_eval`` (else retain) items about
  entities that share nothing with the forget set (unique retain knowledge; should stay), so ``keyword`` minus
  ``retain`` is the effect of the keyword alone.

The drop of a tier is D = P(target) - P(model), and the relative drop D / P(target). BLUR's finding, which the bench
shows per method, is that the overlap tiers drop too: a method that forgets the forget tier also loses shared,
keyword and combined-retain knowledge. A tier whose items the benchmark lacks is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.benchmark import Benchmark
from ..data.collate import PromptFormat
from ..data.overlap_bench import keyword_item
from .probes import score_answers
from .shared_facts import combined_queries, shared_facts

TIERS = ("forget", "shared", "entity", "keyword", "combined_forget", "combined_retain", "retain")


def _unique(items):
    return [it for it in items if not str(it.id or "").startswith("shared")]


def blur_tiers(bench: Benchmark, max_items: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Each tier's (question, answer) pairs; ``max_items`` caps each tier (0 = no cap)."""
    forget = _unique(bench.forget)
    tiers: dict[str, list[tuple[str, str]]] = {"forget": [(it.question, it.answer) for it in forget]}
    shared = shared_facts(bench) or []
    tiers["shared"] = [(it.question, it.answer) for it in shared]
    partners = {it.entity for it in shared}
    tiers["entity"] = [(it.question, it.answer) for it in _unique(bench.retain) if it.entity in partners]
    pool = bench.retain_eval or bench.retain
    # no overlap at all with the forget set: retain_eval's other entities, else the retain split's
    far = [it for it in _unique(pool) if it.entity not in partners] or \
        [it for it in _unique(bench.retain) if it.entity not in partners]
    names = list(dict.fromkeys(it.entity for it in forget if it.entity))
    base = (far or pool)[: max(len(forget), 1)]
    if names:
        tiers["keyword"] = [(k.question, k.answer) for k in
                            (keyword_item(names[i % len(names)], r, i % 2) for i, r in enumerate(base))]
    combined = combined_queries(bench)
    tiers["combined_forget"] = [(it.question, it.meta["forget_answer"]) for it in combined]
    tiers["combined_retain"] = [(it.question, it.meta["retain_answer"]) for it in combined]
    tiers["retain"] = [(it.question, it.answer) for it in base]
    return {k: (v[:max_items] if max_items else v) for k, v in tiers.items() if v}


def tier_probs(model, tokenizer, tiers: dict[str, list[tuple[str, str]]], batch_size: int = 32) -> dict[str, float]:
    """Mean answer probability of each tier (teacher forced, eval mode)."""
    fmt = PromptFormat(tokenizer)
    was = model.training
    model.eval()
    out = {}
    for name, pairs in tiers.items():
        scores = score_answers(model, fmt, [fmt.prompt_ids(q) for q, _ in pairs], [a for _, a in pairs], batch_size)
        out[name] = float(np.mean([np.exp(s.logprobs.astype(np.float64).mean()) for s in scores]))
    model.train(was)
    return out


def tier_drops(target: dict[str, float], model: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Per tier present in both: the drop P(target) - P(model) and the drop relative to P(target)."""
    out = {}
    for name in TIERS:
        if name in target and name in model:
            d = target[name] - model[name]
            out[name] = {"target": target[name], "model": model[name], "drop": d,
                         "relative": d / target[name] if target[name] > 0 else None}
    return out


def blur_for_model(model_dir: str | Path, bench: Benchmark, batch_size: int = 32, prompt=None,
                   max_items: int = 0) -> dict[str, float]:
    """Load a saved model and measure every tier (what ``obliviate bench`` calls per run)."""
    from ..data.collate import set_prompt_spec
    from ..models import load_model

    net, tok = load_model(model_dir, dtype="auto")
    if prompt is not None:
        set_prompt_spec(tok, prompt)
    return tier_probs(net, tok, blur_tiers(bench, max_items), batch_size)
