"""Attention shifting: stop attending to fact-bearing tokens on forget data, keep attention as it was on retain data.

Tan, Qu, Li, Zhang, Cui, Chen, Gao 2025 (NeurIPS), "Wisdom is Knowing What not to Say: Hallucination-Free LLMs
Unlearning via Attention Shifting", arXiv 2510.17210. No public code: the losses below are *derived* from the abstract
and a review; the choices they leave open are hyperparameters.

    K_fact  = the fact-bearing tokens of a forget item (``importance``, below)
    L_sup   = mean over layers, heads and query positions q of sum_{k in K_fact} A_theta[q, k]      (forget batch)
    L_ret   = NLL(retain) + mu * mean over layers, heads, q of KL(A_theta0[q, :] || A_theta[q, :])   (retain batch)
    L       = gamma * L_sup + alpha * L_ret

Queries are the positions that predict answer tokens (``queries="answer"``) or every non-padding position (``"all"``,
which also stops the prompt's later tokens from relaying the facts). Importance: ``"rarity"`` marks the tokens of words
that occur in fewer than ``rare_df`` of the retain items (names, invented values: what identifies the fact; character
offsets of a fast tokenizer map words to tokens); ``"saliency"`` marks the ``top_fraction`` of tokens with the largest
|gradient x input| of the answer NLL under the starting model (the default: on the tiny benchmark it forgets more
than rarity at the same retain cost). Both are computed once in ``setup``.
The paper modulates attention through adapters; here every parameter trains (or use ``last_layers``).
Attention probabilities need eager attention: ``setup`` switches the model to it and ``finish`` switches back. Cost: the
eager attention's O(T^2) memory per head, plus a reference forward on the retain batch when mu > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.collate import PromptFormat
from ..errors import ConfigError, DataError
from ..logprobs import nll_mean
from .base import Method, register
from .losses import attention_kl, attention_mass
from .shared import WORD, document_frequency, freeze_all_but_last


def rare_token_mask(tokenizer, item, rare: set[str]) -> torch.Tensor:
    """Boolean mask over the item's encoded tokens (prompt + answer + EOS): tokens inside a word in ``rare``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("method AttentionShift: importance 'rarity' needs a fast tokenizer; use 'saliency'")
    fmt = PromptFormat(tokenizer, 10**9)
    enc = fmt.encode(item.question, item.answer)
    marks = []
    for text, special in ((fmt.prompt(item.question), not fmt.chat), (fmt.target(item.answer), False)):
        spans = [m.span() for m in WORD.finditer(text) if m.group(0).lower() in rare]
        got = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        for s, e in got["offset_mapping"]:
            marks.append(e > s and any(s < we and e > ws for ws, we in spans))
    marks.append(False)  # EOS
    if len(marks) != len(enc.input_ids):
        raise DataError("method AttentionShift: token offsets do not match the encoding of a forget item")
    return torch.tensor(marks)


def saliency_token_mask(model, tokenizer, item, top_fraction: float) -> torch.Tensor:
    """The ``top_fraction`` of tokens (not the first) with the largest |grad . embedding| of the answer NLL."""
    enc = PromptFormat(tokenizer, 10**9).encode(item.question, item.answer)
    device = next(model.parameters()).device
    ids = torch.tensor([enc.input_ids], device=device)
    labels = torch.tensor([enc.labels], device=device)
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).logits
    (g,) = torch.autograd.grad(nll_mean(logits, labels), emb)
    score = (g * emb).sum(-1).abs()[0].detach().cpu()
    score[0] = -1.0
    n = max(1, math.ceil(top_fraction * (len(score) - 1)))
    mask = torch.zeros(len(score), dtype=torch.bool)
    mask[torch.argsort(score, descending=True, stable=True)[:n]] = True
    return mask


def query_mask(batch: dict, which: str) -> torch.Tensor:
    """(B, T) positions whose attention counts: those predicting answer tokens, or every non-padding position."""
    if which == "all":
        return batch["attention_mask"].bool()
    q = torch.zeros_like(batch["labels"], dtype=torch.bool)
    q[:, :-1] = batch["labels"][:, 1:] != -100
    return q


@register("AttentionShift")
@dataclass
class AttentionShift(Method):
    importance: str = "saliency"
    rare_df: float = 0.05
    top_fraction: float = 0.3
    queries: str = "answer"
    gamma: float = 1.0
    alpha: float = 1.0
    mu: float = 1.0
    last_layers: int = 0

    uses_retain = True
    reference_streams = ()
    needs_qa = "question-answer items (it shifts attention within each question and answer)"
    bounds = {"rare_df": (0, 1), "top_fraction": (1e-6, 1), "gamma": (0, None), "alpha": (0, None), "mu": (0, None),
              "last_layers": (0, None)}
    choices = {"importance": ("rarity", "saliency"), "queries": ("answer", "all")}

    def needs_reference(self):
        return "model" if self.mu and self.alpha else "none"

    def setup(self, model, tokenizer, data):
        if self.importance == "rarity":
            df = document_frequency(data["retain"])
            rare = {w.lower() for it in data["forget"] for w in WORD.findall(it.question + " " + it.answer)
                    if df.get(w.lower(), 0.0) < self.rare_df}
            self.fact_masks = [rare_token_mask(tokenizer, it, rare) for it in data["forget"]]
        else:
            was = model.training
            model.eval()
            with torch.enable_grad():
                self.fact_masks = [saliency_token_mask(model, tokenizer, it, self.top_fraction) for it in data["forget"]]
            model.train(was)
        self._attn = model.config._attn_implementation
        model.set_attn_implementation("eager")
        if self.last_layers:
            freeze_all_but_last(model, self.last_layers)
        return data

    def finish(self, model):
        model.set_attn_implementation(self._attn)

    def key_mask(self, f: dict) -> torch.Tensor:
        keys = torch.zeros_like(f["input_ids"], dtype=torch.bool)
        for b, i in enumerate(f["index"].tolist()):
            m = self.fact_masks[i]
            n = min(len(m), int(f["attention_mask"][b].sum()))
            keys[b, :n] = m[:n].to(keys.device)
        return keys

    def loss(self, model, batch, ref):
        f = batch["forget"]
        out = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], output_attentions=True)
        qm, km = query_mask(f, self.queries), self.key_mask(f)
        sup = torch.stack([attention_mass(a, qm, km) for a in out.attentions]).mean()
        logs = {"suppression_loss": sup.item()}
        ret = sup * 0
        if self.alpha:
            r = batch["retain"]
            ro = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], output_attentions=self.mu > 0)
            nll = nll_mean(ro.logits, r["labels"])
            ret = nll
            logs["retain_loss"] = nll.item()
            if self.mu:
                with torch.no_grad():
                    ref_att = ref.model(input_ids=r["input_ids"], attention_mask=r["attention_mask"],
                                        output_attentions=True).attentions
                rq = query_mask(r, "answer")
                kl = torch.stack([attention_kl(p, a, rq) for p, a in zip(ref_att, ro.attentions)]).mean()
                ret = nll + self.mu * kl
                logs["attention_kl"] = kl.item()
        return self.gamma * sup + self.alpha * ret, logs
