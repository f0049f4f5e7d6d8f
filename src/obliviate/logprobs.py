"""The one place where (logits, labels) become per-token log-probabilities.

Labels follow the Hugging Face convention: ``labels[:, t]`` is the token at position ``t`` and -100 marks positions that
are not targets (prompt, padding). The shift is done here once: the logits at ``t`` predict the label at ``t + 1``.
Label -100 is never used as an index (it is clamped to 0 and then masked), unlike code that lets it wrap to a real token.

Naming: a "sequence" log-prob is the *sum* over target tokens; functions that average say ``mean`` in their name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (logits[:, :-1], labels[:, 1:], mask) with mask True where the shifted label is a target."""
    shifted_labels = labels[:, 1:]
    return logits[:, :-1], shifted_labels, shifted_labels != IGNORE


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(label) in float32, zero at non-target positions, and the target mask; both shape (B, T-1)."""
    lg, lb, mask = shift(logits, labels)
    logp = F.log_softmax(lg.float(), dim=-1)
    picked = logp.gather(-1, lb.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of target-token log-probs per sequence, and the number of target tokens per sequence."""
    lp, mask = token_logprobs(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def nll_mean(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood over all target tokens of the batch (what ``model(..., labels).loss`` is)."""
    lp, mask = token_logprobs(logits, labels)
    return -lp.sum() / mask.sum().clamp(min=1)


def forward_logits(model, batch: dict) -> torch.Tensor:
    """Logits of a batch, without asking the model to compute its own loss."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# ------------------------------------------------------------------ the lm-head on target positions, in chunks

# Model types whose causal-LM forward is exactly decoder -> lm_head (no logit scaling or soft-capping after it).
_PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
_FLAG = "_obliviate_head_rows"
HEAD_ROWS = 256


def head_on_targets(model, on: bool, rows: int = HEAD_ROWS) -> bool:
    """Let ``sequence_logprob_of`` and ``nll_mean_of`` compute the lm-head and the log-softmax on the target positions
    only, ``rows`` positions at a time, and recompute them in the backward pass instead of keeping [batch, length,
    vocabulary] logits and log-probabilities for it (issue 21: 40 MB of peak memory off an IdkDPO step of SmolLM2-135M
    on two ~100-token sequences per stream, 49,152-token vocabulary). Every operation is row-wise (the same
    ``linear``, ``log_softmax`` and its backward kernel on fewer rows), so losses and the gradients of the layers below
    equal the full-tensor ones (``tests/test_logprobs.py``); a trainable lm-head gets its gradient summed chunk by
    chunk, in another order. Only for model types whose forward is decoder -> lm_head (``_PLAIN_HEAD_TYPES``);
    returns whether it is on. The methods whose losses are sequence log-probs or NLLs call these (NPO, SimNPO,
    SAM-NPO, PDU, GradAscent, GradDiff, IdkNLL, IdkDPO, TraceReplace, Finetune, the NLL retain term); those that hook
    the model's modules (K-FADE, ReGLU, SSD) or need whole logits keep ``forward_logits``."""
    ok = on and getattr(model.config, "model_type", None) in _PLAIN_HEAD_TYPES and hasattr(model, "get_decoder")
    setattr(model, _FLAG, rows if ok else None)
    return bool(ok)


MIN_ROWS = 16


def _matmul_rows(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b (+ bias)`` with at least ``MIN_ROWS`` rows given to the BLAS (zero rows added, their results dropped):
    for a handful of rows it takes another kernel (matrix-vector), whose rows differ in the last bits from the ones
    of the same product over a whole batch (from 8 rows on they were equal, on this project's CPU BLAS)."""
    n = len(a)
    if n < MIN_ROWS:
        a = torch.cat([a, a.new_zeros(MIN_ROWS - n, a.shape[1])])
    out = a @ b if bias is None else torch.addmm(bias, a, b)
    return out[:n]


class _TargetLogprobs(torch.autograd.Function):
    """log p(label) of ``hidden`` rows [N, H] through the lm-head (``weight``, ``bias``), ``rows`` at a time; nothing of
    size vocabulary is kept for the backward pass, which recomputes each chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, rows):
        out = hidden.new_empty(len(hidden), dtype=torch.float32)
        for s in range(0, len(hidden), rows):
            logp = F.log_softmax(_matmul_rows(hidden[s:s + rows], weight.t(), bias).float(), dim=-1)
            out[s:s + rows] = logp.gather(-1, labels[s:s + rows, None]).squeeze(-1)
        ctx.save_for_backward(hidden, weight, bias, labels)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, labels = ctx.saved_tensors
        rows = ctx.rows
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        gh = torch.zeros_like(hidden) if need_h else None
        gw = torch.zeros_like(weight) if need_w else None
        gb = torch.zeros_like(bias) if need_b and bias is not None else None
        for s in range(0, len(hidden), rows):
            h = hidden[s:s + rows]
            logits = _matmul_rows(h, weight.t(), bias)
            logp = F.log_softmax(logits.float(), dim=-1)
            g = torch.zeros_like(logp).scatter_(-1, labels[s:s + rows, None], grad[s:s + rows, None])
            g = torch._log_softmax_backward_data(g, logp, -1, logp.dtype).to(logits.dtype)
            if gh is not None:
                gh[s:s + rows] = _matmul_rows(g, weight)
            if gw is not None:
                gw += g.transpose(0, 1) @ h
            if gb is not None:
                gb += g.sum(0)
        return gh, gw, gb, None, None


def _target_token_logprobs(model, batch: dict, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs(forward_logits(model, batch), labels)`` with the lm-head on target positions only."""
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    head = model.get_output_embeddings()
    picked = _TargetLogprobs.apply(hidden[:, :-1][mask], head.weight, head.bias, labels[mask], rows)
    full = torch.zeros(labels.shape, dtype=picked.dtype, device=picked.device)
    full = full.masked_scatter(mask, picked)
    return full, mask


def token_logprobs_of(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` of the model's logits of ``batch`` (``head_on_targets`` decides how they are computed)."""
    rows = getattr(model, _FLAG, None)
    if rows:
        return _target_token_logprobs(model, batch, rows)
    return token_logprobs(forward_logits(model, batch), batch["labels"])


def sequence_logprob_of(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``sequence_logprob`` of the model's logits of ``batch`` (``head_on_targets`` decides how they are computed)."""
    lp, mask = token_logprobs_of(model, batch)
    return lp.sum(-1), mask.sum(-1)


def nll_mean_of(model, batch: dict) -> torch.Tensor:
    """``nll_mean`` of the model's logits of ``batch`` (``head_on_targets`` decides how they are computed)."""
    lp, mask = token_logprobs_of(model, batch)
    return -lp.sum() / mask.sum().clamp(min=1)
