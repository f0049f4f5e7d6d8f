"""TraceReplace: selective forgetting in reasoning traces by placeholder replacement and a feature replacement loss.

Le, Qian, Huai 2026, "Selective Forgetting for Large Reasoning Models", arXiv 2604.03571. The paper finds the
forget-relevant segments of each chain of thought with several LLMs and retrieval, replaces them with benign
placeholders that keep the logical structure, and trains with a "feature replacement" loss that suppresses the
forgotten content while reinforcing the replacement. Only the abstract was available: the loss below is *derived*
from it, and the segment finder is a stand-in (whole-word matching of the item's known facts,
``data.traces.forget_steps``; the facts come from ``QAItem.meta["facts"]``, which ``data.traces.make_traces`` writes).

For a forget trace x (question q, steps, answer) and its replacement x~ (every fact replaced by ``placeholder`` in the
steps and the answer; the "Step k:" structure and the steps without facts unchanged), let S be the answer tokens of x
that the replacement changed (the non-equal blocks of a token-level diff of x against x~, i.e. the forgotten content):

    L_suppress   = mean_{t in S} -log(1 - p_theta(x_t | q, x_<t))           (unlikelihood: bounded, unlike ascent)
    L_reinforce  = NLL_mean(x~ | q)                                           (every answer token of the replacement)
    L            = gamma * (L_suppress + beta * L_reinforce) + alpha * L_retain

``score_traces`` measures generated traces: fact leakage in the trace and in the answer, and the structure kept (ROUGE-L
recall of the steps that name no fact).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from ..data.records import QAItem
from ..data.traces import forget_steps, has_fact, parse_trace, replaced_trace
from ..errors import DataError
from ..logprobs import forward_logits, nll_mean_of
from ..scoring.metrics import rouge_l_recall
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES

STREAM = "forget_replaced"


def suppressed_positions(labels: torch.Tensor, replaced_labels: torch.Tensor) -> torch.Tensor:
    """Bool (B, T): the answer positions of ``labels`` whose tokens a token-level diff against the replacement
    changes."""
    out = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(labels.shape[0]):
        pos = (labels[b] != -100).nonzero().squeeze(-1)
        orig = labels[b, pos].tolist()
        repl = replaced_labels[b][replaced_labels[b] != -100].tolist()
        for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, orig, repl, autojunk=False).get_opcodes():
            if tag != "equal":
                out[b, pos[i1:i2]] = True
    return out


def unlikelihood(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over masked positions t of -log(1 - p(labels_t)), p from the logits at t - 1 (0 when nothing is masked)."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target, keep = labels[:, 1:], mask[:, 1:]
    if not keep.any():
        return logits.sum() * 0
    picked = logp[keep].gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
    return -torch.log1p(-picked.exp().clamp(max=1 - 1e-6)).mean()


@register("TraceReplace")
@dataclass
class TraceReplace(RetainTerm, Method):
    gamma: float = 1.0
    beta: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    placeholder: str = "unknown"

    needs_qa = "reasoning-trace items (obliviate.data.traces: steps, answer and facts per item)"
    bounds = {"gamma": (0, None), "beta": (0, None), "alpha": (0, None)}
    choices = {"retain_loss": RETAIN_LOSSES}

    def setup(self, model, tokenizer, data):
        replaced = []
        for i, it in enumerate(data["forget"]):
            missing = [k for k in ("steps", "final", "facts") if k not in it.meta]
            if missing:
                raise DataError(f"forget item {i} ({it.id or it.question[:40]!r}): field '{missing[0]}' is missing; "
                                "TraceReplace needs trace items (obliviate.data.traces)")
            replaced.append(QAItem(question=it.question, answer=replaced_trace(it, self.placeholder), entity=it.entity,
                                   id=it.id))
        return {**data, STREAM: replaced}

    def loss(self, model, batch, ref):
        fb, rb = batch["forget"], batch[STREAM]
        mask = suppressed_positions(fb["labels"], rb["labels"])
        suppress = unlikelihood(forward_logits(model, fb), fb["labels"], mask)
        reinforce = nll_mean_of(model, rb)
        return self.with_retain(suppress + self.beta * reinforce, model, batch, ref, suppress=suppress.item(),
                                reinforce=reinforce.item())


def score_traces(generations: list[str], items: list[QAItem]) -> dict[str, float]:
    """Fact leakage and structure of generated traces against trace items.

    ``trace_leak``: share of items whose generated steps name one of the item's facts; ``answer_leak``: the same for
    the generated answer; ``answer_correct``: share whose answer is the item's final value; ``kept_step_rouge``: mean
    ROUGE-L recall of each reference step that names no fact against the generated step at the same position ("" when
    missing); ``step_count_match``: share with as many generated steps as reference steps."""
    leak_t = leak_a = correct = count = 0
    rouges: list[float] = []
    for gen, it in zip(generations, items):
        steps, final = parse_trace(gen)
        ref_steps, facts = it.meta["steps"], it.meta["facts"]
        leak_t += any(has_fact(s, f) for s in steps for f in facts)
        leak_a += any(has_fact(final, f) for f in facts)
        correct += final == it.meta["final"]
        count += len(steps) == len(ref_steps)
        bad = set(forget_steps(ref_steps, facts))
        rouges += [rouge_l_recall(steps[i] if i < len(steps) else "", ref) for i, ref in enumerate(ref_steps)
                   if i not in bad]
    n = max(len(items), 1)
    return {"trace_leak": leak_t / n, "answer_leak": leak_a / n, "answer_correct": correct / n,
            "kept_step_rouge": sum(rouges) / len(rouges) if rouges else 0.0, "step_count_match": count / n}
