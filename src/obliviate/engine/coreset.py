"""Forget-set coresets: unlearn on a fraction of the forget set, chosen by a score (specs, section 12).

Pal, Wang, Diffenderfer, Kailkhura, Liu 2025, "LLM Unlearning Reveals a Stronger-Than-Expected Coreset Effect in
Current Benchmarks" (arXiv 2504.10185): a 5% subset, even a random one, unlearns about as well as the full set when
trained for longer. The selectors (each keeps the ``fraction`` of items with the highest score):

* ``random``: a seeded uniform subset;
* ``mink``: memorisation, the mean of the lowest k% (default 40%) answer-token log-probs (= minus the Min-K% score):
  the most memorised items;
* ``gradnorm`` (GRAND): ||grad_theta NLL_sum(x_i)||_2 at the starting model, the norm of each item's gradient of the
  sequence-summed NLL over the trainable parameters (at theta_0 this is also NPO's per-item gradient norm);
* ``moderate``: -|d_i - median(d)|, d_i the distance of the item's embedding (last hidden state, mean over the
  question and answer tokens) to the mean embedding: items of typical distance.

Ties are broken by a seeded random order; the subset keeps the items' original order.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.collate import PromptFormat, item_batches, pad_batch
from ..data.records import QAItem
from ..errors import ConfigError

STRATEGIES = ("random", "mink", "gradnorm", "moderate")


def coreset_size(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ConfigError(f"coreset: fraction = {fraction} must be in (0, 1]")
    return max(1, round(fraction * n))


@torch.no_grad()
def mink_memorisation(model, tokenizer, items: list[QAItem], k: float = 0.4, batch_size: int = 16,
                      max_length: int = 256) -> np.ndarray:
    """Mean of the lowest floor(k * N) (at least one) answer-token log-probs of each item; higher = more memorised."""
    from ..scoring.metrics import min_k_score
    from ..scoring.passes import score_sequences

    fmt = PromptFormat(tokenizer, max_length)
    encs = [fmt.encode(it.question, it.answer, where=f"item {i}") for i, it in enumerate(items)]
    scores = score_sequences(model, encs, tokenizer.pad_token_id, batch_size)
    return np.array([-min_k_score(s.logprobs, k) for s in scores])


def gradient_norms(model, tokenizer, items: list[QAItem], max_length: int = 256) -> np.ndarray:
    """||grad NLL_sum(x_i)||_2 over the trainable parameters, one item at a time (no .grad is touched)."""
    from ..logprobs import forward_logits, sequence_logprob

    fmt = PromptFormat(tokenizer, max_length)
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("coreset 'gradnorm': the model has no trainable parameters")
    out = []
    for i, it in enumerate(items):
        b = {k: v.to(device) for k, v in pad_batch([fmt.encode(it.question, it.answer, where=f"item {i}")],
                                                   tokenizer.pad_token_id).items()}
        lp, _ = sequence_logprob(forward_logits(model, b), b["labels"])
        grads = torch.autograd.grad(-lp.sum(), params, allow_unused=True)
        out.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))))
    return np.array(out)


@torch.no_grad()
def embeddings(model, tokenizer, items: list[QAItem], batch_size: int = 16, max_length: int = 256) -> np.ndarray:
    """Mean over attended positions of the last hidden state, one row per item."""
    device = next(model.parameters()).device
    rows = []
    for b in item_batches(tokenizer, items, batch_size, device, max_length):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        h = out.hidden_states[-1]
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        rows.append(((h * m).sum(1) / m.sum(1)).float().cpu())
    return torch.cat(rows).numpy()


def moderate_scores(emb: np.ndarray) -> np.ndarray:
    """-|d_i - median(d)| with d_i the Euclidean distance of row i to the mean row."""
    d = np.linalg.norm(emb - emb.mean(0, keepdims=True), axis=1)
    return -np.abs(d - np.median(d))


def coreset_scores(model, tokenizer, items: list[QAItem], strategy: str, seed: int = 0, k: float = 0.4,
                   max_length: int = 256) -> np.ndarray:
    """One score per item; the coreset keeps the highest."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"coreset: strategy '{strategy}' must be one of {', '.join(STRATEGIES)}")
    if strategy == "random":
        return np.random.default_rng([seed, 2]).random(len(items))
    was_training = model.training
    model.eval()
    try:
        if strategy == "mink":
            if not 0 < k <= 1:
                raise ConfigError(f"coreset: k = {k} must be in (0, 1]")
            return mink_memorisation(model, tokenizer, items, k, max_length=max_length)
        if strategy == "gradnorm":
            return gradient_norms(model, tokenizer, items, max_length)
        return moderate_scores(embeddings(model, tokenizer, items, max_length=max_length))
    finally:
        model.train(was_training)


def select_coreset(model, tokenizer, items: list[QAItem], fraction: float, strategy: str = "random", seed: int = 0,
                   k: float = 0.4, max_length: int = 256) -> list[QAItem]:
    """The ``fraction`` of ``items`` with the highest ``strategy`` score, in their original order."""
    size = coreset_size(len(items), fraction)
    scores = coreset_scores(model, tokenizer, items, strategy, seed, k, max_length)
    tiebreak = np.random.default_rng([seed, 3]).random(len(items))
    keep = np.lexsort((tiebreak, -scores))[:size]  # last key is primary: highest score first, ties in seeded order
    return [items[i] for i in sorted(keep.tolist())]
