"""Who's Harry Potter (WHP): train towards generic predictions a reinforced copy exposes (Eldan, Russinovich 2023).

"Who's Harry Potter? Approximate Unlearning in LLMs", arXiv 2310.02238.

    reinforced = a copy fine-tuned further on D_f (``reinforce_steps`` at ``reinforce_lr``)
    v_generic  = v_base - alpha * ReLU(v_reinforced - v_base)          (logits, at each answer-predicting position)
    L_f        = token-mean CE(p_theta, argmax v_generic)   (``target="argmax"``, the paper's labels)
               or CE(p_theta, softmax(v_generic))            (``target="soft"``)
    L          = gamma * L_f + retain_weight * L_retain

Tokens the reinforced model boosts are the forget-specific ones; the generic prediction lowers them. The argmax
targets are computed once in ``setup`` (teacher-forced on the true answer, as in the paper) and the reinforced copy is
dropped; the soft targets keep it and the frozen base model. The paper's anchored-term substitution (a dictionary of
idiosyncratic terms and generic replacements, written with GPT-4) is not done. Defaults (chosen here; the paper gives
no single alpha): alpha 5, argmax targets, 50 reinforcement steps at lr 1e-5, no retain term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.collate import item_batches
from ..logprobs import IGNORE, forward_logits, nll_mean
from .base import Method, register
from .losses import KL_RETAIN_LOSSES, RETAIN_LOSSES, retain_loss, whp_generic_logits, whp_loss
from .shared import finetune_copy


@register("WHP")
@dataclass
class WHP(Method):
    alpha: float = 5.0
    target: str = "argmax"
    reinforce_steps: int = 50
    reinforce_lr: float = 1e-5
    reinforce_batch_size: int = 8
    gamma: float = 1.0
    retain_weight: float = 0.0
    retain_loss: str = "nll"
    seed: int = 0

    needs_qa = "question-answer items (its reinforced copy trains on them)"
    bounds = {"alpha": (0, None), "reinforce_steps": (0, None), "reinforce_lr": (0, None),
              "reinforce_batch_size": (1, None), "gamma": (0, None), "retain_weight": (0, None)}
    choices = {"target": ("argmax", "soft"), "retain_loss": RETAIN_LOSSES}

    @property
    def uses_retain(self):
        return self.retain_weight > 0 and self.retain_loss != "none"

    def needs_reference(self):
        kl = self.uses_retain and self.retain_loss in KL_RETAIN_LOSSES
        return "model" if self.target == "soft" or kl else "none"

    def setup(self, model, tokenizer, data):
        reinforced = finetune_copy(model, tokenizer, data["forget"], self.reinforce_steps, self.reinforce_lr,
                                   self.reinforce_batch_size, self.seed)
        if self.target == "soft":
            self.reinforced = reinforced
        else:
            self.build_targets(model, reinforced, tokenizer, data["forget"])
        return data

    @torch.no_grad()
    def build_targets(self, base, reinforced, tokenizer, items, batch_size: int = 16) -> list[list[int]]:
        """For each item, the argmax of v_generic at each position that predicts an answer token."""
        device = next(base.parameters()).device
        was_training = base.training
        base.eval()
        self.targets = []
        for b in item_batches(tokenizer, items, batch_size, device, max_length=512):
            generic = whp_generic_logits(forward_logits(base, b).float(), forward_logits(reinforced, b).float(),
                                         self.alpha)
            ids = generic[:, :-1].argmax(-1)
            mask = b["labels"][:, 1:] != IGNORE
            self.targets += [ids[row][mask[row]].tolist() for row in range(len(ids))]
        base.train(was_training)
        return self.targets

    def loss(self, model, batch, ref):
        f = batch["forget"]
        logits = forward_logits(model, f)
        if self.target == "soft":
            with torch.no_grad():
                generic = whp_generic_logits(ref.logits(f).float(), forward_logits(self.reinforced, f).float(),
                                             self.alpha)
            forget = whp_loss(logits, f["labels"], generic, soft=True)
        else:
            labels = f["labels"].clone()
            for row, i in enumerate(f["index"].tolist()):
                pos = (labels[row, 1:] != IGNORE).nonzero().squeeze(-1) + 1
                labels[row, pos] = torch.tensor(self.targets[i][:len(pos)], device=labels.device)
            forget = nll_mean(logits, labels)
        r = retain_loss(self.retain_loss, model, batch["retain"], ref) if self.uses_retain else forget * 0
        return self.gamma * forget + self.retain_weight * r, {"forget_loss": forget.item(), "retain_loss": r.item()}
