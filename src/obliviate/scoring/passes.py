"""One teacher-forced pass per (model, split): every candidate answer of every item (the answer, its paraphrase, its
perturbed versions) is scored once, and every likelihood metric is derived from what this pass keeps per token:

* ``logprobs``: log p(x_t | x_<t) of each answer token (EOS included);
* ``hits``: whether x_t is the argmax prediction (exact memorisation, extraction strength);
* ``zscores``: (log p(x_t) - mu_t) / sigma_t with mu_t, sigma_t the mean and standard deviation of log p under the
  model's own next-token distribution (Min-K%++).

Greedy generations, for ROUGE, are produced once per split in ``generate_answers``.

Run on several processes (``accelerate launch -m obliviate audit ...``), both passes are sharded: process r takes
batches r, r + P, ... of the same length-sorted batching one process uses (so every number is computed on the same
padded batch), and the results are gathered, in the items' order, on every process; the audit then computes the same
report on each, and equals the one-process audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..data.collate import PromptFormat, pad_batch, pad_prompts_left
from ..data.records import QAItem
from ..logprobs import forward_logits, shift
from ..threads import rebalance


def process_shard() -> tuple[int, int]:
    """(number of processes, this process's rank) of the torch.distributed job this process is in; (1, 0) alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def sum_over_processes(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed element-wise over the processes (a CPU tensor back); ``t`` itself when alone.

    Gathering by summing, where every process fills only its own entries and leaves zeros elsewhere, is exact
    (x + 0 = x) and needs no pickling of Python objects."""
    world, _ = process_shard()
    if world == 1:
        return t
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else "cpu"
    out = t.to(device).contiguous()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out.cpu()


@dataclass
class SeqScore:
    logprobs: np.ndarray
    hits: np.ndarray
    zscores: np.ndarray


@dataclass
class ItemScore:
    answer: SeqScore
    paraphrased: SeqScore | None = None
    perturbed: list[SeqScore] = field(default_factory=list)


SCORE_ROWS = 1024  # answer tokens scored at once: bounds the [rows, vocabulary] float32 temporaries of token_scores


def token_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(label), argmax hit, Min-K%++ z) for each row of ``logits`` [N, V] (one row per answer token) and its
    label [N].

    Every operation is row-wise (log-softmax, gather, argmax, the sums over the vocabulary), so a row's numbers do not
    depend on which rows are scored with it: taking ``SCORE_ROWS`` rows at a time gives the bits of the whole-tensor
    computation while the float32 temporaries stay [SCORE_ROWS, V] instead of [batch, length, V] several times over
    (prompt and padding positions, which no metric uses, are never scored). The variance is computed in place in the
    log-softmax's buffer, in the centred form (no cancellation in float32)."""
    picked, hits, z = [], [], []
    for a in range(0, max(len(labels), 1), SCORE_ROWS):  # one empty chunk when there is no row: empty results
        lg, lb = logits[a:a + SCORE_ROWS], labels[a:a + SCORE_ROWS]
        logp = F.log_softmax(lg.float(), -1)
        pk = logp.gather(-1, lb.unsqueeze(-1)).squeeze(-1)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        var = logp.sub_(mu.unsqueeze(-1)).square_().mul_(p).sum(-1)
        picked.append(pk)
        hits.append(lg.argmax(-1) == lb)
        z.append((pk - mu) / var.clamp(min=1e-6).sqrt())
    return torch.cat(picked), torch.cat(hits), torch.cat(z)


@torch.no_grad()
def score_sequences(model, encs, pad_id: int, batch_size: int) -> list[SeqScore]:
    """Per-token scores for each encoding, batched by length so padding stays small; only the answer tokens' logits
    are kept past the forward pass (``token_scores``)."""
    device = next(model.parameters()).device
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].input_ids))
    out: list[SeqScore | None] = [None] * len(encs)
    world, rank = process_shard()
    for start in range(rank * batch_size, len(order), batch_size * world):
        rebalance()
        chunk = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([encs[i] for i in chunk], pad_id).items()}
        logits, labels, mask = shift(forward_logits(model, batch), batch["labels"])
        rows, targets = logits[mask], labels[mask]  # [answer tokens, V], row-major: sequence by sequence
        del logits
        picked, hits, z = (t.cpu().numpy() for t in token_scores(rows, targets))
        del rows
        ends = np.cumsum([0] + mask.sum(-1).tolist())
        for row, i in enumerate(chunk):
            a, b = ends[row], ends[row + 1]
            out[i] = SeqScore(picked[a:b], hits[a:b], z[a:b])
    return _gather_scores(out, encs) if world > 1 else out  # type: ignore[return-value]


