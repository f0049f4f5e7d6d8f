"""GeRe: general samples replay, with label fitting, KL logit imitation, L1/L2 feature imitation and the TM loss.

Zhang et al., "GeRe: Towards Efficient Anti-Forgetting in Continual Learning of LLM via General Samples Replay",
2025 (arXiv:2508.04676). A small *fixed* set G of general samples (here ``n_general`` of the benchmark's
general-knowledge items, chosen once with a seeded generator) is replayed beside every task batch, against the
starting model f_0 (frozen):

    L = NLL_mean(B_t) + w_label * NLL_mean(G) + w_kl * KL(f_0(G) || f(G))
        + w_feat * mean_l |h_l(G) - h_l^0(G)|_{1 or 2} + w_tm * mean_l TM(h_l(G), h_l^0(G))

The KL is over next-token distributions at G's answer positions; the hidden states ``h_l`` are every decoder layer's
output at G's tokens. ``TM`` (``losses.tm_loss``) is the threshold-based margin loss: the reference activations above
their upper quantile (``tm_quantile``) must stay above it, those below the lower quantile stay below, the rest are
free. The defaults are the paper's recommended combination, label fitting plus TM.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch

from ...errors import ConfigError, DataError
from ...logprobs import nll_mean, shift
from ..losses import masked_feature_distance, masked_kl, tm_loss
from .base import ContinualMethod, Strategy, register_strategy


@dataclass
class GeReLoss(ContinualMethod):
    name = "cl-gere"
    w_label: float = 1.0
    w_kl: float = 0.0
    w_feat: float = 0.0
    feat_norm: str = "l2"
    w_tm: float = 1.0
    tm_quantile: float = 0.1

    def __post_init__(self):
        self.teacher = None  # the frozen starting model, set by the strategy

    uses_retain = True

    def objective(self, model, batch, ref):
        b = batch["train"]
        task = nll_mean(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        g = batch["retain"]
        self.teacher.to(g["input_ids"].device)
        out = model(input_ids=g["input_ids"], attention_mask=g["attention_mask"], output_hidden_states=True)
        with torch.no_grad():
            ref_out = self.teacher(input_ids=g["input_ids"], attention_mask=g["attention_mask"],
                                   output_hidden_states=True)
        label = nll_mean(out.logits, g["labels"])
        _, _, target = shift(out.logits, g["labels"])
        kl = masked_kl(out.logits[:, :-1], ref_out.logits[:, :-1], target.float())
        mask = g["attention_mask"]
        layers = list(zip(out.hidden_states[1:], ref_out.hidden_states[1:]))
        feat = torch.stack([masked_feature_distance(h, h0, mask, self.feat_norm) for h, h0 in layers]).mean()
        tm = torch.stack([tm_loss(h, h0, mask, self.tm_quantile) for h, h0 in layers]).mean()
        loss = task + self.w_label * label + self.w_kl * kl + self.w_feat * feat + self.w_tm * tm
        return loss, {"nll": task.item(), "general_nll": label.item(), "kl": kl.item(), "feat": feat.item(),
                      "tm": tm.item()}


@register_strategy("gere")
@dataclass
class GeRe(Strategy):
    n_general: int = 16
    w_label: float = 1.0
    w_kl: float = 0.0
    w_feat: float = 0.0
    feat_norm: str = "l2"
    w_tm: float = 1.0
    tm_quantile: float = 0.1
    seed: int = 0
    bounds = {"n_general": (1, None), "w_label": (0, None), "w_kl": (0, None), "w_feat": (0, None),
              "w_tm": (0, None), "tm_quantile": (0.001, 0.5)}

    def __post_init__(self):
        self.samples: list = []
        self.teacher = None

    def begin(self, model, tokenizer, general):
        if not general:
            raise DataError("strategy GeRe: the benchmark has no general-knowledge items to replay")
        pool = list(general)
        self.samples = pool if len(pool) <= self.n_general else random.Random(self.seed).sample(pool, self.n_general)
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def data(self, items):
        return {"train": items, "retain": self.samples}

    def method(self, stage=""):
        m = GeReLoss(self.w_label, self.w_kl, self.w_feat, self.feat_norm, self.w_tm, self.tm_quantile)
        m.teacher = self.teacher
        return m

    def validate(self):
        super().validate()
        if self.feat_norm not in ("l1", "l2"):
            raise ConfigError(f"strategy GeRe: hyperparameter 'feat_norm' = {self.feat_norm!r} must be l1 or l2")
