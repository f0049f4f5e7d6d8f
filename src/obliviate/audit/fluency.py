"""Fluency of what a model says on forget questions: forgetting by babbling is not forgetting.

An unlearned model may stop saying the forgotten answer by emitting garbage ("O\\x1akloreklore\\ufffd Nyny"), which
the forget metrics reward and a user (or a regulator) would not accept: the oracle answers with a fluent wrong answer
or "I don't know". Three per-item measures of a generation, each aggregated as a mean over items:

* ``ref_ppl``: the reference model's perplexity of the generation given the question, exp(-mean log p) over the
  generation's tokens and the end-of-sequence token (the reference is the oracle; the target when there is none).
  Garbage is improbable to a model that speaks the language.
* ``nonword_share``: the share of the generation's whitespace-separated tokens that are not words, a word being
  letters and digits (joined by ``' - . ,`` inside), optionally wrapped in punctuation (or at most three punctuation
  marks alone: a dash, an ellipsis), with no control character
  (Unicode category C*, tab and newline excepted), no U+FFFD and no symbol outside letters, digits and punctuation.
  ``badchar_share``: the share of characters that are control characters or U+FFFD.
* ``ngram_entropy``: RWKU's fluency measure (from ROME/MEMIT's generation entropy): over the generation's word tokens
  (runs of letters/digits, or single other non-space characters), the Shannon entropy in bits of the bigram and of the
  trigram frequency distribution, weighted 2/3 and 4/3, averaged: (2/3 H2 + 4/3 H3) / 2. Repetitive loops score low.

``fluency_report`` returns the per-item rows and their means; the certificate's ``fluency`` check compares the audited
model's mean non-word share with the oracle's under one reference model (``checks.py``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

import numpy as np

from ..data.collate import PromptFormat
from ..data.records import QAItem
from ..scoring import metrics as M
from ..scoring.passes import score_items

KEYS = ("ref_ppl", "nonword_share", "badchar_share", "ngram_entropy")
_WORD_TOKEN = re.compile(r"\w+|[^\w\s]")


def _bad_char(ch: str) -> bool:
    return ch == "\ufffd" or (unicodedata.category(ch).startswith("C") and ch not in "\n\t")


def _is_word(token: str) -> bool:
    """Letters/digits joined by ' - . , inside, wrapped in optional punctuation; no control, U+FFFD or symbol."""
    if any(_bad_char(c) for c in token):
        return False
    core = token.strip("".join(c for c in token if unicodedata.category(c).startswith("P")))
    if not core:
        # a lone dash, ellipsis or "?!": punctuation alone is a word only when short ("::::::::" is babble)
        return len(token) <= 3 and all(unicodedata.category(c).startswith("P") for c in token)
    return all(c.isalnum() or (c in "'-.,\u2019" and 0 < i < len(core) - 1) for i, c in enumerate(core))


def nonword_share(text: str) -> float:
    """Share of whitespace-separated tokens of ``text`` that are not words (0 for an empty text)."""
    tokens = text.split()
    return sum(not _is_word(t) for t in tokens) / len(tokens) if tokens else 0.0


def badchar_share(text: str) -> float:
    """Share of characters of ``text`` that are control characters (tab and newline excepted) or U+FFFD."""
    return sum(_bad_char(c) for c in text) / len(text) if text else 0.0


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """RWKU's fluency entropy of ``text``: the mean over n of weight_n x the entropy (bits) of its word n-grams."""
    tokens = _WORD_TOKEN.findall(text)
    out = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        out.append(w * h)
    return float(np.mean(out))


def reference_ppl(model, tokenizer, questions: list[str], generations: list[str], batch_size: int = 32,
                  max_length: int = 4096) -> list[float]:
    """The reference model's perplexity of each generation as the answer to its question (prompt format of
    ``tokenizer``), over the generation's tokens and the end-of-sequence token."""
    fmt = PromptFormat(tokenizer, max_length)
    was_training = model.training
    scores = score_items(model.eval(), fmt, [QAItem(question=q, answer=g) for q, g in zip(questions, generations)],
                         tokenizer.pad_token_id, batch_size)
    model.train(was_training)
    return [float(math.exp(-M.mean_logprob(s.answer.logprobs))) for s in scores]


def fluency_report(generations: list[str], reference_model, tok, questions: list[str] | None = None,
                   batch_size: int = 32) -> dict:
    """Per-item fluency of ``generations`` (``{"per_item": [{ref_ppl, nonword_share, badchar_share, ngram_entropy}],
    "mean": {...}}``); ``reference_model`` and ``tok`` score the perplexity, of each generation as the answer to its
    question in ``questions`` (default: an empty question)."""
    questions = list(questions) if questions is not None else [""] * len(generations)
    if len(questions) != len(generations):
        raise ValueError(f"fluency_report: {len(generations)} generations but {len(questions)} questions")
    ppl = reference_ppl(reference_model, tok, questions, generations, batch_size) if generations else []
    rows = [{"ref_ppl": p, "nonword_share": nonword_share(g), "badchar_share": badchar_share(g),
             "ngram_entropy": ngram_entropy(g)} for g, p in zip(generations, ppl)]
    mean = {k: float(np.mean([r[k] for r in rows])) if rows else None for k in KEYS}
    return {"per_item": rows, "mean": mean}


def annotate_rows(rows: list[dict], report: dict) -> list[dict]:
    """Add each item's fluency values (``fluency_report``'s per-item rows) to an audit's per-item rows, prefixed
    ``fluency_``, for the report's per-item table. Returns ``rows``."""
    for row, f in zip(rows, report["per_item"]):
        row.update({f"fluency_{k}": v for k, v in f.items()})
    return rows
