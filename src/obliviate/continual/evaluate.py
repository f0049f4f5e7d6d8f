"""Continual-learning metrics, as pure functions of accuracies, and the one measurement they are built on.

**Accuracy** of a model on a task is the audit's answer probability, TOFU's ``Q_A_Prob``: for each item the geometric
mean of the answer tokens' probabilities under teacher forcing, ``exp(mean_t log p(a_t | q, a_<t))``, averaged over the
task's items. It is smooth (a stability gap shows up before an exact-match answer flips) and is 1 for a memorised item.

With ``R[i][j]`` the accuracy on task j after learning task i (T tasks) and ``b[j]`` that of the starting model:

* average accuracy ``ACC = (1/T) sum_j R[T-1][j]``;
* backward transfer ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j])`` (negative = forgetting) and forward transfer
  ``FWT = 1/(T-1) sum_{j>0} (R[j-1][j] - b[j])``: Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual
  Learning", NeurIPS 2017;
* from continual evaluation every k steps (De Lange, van de Ven & Tuytelaars, "Continual evaluation for lifelong
  learning: identifying the stability gap", ICLR 2023): ``min-ACC = 1/(T-1) sum_{j<T-1} min_{n > end_j} A_j(n)``, the
  average over earlier tasks of the lowest accuracy seen at any evaluation after the task was learned, and
  ``WC-ACC = (1/T) A_{T-1}(final) + (1 - 1/T) min-ACC``, the worst case a user of the model could have met;
* general-knowledge retention ``A_general(final) / A_general(start)``;
* superficial vs essential forgetting (SEFE: Chen et al., "SEFE: Superficial and Essential Forgetting Eliminator for
  Multimodal Continual Instruction Tuning", ICML 2025): a greedy answer is *correct* when it states the fact in the
  answer's form, *superficial* when it states the fact in another form, *essential* when the fact is gone
  (``answer_kind``); of the items a task answered correctly just after it was learned, those that end superficial
  and those that end essential are counted apart (``forgetting_kinds``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from ..data.collate import PromptFormat
from ..data.records import QAItem
from ..scoring.metrics import rouge_l_recall
from ..scoring.passes import generate_answers, score_sequences


def answer_prob(logprobs: Sequence[Sequence[float]]) -> float:
    """Mean over items of ``exp(mean token log-prob)`` of the answer: the accuracy used throughout."""
    if not logprobs:
        return float("nan")
    return float(np.mean([math.exp(float(np.mean(np.asarray(lp, dtype=np.float64)))) for lp in logprobs]))


@torch.no_grad()
def accuracy(model, tokenizer, items: list[QAItem], max_length: int = 256, batch_size: int = 64) -> float:
    """``answer_prob`` of ``items`` under ``model`` (left in the mode it was in)."""
    if not items:
        return float("nan")
    was_training = model.training
    model.eval()
    fmt = PromptFormat(tokenizer, max_length)
    scores = score_sequences(model, [fmt.encode(it.question, it.answer) for it in items], tokenizer.pad_token_id,
                             batch_size)
    model.train(was_training)
    return answer_prob([s.logprobs for s in scores])


def average_accuracy(R: Sequence[Sequence[float]]) -> float:
    """ACC: mean accuracy over every task after the last one was learned."""
    return float(np.mean(R[-1]))


def backward_transfer(R: Sequence[Sequence[float]]) -> float:
    """BWT: mean change on each earlier task between just after it was learned and the end (0 for one task)."""
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[T - 1][j] - R[j][j] for j in range(T - 1)]))


def forward_transfer(R: Sequence[Sequence[float]], base: Sequence[float]) -> float:
    """FWT: mean accuracy on each task just before it is learned, over that of the starting model (0 for one task)."""
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[j - 1][j] - base[j] for j in range(1, T)]))


def min_acc(curves: Sequence[Sequence[tuple[int, float]]], ends: Sequence[int]) -> float:
    """min-ACC: for each task j but the last, the lowest accuracy at an evaluation step after ``ends[j]`` (the step at
    which task j finished), averaged. ``curves[j]`` is task j's ``[(step, accuracy), ...]``; NaN for one task."""
    lows = []
    for j in range(len(ends) - 1):
        after = [a for s, a in curves[j] if s > ends[j]]
        if after:
            lows.append(min(after))
    return float(np.mean(lows)) if lows else float("nan")


def wc_acc(final_last_task: float, min_accuracy: float, n_tasks: int) -> float:
    """WC-ACC: ``(1/T) A_last(final) + (1 - 1/T) min-ACC`` (the last task's accuracy alone for one task)."""
    if n_tasks < 2 or math.isnan(min_accuracy):
        return float(final_last_task)
    return float(final_last_task / n_tasks + (1 - 1 / n_tasks) * min_accuracy)


def retention(final: float, start: float) -> float:
    """General-knowledge retention: final accuracy over the starting one."""
    return float(final / start) if start > 0 else float("nan")


def summary(R: Sequence[Sequence[float]], base: Sequence[float], curves: Sequence[Sequence[tuple[int, float]]],
            ends: Sequence[int], general_start: float, general_final: float) -> dict[str, float]:
    """Every sequence-level metric of one strategy's run, by name."""
    T = len(R[-1])
    low = min_acc(curves, ends)
    return {"avg_acc": average_accuracy(R), "bwt": backward_transfer(R), "fwt": forward_transfer(R, base),
            "min_acc": low, "wc_acc": wc_acc(R[-1][-1], low, T), "general_retention": retention(general_final,
                                                                                                general_start)}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def fact_words(item: QAItem) -> set[str]:
    """The words that carry an item's fact: those its answer shares with its paraphrased answer (the value, said in
    two templates) that no perturbed answer has (they put wrong values in the paraphrase's template); the whole
    answer when that leaves nothing."""
    words = set(_words(item.answer))
    facts = set(words)
    if item.paraphrased_answer:
        facts &= set(_words(item.paraphrased_answer))
    for p in item.perturbed_answers:
        facts -= set(_words(p))
    return facts or words


def answer_kind(generation: str, answer: str, facts: set[str], format_threshold: float = 0.8) -> str:
    """``correct`` (every fact word present and ROUGE-L recall of the answer >= ``format_threshold``),
    ``superficial`` (the fact present, the form not) or ``essential`` (a fact word missing)."""
    if not facts <= set(_words(generation)):
        return "essential"
    return "correct" if rouge_l_recall(generation, answer) >= format_threshold else "superficial"


def forgetting_kinds(before: Sequence[str], after: Sequence[str]) -> dict[str, int]:
    """Of the items ``correct`` in ``before``: how many are still correct, superficially or essentially forgotten."""
    out = {"learned": 0, "kept": 0, "superficial": 0, "essential": 0}
    for b, a in zip(before, after):
        if b == "correct":
            out["learned"] += 1
            out["kept" if a == "correct" else a] += 1
    return out


def answer_kinds(model, tokenizer, items: list[QAItem], max_length: int = 256, max_new_tokens: int = 48) -> list[str]:
    """``answer_kind`` of each item's greedy answer."""
    was_training = model.training
    model.eval()
    gens = generate_answers(model, tokenizer, PromptFormat(tokenizer, max_length), [it.question for it in items],
                            max_new_tokens=max_new_tokens)
    model.train(was_training)
    return [answer_kind(g, it.answer, fact_words(it)) for g, it in zip(gens, items)]