def _gather_scores(mine: list[SeqScore | None], encs) -> list[SeqScore]:
    """Every process's share of ``score_sequences`` on every process, in the encodings' order.

    Each sequence's length is known to all (its target tokens), so one flat buffer (log-prob, hit, z per token)
    summed over the processes, each filling only its own sequences, carries everything."""
    lengths = [sum(1 for t in e.labels[1:] if t != -100) for e in encs]
    ends = np.cumsum([0] + lengths)
    flat = torch.zeros(3, int(ends[-1]), dtype=torch.float32)
    for i, s in enumerate(mine):
        if s is not None:
            flat[:, ends[i]:ends[i + 1]] = torch.from_numpy(np.stack([s.logprobs, s.hits.astype(np.float32),
                                                                      s.zscores]))
    flat = sum_over_processes(flat).numpy()
    return [SeqScore(flat[0, a:b].copy(), flat[1, a:b] > 0.5, flat[2, a:b].copy()) for a, b in zip(ends, ends[1:])]


def _gather_texts(mine: list[str | None]) -> list[str]:
    """Every process's share of a list of strings on every process (UTF-8 bytes in a buffer summed over them)."""
    data = [t.encode("utf-8") if t is not None else b"" for t in mine]
    sizes = sum_over_processes(torch.tensor([len(d) for d in data], dtype=torch.int64)).tolist()
    ends = np.cumsum([0] + sizes)
    buf = torch.zeros(int(ends[-1]), dtype=torch.int32)  # int32: gloo and nccl sum it; bytes fit
    for i, d in enumerate(data):
        if d:
            buf[ends[i]:ends[i + 1]] = torch.tensor(list(d), dtype=torch.int32)
    raw = sum_over_processes(buf).to(torch.uint8).numpy().tobytes()
    return [raw[a:b].decode("utf-8") for a, b in zip(ends, ends[1:])]


def score_items(model, fmt: PromptFormat, items: list[QAItem], pad_id: int, batch_size: int = 32,
                question_key: str = "question") -> list[ItemScore]:
    """Score every candidate answer of every item in one batched pass."""
    encs, slots = [], []
    for i, it in enumerate(items):
        q = getattr(it, question_key) or it.question
        candidates = [("answer", 0, it.answer)]
        if it.paraphrased_answer:
            candidates.append(("paraphrased", 0, it.paraphrased_answer))
        candidates += [("perturbed", j, a) for j, a in enumerate(it.perturbed_answers)]
        for kind, j, answer in candidates:
            encs.append(fmt.encode(q, answer, where=f"item {i}"))
            slots.append((i, kind, j))
    scores = score_sequences(model, encs, pad_id, batch_size)
    result = [ItemScore(answer=None) for _ in items]  # type: ignore[arg-type]
    for (i, kind, _), s in zip(slots, scores):
        if kind == "answer":
            result[i].answer = s
        elif kind == "paraphrased":
            result[i].paraphrased = s
        else:
            result[i].perturbed.append(s)
    return result


# generation-config fields whose non-default value makes ``generate`` change the greedy choice (a logits processor)
_PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
                     "min_length", "min_new_tokens", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                     "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty", "renormalize_logits",
                     "epsilon_cutoff", "eta_cutoff", "watermarking_config", "max_time", "stop_strings")


def plain_greedy_ok(model) -> bool:
    """Whether ``greedy_tokens`` gives what ``model.generate`` gives greedily: a decoder-only model whose forward takes
    a cache, and whose generation config asks for no logits processor or stopping rule beyond EOS and the length."""
    import inspect

    from transformers import GenerationConfig

    if getattr(model.config, "is_encoder_decoder", False):
        return False
    params = set(inspect.signature(model.forward).parameters)
    if "attention_mask" not in params or not params & {"cache", "past_key_values"}:
        return False
    gc, default = getattr(model, "generation_config", None), GenerationConfig()
    return gc is None or all(getattr(gc, f, None) == getattr(default, f, None) for f in _PROCESSOR_FIELDS)


