"""SHRED: retain-set-free self-distillation that demotes the memorised token at high-surprisal positions.

Hu, Godbole, Wei, Rostami, Thomason, Jia 2026, arXiv 2605.07482 (equations from the paper's method figure; no public
training code, so the batching and normalisation choices below are ours and marked as such).

    T    = answer positions (the shifted targets), minus the first ``skip_first_tokens`` of each answer
    F    = the ``fraction`` P of T with the lowest teacher probability p_theta0(x_t | x_<t)   (high surprisal)
    V_t  = {x_t} (variant A), or {x_t} + the teacher's top-``nucleus`` nucleus (variant B), for t in F; empty on T \\ F
    q_t  = p_theta0(v | x_<t) * 1[v not in V_t] / Z_t          over the teacher's top-``top_k`` tokens
    L    = mean over t in T of KL(q_t || p_theta(. | x_<t))      (the paper sums; we average over the batch's positions)

The teacher is the frozen starting model; its top-k distributions over the whole forget set are computed once in
``setup`` and kept in memory (k probabilities and ids per answer token), so a step costs one forward/backward of the
student and nothing else: no retain set, no reference model. Positions of T \\ F ("benign anchors") pull the student
back to the teacher, which is what preserves utility.

Our choices, the paper being silent: ``selection="sequence"`` takes ceil(P * |T_i|) positions in each answer (at
least one); ``"global"`` takes the lowest P fraction over the whole forget set. A position whose whole top-k is demoted
(variant B with a large nucleus) has no target and is left out of the loss. The teacher pass uses no truncation; a
batch truncated by ``max_length`` uses the prefix of each answer's positions.
Defaults (dashboard): P 0.5 (TOFU's best), top_k 64, skip 0, variant A, nucleus 0.5 for variant B; lr 1e-5 with small
batches in the paper (1-2 preserve utility; large lr or batch collapses utility like gradient ascent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.collate import item_batches
from ..errors import DataError
from ..logprobs import forward_logits, shift
from .base import Method, register
from .losses import demotion_target, topk_kl


@torch.no_grad()
def teacher_topk(model, tokenizer, items, top_k: int, batch_size: int = 16) -> list[dict[str, torch.Tensor]]:
    """For each item: the answer tokens, their teacher probabilities, and the teacher's top-k (probs, ids) there."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for b in item_batches(tokenizer, items, batch_size, device):
        lg, lb, mask = shift(forward_logits(model, b), b["labels"])
        for row in range(lb.shape[0]):
            m = mask[row]
            p = torch.softmax(lg[row][m].float(), -1)
            tokens = lb[row][m]
            probs, ids = p.topk(min(top_k, p.shape[-1]), -1)
            out.append({"tokens": tokens.cpu(), "p_token": p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).cpu(),
                        "probs": probs.cpu(), "ids": ids.cpu()})
    model.train(was_training)
    return out


def select_positions(p_token: list[torch.Tensor], fraction: float, skip: int, scope: str
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(in_T, in_F) masks per item: T drops the first ``skip`` positions; F = the lowest-probability ``fraction``."""
    in_t = [torch.arange(len(p)) >= skip for p in p_token]
    in_f = [torch.zeros(len(p), dtype=torch.bool) for p in p_token]
    if scope == "sequence":
        for p, t, f in zip(p_token, in_t, in_f):
            idx = t.nonzero().squeeze(-1)
            if len(idx):
                n = max(1, math.ceil(fraction * len(idx)))
                f[idx[torch.argsort(p[idx], stable=True)[:n]]] = True
    else:
        flat = [(float(p[j]), i, j) for i, (p, t) in enumerate(zip(p_token, in_t)) for j in t.nonzero().squeeze(-1).tolist()]
        flat.sort()
        for _, i, j in flat[:max(1, math.ceil(fraction * len(flat)))] if flat else []:
            in_f[i][j] = True
    return in_t, in_f


@register("SHRED")
@dataclass
class SHRED(Method):
    fraction: float = 0.5
    variant: str = "A"
    nucleus: float = 0.5
    top_k: int = 64
    skip_first_tokens: int = 0
    selection: str = "sequence"

    bounds = {"fraction": (1e-6, 1.0), "nucleus": (0.0, 1.0), "top_k": (1, None), "skip_first_tokens": (0, None)}
    choices = {"variant": ("A", "B"), "selection": ("sequence", "global")}

    def setup(self, model, tokenizer, data):
        teacher = teacher_topk(model, tokenizer, data["forget"], self.top_k)
        in_t, in_f = select_positions([t["p_token"] for t in teacher], self.fraction, self.skip_first_tokens,
                                      self.selection)
        self.targets = []
        for t, keep, demote in zip(teacher, in_t, in_f):
            q, ok = demotion_target(t["probs"], t["ids"], t["tokens"], demote, self.variant, self.nucleus)
            self.targets.append({"tokens": t["tokens"], "q": q, "ids": t["ids"], "use": keep & ok, "demote": demote})
        return data

    def loss(self, model, batch, ref):
        f = batch["forget"]
        lg, lb, mask = shift(forward_logits(model, f), f["labels"])
        rows, qs, ids, demoted = [], [], [], []
        for b, i in enumerate(f["index"].tolist()):
            pos = mask[b].nonzero().squeeze(-1)
            t = self.targets[i]
            n = len(pos)
            if n > len(t["tokens"]) or not torch.equal(lb[b, pos].cpu(), t["tokens"][:n]):
                raise DataError(f"SHRED: forget item {i} is not tokenised as in setup (teacher targets do not align)")
            use = t["use"][:n]
            rows.append(lg[b, pos[use.to(pos.device)]])
            qs.append(t["q"][:n][use])
            ids.append(t["ids"][:n][use])
            demoted.append(t["demote"][:n][use])
        rows = torch.cat(rows)
        q = torch.cat(qs).to(rows.device)
        ids_ = torch.cat(ids).to(rows.device)
        dem = torch.cat(demoted).to(rows.device)
        loss = topk_kl(rows, q, ids_)
        with torch.no_grad():
            logs = {"forget_loss": loss.item(), "demoted_positions": float(dem.sum()),
                    "demoted_kl": topk_kl(rows[dem], q[dem], ids_[dem]).item() if dem.any() else 0.0,
                    "anchor_kl": topk_kl(rows[~dem], q[~dem], ids_[~dem]).item() if (~dem).any() else 0.0}
        return loss, logs
