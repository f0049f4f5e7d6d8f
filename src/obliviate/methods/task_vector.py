"""Task-vector negation: fine-tune a copy on the forget set, then subtract the change (Ilharco et al. 2023).

"Editing Models with Task Arithmetic", arXiv 2212.04089.

    theta_ft = theta after fine-tuning a copy on D_f (NLL; the run's lr, batch size, steps or epochs, seed)
    theta   <- theta - alpha * (theta_ft - theta)

No training loop on the model itself (``trains = False``): ``apply`` fine-tunes the copy, logging its loss to
``metrics.jsonl`` as ``ft_loss``, and edits the weights in place. With LoRA the copy's adapter A is kept and B is
negated (B starts at 0), which is exactly dW = -alpha * B_ft A_ft. Default alpha 1 (the paper tunes it on held-out
data); a model that has memorised D_f moves little when fine-tuned further, so it may need a larger alpha.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.collate import PromptFormat, pad_batch
from ..engine.pairing import micro_batch_indices
from ..io import append_jsonl
from ..logprobs import forward_logits, nll_mean
from .base import Method, register
from .losses import task_vector_negation


def finetune_copy(model, tokenizer, items, steps: int, lr: float, batch_size: int, seed: int = 0,
                  max_length: int = 256, max_grad_norm: float = 1.0, weight_decay: float = 0.0, log=None):
    """A copy of ``model`` fine-tuned on ``items`` (token-mean NLL, AdamW, seeded order); ``model`` is untouched."""
    ft = copy.deepcopy(model)
    ft.train()
    params = [p for p in ft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    fmt = PromptFormat(tokenizer, max_length)
    encs = [fmt.encode(it.question, it.answer, where=f"forget item {i}") for i, it in enumerate(items)]
    device = next(ft.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            _, idx = micro_batch_indices(step, len(encs), batch_size, 1, 0, seed)
            b = {k: v.to(device) for k, v in pad_batch([encs[i] for i in idx], tokenizer.pad_token_id).items()}
            loss = nll_mean(forward_logits(ft, b), b["labels"])
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            opt.zero_grad()
            if log is not None:
                log(step + 1, loss.item())
    ft.eval()
    for p in ft.parameters():
        p.requires_grad_(False)
    return ft


@torch.no_grad()
def negate(model, finetuned, alpha: float) -> None:
    """theta <- theta - alpha * (theta_ft - theta) for every parameter; a LoRA A matrix takes the fine-tuned value."""
    ft = dict(finetuned.named_parameters())
    for name, p in model.named_parameters():
        if "lora_A" in name:
            p.copy_(ft[name])
        else:
            p.copy_(task_vector_negation(p, ft[name], alpha))


@register("TaskVector")
@dataclass
class TaskVector(Method):
    alpha: float = 1.0

    trains = False
    bounds = {"alpha": (0, None)}

    def apply(self, model, tokenizer, data, cfg, run_dir):
        forget = data["forget"]
        steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(len(forget) / cfg.batch_size)))
        metrics = Path(run_dir) / "metrics.jsonl"
        metrics.unlink(missing_ok=True)
        ft = finetune_copy(model, tokenizer, forget, steps, cfg.lr, cfg.batch_size, cfg.seed, cfg.max_length,
                           cfg.max_grad_norm, cfg.weight_decay,
                           log=lambda step, loss: append_jsonl(metrics, {"step": step, "ft_loss": round(loss, 6)}))
        negate(model, ft, self.alpha)
