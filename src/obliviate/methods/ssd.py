"""SSD: Selective Synaptic Dampening, no training (Foster, Schoepf, Brintrup, AAAI 2024, arXiv 2308.07707).

Importances are diagonal empirical Fishers, as the official code computes them: the square of each *mini-batch-mean*
gradient, averaged over batches (not per-example squares):

    I_f = mean_batches (grad NLL(batch of D_f))^2          I_D = mean_batches (grad NLL(batch of D))^2
    for each parameter i with I_f,i > alpha * I_D,i:    theta_i <- theta_i * min((lambda * I_D,i / I_f,i)^exponent, 1)

NLL is the token-mean answer NLL of a batch. D is the retain set (``importance_data="retain"``, the LLM adaptation),
or retain + forget (``"full"``, the paper's "full training set"). Both passes use the run's batch size, so the two
importances are on the same loss scale (a pitfall of the original); ``max_batches`` subsamples D (0 = every batch).
Defaults (official code): alpha (``selection_weighting``) 10, lambda (``dampening_constant``) 1, exponent 1; the cap at
1 means parameters never grow. ``target`` restricts the edit to parameters whose names match a regex ("" = all).
Everything is computed in float32. ``metrics.jsonl`` gets one line: how many parameters were selected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.collate import item_batches
from ..errors import ConfigError
from ..io import append_jsonl
from ..logprobs import forward_logits, nll_mean
from .base import Method, register
from .losses import ssd_dampen


def diagonal_fisher(model, tokenizer, items, params: dict[str, torch.nn.Parameter], batch_size: int,
                    max_batches: int = 0) -> dict[str, torch.Tensor]:
    """mean over batches of (grad of the batch's token-mean NLL)^2, per parameter, in float32."""
    device = next(model.parameters()).device
    out = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    was_training = model.training
    model.eval()  # no dropout: the importances of the model as it is
    for b in item_batches(tokenizer, items, batch_size, device):
        if max_batches and count >= max_batches:
            break
        grads = torch.autograd.grad(nll_mean(forward_logits(model, b), b["labels"]), list(params.values()),
                                    allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                out[n] += g.float().square()
        count += 1
    model.train(was_training)
    return {n: v / max(count, 1) for n, v in out.items()}


@register("SSD")
@dataclass
class SSD(Method):
    alpha: float = 10.0
    dampening: float = 1.0
    exponent: float = 1.0
    importance_data: str = "retain"
    max_batches: int = 0
    target: str = ""

    trains = False
    uses_retain = True
    whole_model = "its per-parameter importances"
    bounds = {"alpha": (0, None), "dampening": (0, None), "exponent": (0, None), "max_batches": (0, None)}
    choices = {"importance_data": ("retain", "full")}

    def selected_params(self, model) -> dict[str, torch.nn.Parameter]:
        try:
            pattern = re.compile(self.target)
        except re.error as e:
            raise ConfigError(f"method SSD: hyperparameter 'target' is not a valid regex ({e})") from None
        params = {n: p for n, p in model.named_parameters() if p.requires_grad and pattern.search(n)}
        if not params:
            raise ConfigError(f"method SSD: no parameter matches 'target' = {self.target!r}")
        return params

    def importances(self, model, tokenizer, data, batch_size: int):
        params = self.selected_params(model)
        general = data["retain"] + (data["forget"] if self.importance_data == "full" else [])
        imp_f = diagonal_fisher(model, tokenizer, data["forget"], params, batch_size)
        imp_d = diagonal_fisher(model, tokenizer, general, params, batch_size, self.max_batches)
        return params, imp_f, imp_d

    @torch.no_grad()
    def dampen(self, params, imp_f, imp_d) -> tuple[int, int]:
        selected = total = 0
        for n, p in params.items():
            selected += int((imp_f[n] > self.alpha * imp_d[n]).sum())
            total += p.numel()
            p.copy_(ssd_dampen(p.float(), imp_f[n], imp_d[n], self.alpha, self.dampening, self.exponent).to(p.dtype))
        return selected, total

    def apply(self, model, tokenizer, data, cfg, run_dir):
        with torch.enable_grad():
            params, imp_f, imp_d = self.importances(model, tokenizer, data, cfg.batch_size)
        selected, total = self.dampen(params, imp_f, imp_d)
        metrics = Path(run_dir) / "metrics.jsonl"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.unlink(missing_ok=True)
        append_jsonl(metrics, {"step": 0, "selected_params": selected, "total_params": total,
                               "selected_fraction": round(selected / max(total, 1), 8)})
