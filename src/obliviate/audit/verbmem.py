"""MUSE's memorisation audits: verbatim (verbmem) and knowledge (knowmem).

* **verbmem**: the model is given the first ``prefix_tokens`` tokens of a forget document and continues greedily for
  ``max_new_tokens``; the continuation is scored by ROUGE-L against the document's true next tokens (MUSE reports F1;
  recall is kept too). Documents come as ``Document`` texts (cut here) or as MUSE's ready-made ``{prompt, gt}`` pairs
  (``read_verbmem``). For a QA forget set, ``qa_as_documents`` writes each item as the text the model was trained on
  (its prompt followed by the answer) and the prefix keeps the prompt plus the first answer tokens.
* **knowmem**: questions about the forget documents, asked with a few in-context examples (MUSE's ``*_qa_icl``), greedy
  32-token answers, ROUGE-L against the gold answer. On a QA benchmark the forget (and retain) items are the questions
  and retain items from other entities are the examples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.collate import PromptFormat
from ..data.formats import read_records
from ..data.records import Document, QAItem
from ..errors import DataError
from ..scoring import metrics as M
from .probes import dialogue_ids, generate_from_ids


@dataclass
class VerbatimCase:
    prompt_ids: list[int]
    truth: str           # the true continuation (decoded)
    id: str | None = None


def cut_documents(tokenizer, docs: list[Document], prefix_tokens: int = 32,
                  max_new_tokens: int = 128) -> list[VerbatimCase]:
    """Prefix = BOS + the first ``prefix_tokens`` tokens; truth = the next ``max_new_tokens`` tokens, decoded.
    Documents too short to leave a continuation are skipped."""
    cases = []
    for d in docs:
        ids = tokenizer(d.text, add_special_tokens=False)["input_ids"]
        if len(ids) <= prefix_tokens:
            continue
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        truth = tokenizer.decode(ids[prefix_tokens: prefix_tokens + max_new_tokens], skip_special_tokens=True).strip()
        cases.append(VerbatimCase(bos + ids[:prefix_tokens], truth, d.id))
    return cases


def read_verbmem(path: str | Path, tokenizer) -> list[VerbatimCase]:
    """MUSE's verbmem file: records with ``prompt`` (the prefix) and ``gt`` (the true continuation)."""
    cases = []
    for i, r in enumerate(read_records(path)):
        for key in ("prompt", "gt"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"{path}: record {i}: field '{key}' is missing or empty")
        ids = tokenizer(r["prompt"], add_special_tokens=True)["input_ids"]
        cases.append(VerbatimCase(ids, r["gt"].strip(), str(r.get("id", i))))
    return cases


def qa_as_documents(fmt: PromptFormat, items: list[QAItem], answer_prefix_tokens: int = 2) -> list[VerbatimCase]:
    """Each QA item as the text it was trained on: prefix = its prompt + the first answer tokens, truth = the rest."""
    tok = fmt.tok
    cases = []
    for it in items:
        a_ids = tok(fmt.target(it.answer), add_special_tokens=False)["input_ids"]
        k = min(answer_prefix_tokens, max(0, len(a_ids) - 1))
        truth = tok.decode(a_ids[k:], skip_special_tokens=True).strip()
        cases.append(VerbatimCase(fmt.prompt_ids(it.question) + a_ids[:k], truth, it.id))
    return cases


def verbmem(model, tokenizer, cases: list[VerbatimCase], max_new_tokens: int = 128, batch_size: int = 16) -> dict:
    """Greedy continuations of each prefix; mean ROUGE-L F1 (MUSE's headline) and recall against the truth."""
    was_training = model.training
    model.eval()
    gens = generate_from_ids(model, tokenizer, [c.prompt_ids for c in cases], batch_size, max_new_tokens)
    model.train(was_training)
    rows = [{"id": c.id, "truth": c.truth, "generation": g, "rougeL_f1": M.rouge_l_f1(g, c.truth),
             "rougeL_recall": M.rouge_l_recall(g, c.truth)} for c, g in zip(cases, gens)]
    return {"rougeL_f1": _mean(rows, "rougeL_f1"), "rougeL_recall": _mean(rows, "rougeL_recall"), "per_item": rows,
            "forward": {"generations": len(cases)}}


def knowmem(model, tokenizer, fmt: PromptFormat, items: list[QAItem], demos: list[QAItem], shots: int = 2,
            max_new_tokens: int = 32, batch_size: int = 16, seed: int = 0) -> dict:
    """Few-shot QA: each question after ``shots`` examples drawn from ``demos`` (other entities), ROUGE-L vs gold."""
    rng = random.Random(seed)
    pool = [d for d in demos if d.entity is None or d.entity not in {it.entity for it in items}] or list(demos)
    prompts = []
    for it in items:
        ex = rng.sample(pool, min(shots, len(pool))) if pool else []
        prompts.append(dialogue_ids(fmt, [(d.question, d.answer) for d in ex], it.question))
    was_training = model.training
    model.eval()
    gens = generate_from_ids(model, tokenizer, prompts, batch_size, max_new_tokens)
    model.train(was_training)
    rows = [{"id": it.id, "question": it.question, "answer": it.answer, "generation": g,
             "rougeL_f1": M.rouge_l_f1(g, it.answer), "rougeL_recall": M.rouge_l_recall(g, it.answer)}
            for it, g in zip(items, gens)]
    return {"rougeL_f1": _mean(rows, "rougeL_f1"), "rougeL_recall": _mean(rows, "rougeL_recall"), "per_item": rows,
            "forward": {"generations": len(items)}}


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")
