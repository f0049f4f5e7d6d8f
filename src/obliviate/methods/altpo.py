"""AltPO: DPO towards alternate answers the target model generates itself (Mekala et al. 2024).

"Alternate Preference Optimization for Unlearning Factual Knowledge in Large Language Models", arXiv 2409.13474.

    r_w = log pi_theta(y_alt|x) - log pi_ref(y_alt|x),   r_l = log pi_theta(y|x) - log pi_ref(y|x)   (sequence sums)
    L_f = -(2/beta) * mean_batch log sigmoid(beta * (r_w - r_l))
    L   = gamma * L_f + alpha * L_retain

In ``setup``, before any update, the target answers each forget question (sampled at ``temperature`` with ``seed``,
or greedy), optionally after an ``instruction`` such as "Give a plausible but different answer." placed before the
question. A candidate identical to the true answer is no alternate: it is drawn again (sampling, up to 4 tries), and
then generated with the true answer's first token (and an immediate EOS) banned at the first step, so every alternate
differs from the answer it replaces. The alternates form the aligned stream ``forget_alt``; the reference log-probs of
both answers are cached once. Defaults (open-unlearning's AltPO run: DPO trainer, alternates sampled at T=1, up to 200
tokens): beta 0.1, gamma 1, alpha 1, retain NLL; one alternate per question (the anchor samples 5).

``decoding="standin"`` (obliviate's, for forgetting a named entity; ``standin_alternates``): the question is asked
about a stand-in the model does not know (``STAND_IN``, every mention of the item's ``entity`` and its surname
replaced), greedily, and the target is named back into the answer: "When was Franklin D. Roosevelt born?" gets what
the model says of Edmund Hartley's birth, about Roosevelt. Items with the same answer (one question in several
framings) share the alternate of the first. A question that does not name the entity (a reverse query, answered by
the entity's name) gets the stand-in's name. An alternate that contains the answer it replaces is made as in
``decoding="greedy"``. The alternates are fluent and as specific as the true answers, where "I don't know" answers
(IdkDPO) made SmolLM2 vaguer about the target's neighbours too; but on RWKU's Franklin D. Roosevelt the made-up
specifics spread to the neighbours as wrong dates (docs/forget.md, "Stand-in alternates"), so `obliviate forget`
keeps IdkDPO by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.collate import PromptFormat, pad_prompts_left
from ..data.forget_items import mentions, renamer
from ..data.real_targets import answer_hit, surname
from ..data.records import QAItem
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES
from .shared import dpo_towards

TRIES = 4
STAND_IN = "Edmund Hartley"  # a name no model should know much about


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


@torch.no_grad()
def generate_alternates(model, tokenizer, items: list[QAItem], decoding: str = "sample", temperature: float = 1.0,
                        max_new_tokens: int = 200, seed: int = 0, instruction: str = "", batch_size: int = 32
                        ) -> tuple[list[str], int]:
    """One alternate answer per item, each different from the item's answer; also returns how many had to be forced."""
    from transformers import LogitsProcessor, LogitsProcessorList

    fmt = PromptFormat(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    questions = [f"{instruction} {it.question}".strip() if instruction else it.question for it in items]
    prompts = [fmt.prompt_ids(q) for q in questions]
    encs = [fmt.encode(it.question, it.answer) for it in items]
    first = [e.input_ids[e.prompt_len] for e in encs]

    class BanFirst(LogitsProcessor):
        """At the first generated position, forbid each row's true first token and EOS."""

        def __init__(self, banned: list[int], start: int):
            self.banned, self.start = banned, start

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == self.start:
                rows = torch.arange(scores.shape[0], device=scores.device)
                scores[rows, torch.tensor(self.banned, device=scores.device)] = float("-inf")
                scores[:, tokenizer.eos_token_id] = float("-inf")
            return scores

    def run(idx: list[int], sample: bool, ban: bool) -> list[str]:
        out = []
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            batch = {k: v.to(device) for k, v in pad_prompts_left([prompts[i] for i in chunk],
                                                                   tokenizer.pad_token_id).items()}
            start = batch["input_ids"].shape[1]
            extra = {"logits_processor": LogitsProcessorList([BanFirst([first[i] for i in chunk], start)])} if ban \
                else {}
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else \
                {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=1, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 **sampling, **extra)
            out += [tokenizer.decode(g[start:], skip_special_tokens=True).strip() for g in gen]
        return out

    sample = decoding == "sample"
    answers: list[str | None] = [None] * len(items)
    todo = list(range(len(items)))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for _ in range(TRIES if sample else 1):
            if not todo:
                break
            for i, text in zip(todo, run(todo, sample, ban=False)):
                if text and _norm(text) != _norm(items[i].answer):
                    answers[i] = text
            todo = [i for i in todo if answers[i] is None]
        forced = len(todo)
        if todo:
            for i, text in zip(todo, run(todo, sample, ban=True)):
                answers[i] = text or "."
    model.train(was_training)
    return [a for a in answers], forced  # type: ignore[misc]


def standin_alternates(model, tokenizer, items: list[QAItem], max_new_tokens: int = 200, batch_size: int = 32,
                       stand_in: str = STAND_IN) -> tuple[list[str | None], list[int]]:
    """What the model answers about ``stand_in`` in place of each item's ``entity``, with the entity named back in
    (module docstring). Returns the alternates (None where the item has no entity, or the alternate contains the true
    answer) and the indices of those left without one."""
    from ..scoring.passes import generate_answers

    fmt = PromptFormat(tokenizer)
    out: list[str | None] = [None] * len(items)
    ask: dict[tuple[str, str], tuple[str, list[int]]] = {}  # (entity, answer) -> (question asked, items it serves)
    for i, it in enumerate(items):
        if not it.entity:
            continue
        names = mentions(it.entity)
        to_stand_in = renamer(names, stand_in, surname(stand_in))
        question = to_stand_in(it.question)
        if question != it.question:
            # items with the same answer (the same question in another framing) share one alternate, asked once
            ask.setdefault((it.entity, _norm(it.answer)), (question, []))[1].append(i)
        elif (renamed := to_stand_in(it.answer)) != it.answer:   # the answer names the entity: a reverse query
            out[i] = renamed
    questions = [q for q, _ in ask.values()]
    was_training = model.training
    model.eval()
    answers = generate_answers(model, tokenizer, fmt, questions, batch_size, max_new_tokens) if questions else []
    model.train(was_training)
    for ((entity, _), (_, served)), a in zip(ask.items(), answers):
        back = renamer(mentions(stand_in), entity, surname(entity))(a)
        for i in served:
            out[i] = back if back.strip() else None
    # an alternate holding the answer it replaces (as whole words, the way a probe is scored) would keep it: a cloze
    # sentence asked about the stand-in is often answered by restating it, blank filled
    out = [a if a is not None and not answer_hit(a, it.answer) else None for a, it in zip(out, items)]
    return out, [i for i, a in enumerate(out) if a is None]


@register("AltPO")
@dataclass
class AltPO(RetainTerm, Method):
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    decoding: str = "sample"
    temperature: float = 1.0
    max_new_tokens: int = 200
    instruction: str = ""
    seed: int = 0

    reference = "logprobs"
    reference_streams = ("forget", "forget_alt")
    needs_qa = "question-answer items (alternate answers are sampled for each forget question)"
    bounds = {"beta": (1e-6, None), "gamma": (0, None), "alpha": (0, None), "temperature": (1e-3, None),
              "max_new_tokens": (1, None)}
    choices = {"retain_loss": RETAIN_LOSSES, "decoding": ("sample", "greedy", "standin")}

    def setup(self, model, tokenizer, data):
        items = data["forget"]
        if self.decoding == "standin":
            alts, rest = standin_alternates(model, tokenizer, items, self.max_new_tokens)
            if rest:  # no entity to swap, or the same answer: the greedy alternate, its first token banned
                more, self.n_forced = generate_alternates(model, tokenizer, [items[i] for i in rest], "greedy",
                                                          self.temperature, self.max_new_tokens, self.seed,
                                                          self.instruction)
                for i, a in zip(rest, more):
                    alts[i] = a
            else:
                self.n_forced = 0
        else:
            alts, self.n_forced = generate_alternates(model, tokenizer, items, self.decoding, self.temperature,
                                                      self.max_new_tokens, self.seed, self.instruction)
        self.alternates = alts
        stream = [QAItem(question=it.question, answer=a, entity=it.entity, id=it.id)
                  for it, a in zip(data["forget"], alts)]
        return {**data, "forget_alt": stream}

    def loss(self, model, batch, ref):
        forget, lose, win = dpo_towards(model, batch, ref, "forget_alt", self.beta)
        return self.with_retain(forget, model, batch, ref, forget_logprob=lose.mean().item(),
                                alt_logprob=win.mean().item())
