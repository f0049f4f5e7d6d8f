"""Scope-aware unlearning (SU), and the stealthy attack (SA) it defends against, so the defence can be measured.

Ren, Dai, Tang, Xing, Zeng, Liu, ..., Aggarwal, H. Liu 2025, "Keeping an Eye on LLM Unlearning: The Hidden Risk and
Remedy", arXiv 2506.00359. No public code: the construction below is *derived* from the abstract and summaries.

The attack. A malicious data owner stuffs their forget request with common benign words. Fine-tuning-based unlearning
learns whatever the forget texts share as the unlearning signal, so afterwards benign prompts that contain those words
trigger the forgetting behaviour. ``common_words`` picks the trigger (the most frequent words of benign questions),
``stuff`` inserts it into forget items, and ``trigger_utility`` measures the damage: answer probability on benign
items with and without the trigger (attack success = the drop).

The defence. L_SU = L_unlearn + ``scope_weight`` * L_scope, where L_unlearn is any ``inner`` method (its own retain term
included) and L_scope keeps the model's behaviour on *scope negatives*: each forget item with its forget-specific
words deleted from question and answer, so what is left is the benign part (the trigger words, in an attack). A word
is benign when it occurs in at least ``benign_df`` of the retain items (document frequency, case-insensitive); every
other word of a forget item is specific. ``scope_loss="kl"``: KL(pi_ref || pi_theta) on the scope negatives' answer
tokens (needs the frozen reference model); ``"nll"``: NLL of the stripped answers (no reference model; it also trains
on them, a cheaper approximation). Cost: + one forward/backward on the scope negatives (+ one reference forward).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass

import torch

from ..data.records import QAItem
from ..errors import DataError
from ..logprobs import forward_logits, nll_mean
from .base import Method, register
from .losses import kl_to_reference
from .shared import WORD, document_frequency, make_inner, max_reference


def benign_vocabulary(items: list[QAItem], min_df: float) -> set[str]:
    return {w for w, f in document_frequency(items).items() if f >= min_df}


def strip_specific(text: str, benign: set[str]) -> str:
    """``text`` with every word outside ``benign`` deleted (punctuation kept, spaces collapsed)."""
    out = WORD.sub(lambda m: m.group(0) if m.group(0).lower() in benign else "", text)
    out = re.sub(r"\s+", " ", out).strip()
    return re.sub(r"\s+([?.!,;:])", r"\1", out)


def scope_negative(item: QAItem, benign: set[str]) -> QAItem:
    return dataclasses.replace(item, question=strip_specific(item.question, benign),
                               answer=strip_specific(item.answer, benign), paraphrased_answer=None,
                               perturbed_answers=[], paraphrased_question=None)


def common_words(items: list[QAItem], n: int = 8) -> list[str]:
    """The ``n`` words found in the most questions of ``items`` (a benign user's vocabulary): the attack's trigger."""
    counts: Counter[str] = Counter()
    for it in items:
        counts.update({w.lower() for w in WORD.findall(it.question)})
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def stuff(items: list[QAItem], trigger: list[str] | str, where: str = "question") -> list[QAItem]:
    """Copies of ``items`` with the trigger phrase put in front of the question (and/or the answer)."""
    phrase = trigger if isinstance(trigger, str) else " ".join(trigger)
    out = []
    for it in items:
        q = f"{phrase} {it.question}" if where in ("question", "both") else it.question
        a = f"{phrase} {it.answer}" if where in ("answer", "both") else it.answer
        out.append(dataclasses.replace(it, question=q, answer=a))
    return out


def trigger_utility(model, tokenizer, items: list[QAItem], trigger: list[str] | str, batch_size: int = 32) -> dict:
    """Mean answer probability (per-token geometric mean) on ``items`` without and with the trigger in the question."""
    from ..data.collate import PromptFormat
    from ..scoring.passes import score_items

    fmt = PromptFormat(tokenizer)

    def prob(its):
        scores = score_items(model, fmt, its, tokenizer.pad_token_id, batch_size)
        return sum(float(torch.tensor(s.answer.logprobs).mean().exp()) for s in scores) / max(len(its), 1)

    clean, triggered = prob(items), prob(stuff(items, trigger))
    return {"clean": clean, "triggered": triggered, "drop": 1 - triggered / clean if clean else 0.0}


@register("Scope")
@dataclass
class Scope(Method):
    inner: str = "NPO"
    inner_hp: str = ""
    scope_weight: float = 1.0
    scope_loss: str = "kl"
    benign_df: float = 0.05

    needs_qa = "question-answer items (its trigger is the benign words of the questions)"
    bounds = {"scope_weight": (0, None), "benign_df": (0, 1)}
    choices = {"scope_loss": ("kl", "nll")}

    def __post_init__(self):
        self._inner = make_inner("Scope", self.inner, self.inner_hp, retain_off=False)
        self.reference_streams = self._inner.reference_streams

    @property
    def uses_retain(self):
        return self._inner.uses_retain

    def needs_reference(self):
        return max_reference(self._inner.needs_reference(), "model" if self.scope_loss == "kl" else "none")

    def setup(self, model, tokenizer, data):
        if not data.get("retain"):
            raise DataError("method Scope: needs the retain split to tell benign words from forget-specific ones")
        benign = benign_vocabulary(data["retain"], self.benign_df)
        data = self._inner.setup(model, tokenizer, data)
        data["forget_scope"] = [scope_negative(it, benign) for it in data["forget"]]
        return data

    def loss(self, model, batch, ref):
        inner, logs = self._inner.loss(model, batch, ref)
        s = batch["forget_scope"]
        logits = forward_logits(model, s)
        scope = kl_to_reference(logits, ref.logits(s), s["labels"]) if self.scope_loss == "kl" \
            else nll_mean(logits, s["labels"])
        return inner + self.scope_weight * scope, {**logs, "inner_loss": inner.item(), "scope_loss": scope.item()}
