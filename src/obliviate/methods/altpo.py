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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.collate import PromptFormat, pad_prompts_left
from ..data.records import QAItem
from .base import Method, RetainTerm, register
from .losses import RETAIN_LOSSES
from .shared import dpo_towards

TRIES = 4


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
    choices = {"retain_loss": RETAIN_LOSSES, "decoding": ("sample", "greedy")}

    def setup(self, model, tokenizer, data):
        alts, self.n_forced = generate_alternates(model, tokenizer, data["forget"], self.decoding, self.temperature,
                                                  self.max_new_tokens, self.seed, self.instruction)
        self.alternates = alts
        stream = [QAItem(question=it.question, answer=a, entity=it.entity, id=it.id)
                  for it, a in zip(data["forget"], alts)]
        return {**data, "forget_alt": stream}

    def loss(self, model, batch, ref):
        forget, lose, win = dpo_towards(model, batch, ref, "forget_alt", self.beta)
        return self.with_retain(forget, model, batch, ref, forget_logprob=lose.mean().item(),
                                alt_logprob=win.mean().item())
