"""Anchored decoding: generate from a risky model while each step stays within a KL budget of a safe model.

He, Hayase, Yih, Oh, Zettlemoyer, Koh 2026, "Anchored Decoding: Provably Reducing Copyright Risk for Any Language
Model", arXiv 2602.07120. From the abstract and public summaries: the fused next-token distribution is a geometric
mixture of the risky p_r and safe p_s distributions, a user-chosen sequence budget K is allocated over the generation
and enforced by per-step constraints whose sum gives the sequence-level guarantee. The paper's own allocation (with a
"prefix debt" for the prompt) was not available to us; what follows is *derived* and the allocation rule is ours.

Per step t, with the same vocabulary for both models:

    p_w  proportional to  p_s^(1-w) p_r^w          (w in [0, 1]: w = 0 is the safe model, w = 1 the risky one)
    w_t  = the largest w with KL(p_w || p_s) <= k_t        (KL(p_w || p_s) is non-decreasing in w: w_t by bisection,
                                                            ``iters`` halvings, checked from below so it never exceeds)
    k_t  = (K - sum_{s<t} KL_s) / (N - t)               (the unspent budget spread evenly over the N - t steps left)

so sum_t KL(p_{w_t} || p_s) <= K for every generated sequence (each step spends at most what is left divided by the
steps left, and unused budget carries forward). K = 0 decodes the safe model, K = inf the risky one. The next token is
the argmax of p_{w_t} (``sample=False``) or drawn from it (seeded). Both models see the full sequence at every step
(no cache: the prompts here are short); generation stops at EOS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def geometric_mix(logp_r: torch.Tensor, logp_s: torch.Tensor, w: float) -> torch.Tensor:
    """log p_w = log softmax((1 - w) log p_s + w log p_r)."""
    return F.log_softmax((1 - w) * logp_s + w * logp_r, -1)


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) from log-probabilities (float64; rounding below 0 is clipped to 0, the true value's bound)."""
    p = logp.double().exp()
    return max(0.0, float((p * (logp.double() - logq.double())).sum()))


def constrained_weight(logp_r: torch.Tensor, logp_s: torch.Tensor, limit: float, iters: int = 30
                       ) -> tuple[float, float]:
    """(w, KL(p_w || p_s)): the largest w in [0, 1] (to 2^-iters) whose mixture stays within ``limit`` of the safe
    distribution."""
    full = kl(geometric_mix(logp_r, logp_s, 1.0), logp_s)
    if full <= limit:
        return 1.0, full
    lo, hi = 0.0, 1.0  # invariant: KL(p_lo) <= limit < KL(p_hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if kl(geometric_mix(logp_r, logp_s, mid), logp_s) <= limit:
            lo = mid
        else:
            hi = mid
    return lo, kl(geometric_mix(logp_r, logp_s, lo), logp_s)


@torch.no_grad()
def _next_logp(model, ids: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)


@torch.no_grad()
def anchored_generate(risky, safe, tokenizer, prompts, budget: float, max_new_tokens: int = 32, sample: bool = False,
                      seed: int = 0, iters: int = 30) -> list[dict]:
    """Anchored continuations of ``prompts`` (texts, or lists of token ids). Per prompt: ``text`` (decoded, special
    tokens skipped), ``ids``, ``weights`` (w_t per step), ``spent`` (sum of KL_t, never above ``budget``)."""
    if not budget >= 0:
        raise ConfigError(f"anchored decoding: budget = {budget} must be a number >= 0")
    vr, vs = risky.get_output_embeddings().weight.shape[0], safe.get_output_embeddings().weight.shape[0]
    if vr != vs:
        raise ConfigError(f"anchored decoding: the risky model has {vr} output tokens and the safe one {vs}; they must "
                          "share a tokenizer")
    was = risky.training, safe.training
    risky.eval()
    safe.eval()
    device = next(risky.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    for prompt in prompts:
        ids = prompt if not isinstance(prompt, str) else tokenizer(prompt)["input_ids"]
        seq = torch.tensor([list(ids)], device=device)
        new, weights, spent = [], [], 0.0
        for t in range(max_new_tokens):
            limit = (budget - spent) / (max_new_tokens - t) if math.isfinite(budget) else math.inf
            lp_r, lp_s = _next_logp(risky, seq), _next_logp(safe, seq)
            w, step_kl = constrained_weight(lp_r, lp_s, max(limit, 0.0), iters)
            mix = geometric_mix(lp_r, lp_s, w)
            token = int(torch.multinomial(mix.exp().cpu().float(), 1, generator=g)) if sample else int(mix.argmax())
            spent += step_kl
            weights.append(w)
            new.append(token)
            seq = torch.cat([seq, torch.tensor([[token]], device=device)], 1)
            if token == tokenizer.eos_token_id:
                break
        out.append({"text": tokenizer.decode(new, skip_special_tokens=True).strip(), "ids": new, "weights": weights,
                    "spent": spent})
    risky.train(was[0])
    safe.train(was[1])
    return out
