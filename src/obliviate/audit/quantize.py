"""Quantisation robustness (Zhang et al. 2024, "Does your LLM truly unlearn? An embarrassingly simple approach"):
unlearning that moves the weights only a little can be undone by rounding them, and the forgotten answers resurface.

``quantize_model(model, bits)`` returns a copy whose weight matrices are rounded to ``bits`` bits, symmetric
round-to-nearest per output channel (each row of a Linear or Embedding weight gets its own scale
max|w_row| / (2^(bits-1) - 1)), and stored back in the original dtype (fake quantisation: runs on any CPU, measures
what an int8/int4 deployment would compute up to the kernels' own rounding). Tied matrices are quantised once.

``quantized_forget_audit`` re-runs the forget audit (the main ``audit_model`` on the forget and holdout splits) for each
bit width and lists what resurfaces: forget items whose greedy answer recovers (ROUGE-L recall up by ``resurface_gain``
or more, to at least ``resurface_min``) or whose answer probability at least doubles.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ..config import AuditConfig
from ..errors import ConfigError


@torch.no_grad()
def quantize_tensor(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Round-to-nearest symmetric quantisation of a 2-D weight, one scale per row (output channel); dequantised."""
    if bits < 2:
        raise ConfigError(f"quantize: bits = {bits} must be >= 2")
    qmax = 2 ** (bits - 1) - 1
    wf = w.float()
    scale = wf.abs().amax(dim=1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(wf / scale), -qmax, qmax)
    return (q * scale).to(w.dtype)


@torch.no_grad()
def quantize_model(model, bits: int, embeddings: bool = True):
    """A copy of ``model`` with every Linear (and, with ``embeddings``, Embedding) weight quantised to ``bits`` bits."""
    net = copy.deepcopy(model)
    seen = set()
    kinds = (torch.nn.Linear, torch.nn.Embedding) if embeddings else (torch.nn.Linear,)
    for module in net.modules():
        if isinstance(module, kinds) and module.weight is not None and module.weight.dim() == 2:
            key = module.weight.data_ptr()
            if key in seen:
                continue
            seen.add(key)
            module.weight.copy_(quantize_tensor(module.weight, bits))
    return net


def resurfaced(before: list[dict], after: list[dict], gain: float = 0.25, minimum: float = 0.5) -> list[dict]:
    """Forget items (audit rows) whose answer comes back after quantisation: ROUGE-L recall up by ``gain`` to at least
    ``minimum``, or answer probability at least doubled and above 0.1."""
    out = []
    for b, a in zip(before, after):
        rouge_up = ("rougeL_recall" in a and a["rougeL_recall"] >= minimum
                    and a["rougeL_recall"] - b.get("rougeL_recall", 0.0) >= gain)
        prob_up = a["prob"] >= 2 * b["prob"] and a["prob"] > 0.1
        if rouge_up or prob_up:
            out.append({"id": a.get("id"), "index": a["index"], "prob_before": b["prob"], "prob_after": a["prob"],
                        "rouge_before": b.get("rougeL_recall"), "rouge_after": a.get("rougeL_recall"),
                        "generation": a.get("generation")})
    return out


def quantized_forget_audit(model, tokenizer, bench, bits: tuple[int, ...] = (8, 4), cfg: AuditConfig | None = None,
                           before: dict | None = None, embeddings: bool = True) -> dict:
    """The forget audit after each quantisation. ``before`` (the unquantised audit) lets it list what resurfaces."""
    from .suite import audit_model

    cfg = cfg or AuditConfig()
    acfg = dataclasses.replace(cfg, splits=["forget", "holdout"])  # the same settings, protocol and prompt format
    out = {}
    for b in bits:
        qnet = quantize_model(model, b, embeddings)
        res = audit_model(qnet, tokenizer, bench, acfg, progress=False)
        entry = {"forget_Q_A_Prob": res["metrics"].get("forget_Q_A_Prob"),
                 "forget_Q_A_ROUGE": res["metrics"].get("forget_Q_A_ROUGE"),
                 "mia_min_k": res["metrics"].get("mia_min_k"), "per_item": res["per_item"]["forget"]}
        if before is not None:
            entry["resurfaced"] = resurfaced(before["per_item"]["forget"], res["per_item"]["forget"])
        out[f"int{b}"] = entry
        del qnet
    return out
