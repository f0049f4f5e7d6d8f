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

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import append_jsonl
from .base import Method, register
from .losses import task_vector_negation
from .shared import finetune_copy


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
    needs_qa = "question-answer items (its fine-tuned copy trains on them)"
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
