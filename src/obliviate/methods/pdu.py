"""PDU: primal-dual unlearning, flattening the forget logits within a retain-loss budget (Entesari et al. 2025).

Entesari, Hatami, Khaziev, Ramakrishna, Fazlyab 2025, "Constrained Entropic Unlearning: A Primal-Dual Framework for
Large Language Models" (NeurIPS 2025):

    min_theta L_f(theta)  s.t.  L_r(theta) <= eps
    L_f = mean over answer-predicting positions of (max_v z_v - mean_v z_v)^2      (logit-margin flattening)
    L   = gamma * L_f + lambda * (L_r - eps)                                       (primal: one optimizer step)
    lambda <- max(0, lambda + dual_step_size * (L_r - eps))                        (dual: projected ascent)

lambda starts at ``alpha``; it is updated after every loss evaluation (every micro-batch: with grad_accum 1, every
step) once ``dual_warmup_steps`` evaluations have passed, from the retain loss of the current batch. lambda is logged
in every ``metrics.jsonl`` line (``dual_lambda``) and saved with checkpoints. ``eps_mode="relative"`` reads ``eps`` as
a tolerance: eps_abs = (1 + eps) * L_r(theta_0; D_r), the token-mean NLL over the whole retain set measured in
``setup`` (the paper's suggestion). Defaults (open-unlearning PDU run.sh, TOFU): alpha (lambda_0) 100,
dual_step_size 5, eps 0.3, gamma 1, retain NLL; lr 1e-5; the anchor warms up for 5 of 10 epochs (set
``dual_warmup_steps`` to match). The positions are the shifted ones, fixing the anchor's off-by-one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.collate import item_batches
from ..errors import ConfigError
from ..logprobs import forward_logits, sequence_logprob_of
from .base import Method, register
from .losses import pdu_forget_loss, retain_loss


@torch.no_grad()
def retain_nll(model, tokenizer, items, batch_size: int = 16) -> float:
    """Token-mean NLL of the answers of ``items`` (all tokens of the set pooled), with the model as it is."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in item_batches(tokenizer, items, batch_size, device, max_length=512):
        lp, n = sequence_logprob_of(model, b)
        total -= lp.sum().item()
        count += int(n.sum())
    model.train(was_training)
    return total / max(1, count)


@register("PDU")
@dataclass
class PDU(Method):
    gamma: float = 1.0
    alpha: float = 100.0
    dual_step_size: float = 5.0
    eps: float = 0.3
    eps_mode: str = "absolute"
    dual_warmup_steps: int = 0
    retain_loss: str = "nll"

    uses_retain = True
    bounds = {"gamma": (0, None), "alpha": (0, None), "dual_step_size": (0, None), "eps": (0, None),
              "dual_warmup_steps": (0, None)}
    choices = {"retain_loss": ("nll", "kl"), "eps_mode": ("absolute", "relative")}

    def __post_init__(self):
        self.dual = float(self.alpha)
        self.evaluations = 0
        self.eps_abs = float(self.eps)

    def needs_reference(self):
        return "model" if self.retain_loss == "kl" else "none"

    def setup(self, model, tokenizer, data):
        if self.eps_mode == "relative":
            if self.retain_loss == "kl":
                raise ConfigError("method PDU: eps_mode 'relative' needs retain_loss 'nll' (the starting KL is 0)")
            self.eps_abs = (1 + self.eps) * retain_nll(model, tokenizer, data["retain"])
        return data

    def loss(self, model, batch, ref):
        f = batch["forget"]
        forget = pdu_forget_loss(forward_logits(model, f), f["labels"])
        r = retain_loss(self.retain_loss, model, batch["retain"], ref)
        slack = r - self.eps_abs
        loss = self.gamma * forget + self.dual * slack
        logs = {"forget_loss": forget.item(), "retain_loss": r.item(), "retain_slack": slack.item()}
        self.evaluations += 1
        if self.evaluations > self.dual_warmup_steps:
            self.dual = max(0.0, self.dual + self.dual_step_size * slack.item())
        return loss, logs

    def state_dict(self):
        return {"dual_lambda": self.dual, "dual_evaluations": self.evaluations, "eps_abs": self.eps_abs}

    def load_state_dict(self, state):
        self.dual = float(state.get("dual_lambda", self.alpha))
        self.evaluations = int(state.get("dual_evaluations", 0))
        self.eps_abs = float(state.get("eps_abs", self.eps_abs))