def preallocated_cache(config, capacity: int):
    """transformers' ``DynamicCache`` whose full-attention layers write each step's keys and values into a buffer of
    ``capacity`` positions allocated once, and hand attention a view of the filled part, instead of concatenating the
    whole cache again at every token (a copy that grows with the length: 87% of a tiny model's greedy decoding under
    the profiler, issue 19). Attention reads the same values in the same order, so the tokens are the ones
    ``DynamicCache`` gives (``tests/test_audit_speed.py``); a write past ``capacity`` doubles the buffer. Without cache
    layers (transformers < 4.56) or for other layer kinds (sliding windows), the cache is left as it is."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if _DynamicLayer is not None and isinstance(layers, list):
        for i, layer in enumerate(layers):
            if type(layer) is _DynamicLayer:
                layers[i] = _BufferLayer(capacity)
    return cache


try:
    from transformers.cache_utils import DynamicLayer as _DynamicLayer
except ImportError:                     # transformers < 4.56: no cache layers
    _DynamicLayer = None
else:
    class _BufferLayer(_DynamicLayer):
        """A ``DynamicLayer`` writing into preallocated key and value buffers (``preallocated_cache``)."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0
            self._k = self._v = None

        def _alloc(self, like: torch.Tensor, old: torch.Tensor | None) -> torch.Tensor:
            buf = like.new_empty(*like.shape[:-2], self.capacity, like.shape[-1])
            if old is not None:
                buf[..., :self.length, :].copy_(old[..., :self.length, :])
            return buf

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if self._k is None or end > self.capacity:
                old_k, old_v = self._k, self._v
                self.capacity = max(self.capacity, end) * (1 if old_k is None else 2)
                self._k, self._v = self._alloc(key_states, old_k), self._alloc(value_states, old_v)
            self._k[..., self.length:end, :].copy_(key_states)
            self._v[..., self.length:end, :].copy_(value_states)
            self.length = end
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
            return self.keys, self.values


@torch.no_grad()
def greedy_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, eos_id,
                  pad_id: int) -> torch.Tensor:
    """Greedy decoding of a left-padded batch, the new tokens only ([batch, <= max_new_tokens]): the same forward
    calls as transformers' ``generate`` makes greedily (a ``DynamicCache``, here with preallocated buffers:
    ``preallocated_cache``; position ids from the attention mask, ``logits_to_keep=1``, float32 argmax; a finished row
    gets the pad token; stop when every row has met EOS), without its per-token bookkeeping, which on a small model is
    a large share of the time (issue 19). The tokens equal ``generate``'s (``tests/test_audit_speed.py``)."""
    import inspect

    params = set(inspect.signature(model.forward).parameters)
    eos = torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id or []), device=input_ids.device)
    cache_key = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
    kw = {"use_cache": True, cache_key: preallocated_cache(model.config, input_ids.shape[1] + max_new_tokens)}
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    mask = attention_mask
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0) if "position_ids" in params else None
    ids = input_ids
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    new: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        extra = {"position_ids": pos} if pos is not None else {}
        logits = model(input_ids=ids, attention_mask=mask, **extra, **kw).logits[:, -1].float()
        nxt = logits.argmax(-1).masked_fill(done, pad_id)
        new.append(nxt)
        done |= torch.isin(nxt, eos)
        if bool(done.all()):
            break
        ids = nxt[:, None]
        mask = torch.cat([mask, mask.new_ones(len(ids), 1)], 1)
        pos = pos[:, -1:] + 1 if pos is not None else None
    return torch.stack(new, 1) if new else input_ids.new_zeros(len(input_ids), 0)


@torch.no_grad()
def generate_answers(model, tokenizer, fmt: PromptFormat, questions: list[str], batch_size: int = 32,
                     max_new_tokens: int = 64, sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                     seed: int = 0) -> list[str]:
    """Continuations of each question's prompt, decoded without special tokens, cut at EOS: greedy, or with
    ``sample`` nucleus sampling seeded per batch from ``seed`` (the same questions and seed give the same texts)."""
    device = next(model.parameters()).device
    prompts = [fmt.prompt_ids(q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    seeds = torch.Generator().manual_seed(seed)
    world, rank = process_shard()
    loop = not sample and plain_greedy_ok(model)
    for b, start in enumerate(range(0, len(order), batch_size)):
        batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=seeds)) if sample else 0  # drawn on all ranks
        if b % world != rank:
            continue
        rebalance()
        chunk = order[start:start + batch_size]
        padded = pad_prompts_left([prompts[i] for i in chunk], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in padded.items()}
        if loop:
            gen = greedy_tokens(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                                tokenizer.eos_token_id, tokenizer.pad_token_id)
        else:
            kw = dict(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None)
            if sample:
                torch.manual_seed(batch_seed)
                kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **kw)[:, batch["input_ids"].shape[1]:]
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(gen[row], skip_special_tokens=True).strip()
    return _gather_texts(out) if world > 1 else out  # type: ignore[return-value]
