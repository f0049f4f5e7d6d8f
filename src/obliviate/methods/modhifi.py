"""ModHiFi-U: gradient-free unlearning: remove the MLP channels whose subset fidelity is specific to the forget data.

Kashyap, Murti, Nayak, Narshana, Bhattacharyya, "ModHiFi: Identifying High Fidelity predictive components for Model
Modification", NeurIPS 2025, arXiv 2511.19566. The paper defines *subset fidelity* (how well a subset of a layer's
components reconstructs the layer's local output) and ModHiFi-U (class unlearning on vision models by removing the
components most faithful to the forget class, no fine-tuning, no gradients, no labels). Its LLM-unlearning form is not
spelled out in what we could read, so what follows is *derived* and the uncertain choices are hyperparameters.

Components are the intermediate channels j of each decoder block's MLP, i.e. the columns of ``mlp.down_proj``
(W: d x m). For an input token t with intermediate activation a_t (m) the local output is y_t = W a_t and channel j
contributes c_tj = W[:, j] a_tj. The singleton subset fidelity of j on data D is the fraction of the local output that
the best rescaled c_j reconstructs (1 minus the least-squares residual), over all non-padding tokens of D:

    SF_j(D) = 1 - min_s sum_t ||y_t - s c_tj||^2 / sum_t ||y_t||^2
            = (sum_t a_tj <W_j, y_t>)^2 / (||W_j||^2 sum_t a_tj^2 * sum_t ||y_t||^2)        in [0, 1]

Specificity to the forget set D_f against a reference set D_r is ``score="difference"``: SF_j(D_f) - SF_j(D_r), or
``"ratio"``: SF_j(D_f) / (SF_j(D_r) + 1e-12). In each block the ``round(fraction * m)`` channels of highest specificity
are removed: their down_proj columns are set to 0 (structured pruning of that channel). D_r is ``contrast="synthetic"``
(data-free: ``n_synthetic`` sequences of uniformly drawn non-special tokens, as long as the longest forget item, seeded
by ``seed``) or ``"retain"`` (the retain items, when data is at hand). Only forward passes, under ``torch.no_grad``:
the cost is one forward pass over D_f and D_r (``metrics.jsonl`` records the token counts, the seconds and the channels
removed per block). ``trains = False``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.collate import item_batches
from ..errors import ConfigError
from ..io import append_jsonl
from .base import Method, register
from .shared import decoder_layers


def down_projections(model, method: str = "ModHiFiU") -> list[torch.nn.Linear]:
    """Each decoder block's ``mlp.down_proj`` (the layer whose input channels are the components)."""
    out = []
    for i, block in enumerate(decoder_layers(model)):
        proj = getattr(getattr(block, "mlp", None), "down_proj", None)
        if not isinstance(proj, torch.nn.Linear):
            raise ConfigError(f"method {method}: decoder block {i} has no mlp.down_proj linear layer")
        out.append(proj)
    return out


@torch.no_grad()
def subset_fidelity(model, batches) -> list[torch.Tensor]:
    """SF_j of every intermediate channel of every block's down_proj over the non-padding tokens of ``batches``
    (dicts with input_ids and attention_mask); one (m,) float64 tensor per block."""
    projs = down_projections(model)
    sums = [dict(x=0.0, a2=0.0, y2=0.0) for _ in projs]
    mask_box = {}

    def hook(i):
        def fn(module, args, out):
            keep = mask_box["m"]
            a = args[0][keep].double()  # (N, m)
            y = out[keep].double()  # (N, d)
            w = module.weight.double()  # (d, m)
            if module.bias is not None:
                y = y - module.bias.double()
            s = sums[i]
            s["x"] = s["x"] + (a * (y @ w)).sum(0)
            s["a2"] = s["a2"] + a.square().sum(0)
            s["y2"] = s["y2"] + float(y.square().sum())
        return fn

    handles = [p.register_forward_hook(hook(i)) for i, p in enumerate(projs)]
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            mask_box["m"] = b["attention_mask"].bool()
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for p, s in zip(projs, sums):
        wn = p.weight.double().square().sum(0)
        out.append(s["x"] ** 2 / (wn * s["a2"] * s["y2"]).clamp(min=1e-300))
    return out


def synthetic_batches(tokenizer, n: int, length: int, seed: int, batch_size: int, device):
    """``n`` sequences of ``length`` tokens drawn uniformly from the non-special vocabulary (the data-free inputs)."""
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    g = torch.Generator().manual_seed(seed)
    ids = allowed[torch.randint(len(allowed), (n, length), generator=g)]
    for s in range(0, n, batch_size):
        chunk = ids[s:s + batch_size].to(device)
        yield {"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}


@register("ModHiFiU")
@dataclass
class ModHiFiU(Method):
    fraction: float = 0.02
    contrast: str = "synthetic"
    score: str = "difference"
    n_synthetic: int = 64
    seed: int = 0

    trains = False
    needs_qa = "question-answer items (its forget and contrast passes read item batches)"
    whole_model = "its forward hooks on every MLP down-projection"
    bounds = {"fraction": (0, 1), "n_synthetic": (1, None)}
    choices = {"contrast": ("synthetic", "retain"), "score": ("difference", "ratio")}

    @property
    def uses_retain(self) -> bool:
        return self.contrast == "retain"

    def specificity(self, sf_forget: torch.Tensor, sf_ref: torch.Tensor) -> torch.Tensor:
        return sf_forget - sf_ref if self.score == "difference" else sf_forget / (sf_ref + 1e-12)

    @torch.no_grad()
    def apply(self, model, tokenizer, data, cfg, run_dir):
        start = time.perf_counter()
        device = next(model.parameters()).device
        forget = list(item_batches(tokenizer, data["forget"], cfg.batch_size, device, cfg.max_length))
        if self.contrast == "retain":
            ref = list(item_batches(tokenizer, data["retain"], cfg.batch_size, device, cfg.max_length))
        else:
            length = max(int(b["input_ids"].shape[1]) for b in forget)
            ref = list(synthetic_batches(tokenizer, self.n_synthetic, length, self.seed, cfg.batch_size, device))
        sf_f, sf_r = subset_fidelity(model, forget), subset_fidelity(model, ref)
        removed = []
        for proj, f, r in zip(down_projections(model), sf_f, sf_r):
            k = round(self.fraction * f.numel())
            idx = torch.topk(self.specificity(f, r), k).indices if k else torch.zeros(0, dtype=torch.long)
            proj.weight[:, idx.to(proj.weight.device)] = 0
            removed.append(int(k))
        metrics = Path(run_dir) / "metrics.jsonl"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.unlink(missing_ok=True)
        tokens = [int(sum(int(b["attention_mask"].sum()) for b in bs)) for bs in (forget, ref)]
        append_jsonl(metrics, {"step": 0, "removed_channels": removed, "forget_tokens": tokens[0],
                               "reference_tokens": tokens[1], "backward_passes": 0,
                               "seconds": round(time.perf_counter() - start, 3)})
