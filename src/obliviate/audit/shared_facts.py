"""Shared versus unique knowledge (DUSK) and combined forget/retain queries (BLUR).

* **Shared-fact retention**: answer probability and greedy ROUGE-L recall on ``shared_factsNN`` (knowledge present in
  both the forget and the retain data, written by ``data.overlap``); it should stay at the oracle's level.
* **Unique-fact forgetting**: the same on the forget items that are not shared (should fall to the oracle's level);
  **unique retain**: on ``retain_eval`` (should stay).
* **Combined queries**: a forget and a retain question asked together (``combinedNN`` when the benchmark has it, else
  built here from the forget items and ``retain_eval``, alternating which comes first). The greedy answer is scored
  against each half separately (ROUGE-L recall of the forget answer and of the retain answer), and each half's
  answer probability is measured right after the combined question. An ideal model answers the retain half only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.benchmark import Benchmark
from ..data.collate import PromptFormat
from ..data.formats import SUPPORTED, read_qa
from ..data.overlap_bench import combined_item
from ..data.records import QAItem
from ..errors import DataError
from ..scoring import metrics as M
from .probes import generate_from_ids, score_answers


def _split_file(bench: Benchmark, stem: str) -> Path | None:
    pct = bench.forget_split.removeprefix("forget")
    for ext in SUPPORTED:
        p = Path(bench.root) / f"{stem}{pct}{ext}"
        if p.exists():
            return p
    return None


def shared_facts(bench: Benchmark) -> list[QAItem] | None:
    p = _split_file(bench, "shared_facts")
    return read_qa(p) if p is not None else None


def combined_queries(bench: Benchmark) -> list[QAItem]:
    """The benchmark's ``combinedNN`` file, or queries built from its unique forget items and ``retain_eval``."""
    p = _split_file(bench, "combined")
    if p is not None:
        items = read_qa(p)
        for i, it in enumerate(items):
            for key in ("forget_answer", "retain_answer"):
                if not isinstance(it.meta.get(key), str) or not it.meta[key]:
                    raise DataError(f"{p}: record {i}: field '{key}' is missing or empty")
        return items
    forget = [it for it in bench.forget if not str(it.id or "").startswith("shared")]
    pool = bench.retain_eval or bench.retain
    if not forget or not pool:
        return []
    return [combined_item(f, pool[i % len(pool)], i % 2) for i, f in enumerate(forget)]


def _qa_scores(model, tokenizer, fmt, items, batch_size, max_new_tokens) -> dict:
    prompts = [fmt.prompt_ids(it.question) for it in items]
    s = score_answers(model, fmt, prompts, [it.answer for it in items], batch_size)
    g = generate_from_ids(model, tokenizer, prompts, batch_size, max_new_tokens)
    return {"prob": float(np.mean([M.answer_prob(x.logprobs) for x in s])),
            "rougeL_recall": float(np.mean([M.rouge_l_recall(y, it.answer) for y, it in zip(g, items)])),
            "n": len(items)}


def combined_halves(generations: list[str], items: list[QAItem]) -> dict:
    """Mean ROUGE-L recall of each generation against the forget half and the retain half of its query."""
    f = [M.rouge_l_recall(g, it.meta["forget_answer"]) for g, it in zip(generations, items)]
    r = [M.rouge_l_recall(g, it.meta["retain_answer"]) for g, it in zip(generations, items)]
    return {"forget_half_rouge": float(np.mean(f)), "retain_half_rouge": float(np.mean(r))}


def overlap_audit(model, tokenizer, bench: Benchmark, batch_size: int = 32, max_new_tokens: int = 64) -> dict:
    fmt = PromptFormat(tokenizer)
    was_training = model.training
    model.eval()
    out: dict = {}
    n_scored = n_gen = 0
    shared = shared_facts(bench)
    unique_forget = [it for it in bench.forget if not str(it.id or "").startswith("shared")]
    for name, items in (("shared", shared), ("unique_forget", unique_forget), ("unique_retain", bench.retain_eval)):
        if items:
            out[name] = _qa_scores(model, tokenizer, fmt, items, batch_size, max_new_tokens)
            n_scored += len(items)
            n_gen += len(items)
    combined = combined_queries(bench)
    if combined:
        prompts = [fmt.prompt_ids(it.question) for it in combined]
        gens = generate_from_ids(model, tokenizer, prompts, batch_size, max_new_tokens)
        halves = combined_halves(gens, combined)
        sf = score_answers(model, fmt, prompts, [it.meta["forget_answer"] for it in combined], batch_size)
        sr = score_answers(model, fmt, prompts, [it.meta["retain_answer"] for it in combined], batch_size)
        halves["forget_half_prob"] = float(np.mean([M.answer_prob(x.logprobs) for x in sf]))
        halves["retain_half_prob"] = float(np.mean([M.answer_prob(x.logprobs) for x in sr]))
        halves["n"] = len(combined)
        halves["per_item"] = [{"id": it.id, "question": it.question, "generation": g} for it, g in zip(combined, gens)]
        out["combined"] = halves
        n_scored += 2 * len(combined)
        n_gen += len(combined)
    model.train(was_training)
    out["forward"] = {"scored_sequences": n_scored, "generations": n_gen}
    return out
