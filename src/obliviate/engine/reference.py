"""The frozen reference model, and the cache of its log-probs over data that never changes.

NPO and its kin need log pi_ref(y|x) for every forget item at every step. The forget set is fixed and the reference is
frozen, so those numbers are computed once, before the first step, with the model as it is then (no copy needed), and
looked up by item index afterwards. Only methods that need full reference distributions on changing batches (the KL
retain loss) keep a frozen copy of the model.

On several processes the log-probs are computed once over all of them: process r scores batches r, r + P, ... (the
same batches, padding included, as one process would), the shares are summed over the processes so every process holds
the whole table, and only the main process writes the cache file. A frozen model (``"model"`` mode) is a full copy on
every process, taken before the model is wrapped or sharded.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..data.collate import Encoded, pad_batch
from ..logprobs import forward_logits, sequence_logprob
from ..scoring.passes import sum_over_processes


@torch.no_grad()
def sequence_logprobs_of(model, encs: list[Encoded], pad_id: int, batch_size: int, device,
                         shard: tuple[int, int] = (1, 0)) -> torch.Tensor:
    """Sum of answer-token log-probs for each encoding, in the encodings' order.

    ``shard=(P, r)``: this process scores only batches r, r + P, ...; the other entries are 0, for a sum over the
    processes (``scoring.passes.sum_over_processes``) to complete."""
    world, rank = shard
    out = torch.zeros(len(encs), dtype=torch.float32)
    for start in range(rank * batch_size, len(encs), batch_size * world):
        batch = {k: v.to(device) for k, v in pad_batch(encs[start:start + batch_size], pad_id).items()}
        lp, _ = sequence_logprob(forward_logits(model, batch), batch["labels"])
        out[start:start + batch_size] = lp.float().cpu()
    return out


def _data_key(encodings: dict[str, list[Encoded]], streams) -> str:
    """A hash of the token ids the cache covers: a cache file made for other data (or another tokenizer) is not used."""
    import hashlib

    h = hashlib.sha256()
    for name in streams:
        h.update(f"{name}:{len(encodings.get(name, []))};".encode())
        for e in encodings.get(name, []):
            h.update(repr((e.input_ids, e.labels)).encode())
    return h.hexdigest()[:16]


def _load_cache(cache_file, key: str) -> dict[str, torch.Tensor] | None:
    """The cached log-probs if the file exists, is readable and was made for the same data; else None (recompute)."""
    if not Path(cache_file).exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(cache_file), framework="pt") as f:
            if (f.metadata() or {}).get("data_key") != key:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # a damaged cache is only a cache
        return None


class Reference:
    """What a method may ask of the frozen starting model: cached sequence log-probs, or live logits."""

    def __init__(self, mode: str, model=None, encodings: dict[str, list[Encoded]] | None = None, pad_id: int = 0,
                 batch_size: int = 16, cache_file: str | Path | None = None, streams: tuple[str, ...] = ("forget",),
                 shard: tuple[int, int] = (1, 0), variant: str = ""):
        """``variant`` names a numeric setting the log-probs depend on (``"bf16"``); a cache made under another is
        not reused."""
        self.mode = mode
        self.cache: dict[str, torch.Tensor] = {}
        self.model = None
        if mode == "none":
            return
        device = next(model.parameters()).device
        key = _data_key(encodings or {}, streams) + (f":{variant}" if variant else "")
        cached = _load_cache(cache_file, key) if cache_file is not None else None
        world, rank = shard
        if world > 1 and sum_over_processes(torch.tensor([float(cached is None)])).item() > 0:
            cached = None  # one process could not read the cache: all compute, or the sums below would hang
        if cached is not None:
            self.cache = cached
        else:
            was_training = model.training
            model.eval()
            self.cache = {name: sum_over_processes(sequence_logprobs_of(model, encodings[name], pad_id, batch_size,
                                                                        device, shard)) for name in streams}
            model.train(was_training)
            if cache_file is not None and rank == 0:
                from safetensors.torch import save_file

                from ..io import atomic_path

                with atomic_path(cache_file) as tmp:
                    save_file(self.cache, str(tmp), metadata={"data_key": key})
        if mode == "model":
            # A weight that is not trained never changes, so the frozen copy shares it instead of holding its own: on
            # forget's middle MLPs (58M of SmolLM2-135M's 135M trained) that is 0.3 GB less, and the same logits.
            frozen = {id(p): p for p in model.parameters() if not p.requires_grad}
            self.model = copy.deepcopy(model, memo=frozen).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)

    def sequence_logprob(self, split: str, batch: dict) -> torch.Tensor:
        values = self.cache[split]
        return values[batch["index"].cpu()].to(batch["input_ids"].device)

    @torch.no_grad()
    def logits(self, batch: dict) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("this method's reference mode keeps no model; declare reference='model'")
        return forward_logits(self.model, batch)
