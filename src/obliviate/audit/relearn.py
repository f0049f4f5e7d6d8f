"""Relearning attack (Hu et al. ICLR 2025; Deeb & Roger 2024): a short fine-tune, then the forget audit again.

Knowledge that was hidden rather than removed comes back after a few steps of plain fine-tuning; knowledge that is
gone must be taught afresh, and a model that never had it (the oracle) shows what the relearn data alone teaches.

* The forget set is split per entity (``fraction`` of each entity's items to relearn on, seeded); the audit measures
  the **other** items, which the attack never trains on.
* The attack: ``steps`` AdamW steps of next-token NLL on the answers (what the ``finetune`` method minimises), on a
  copy of the model, either on the relearn subset of the forget set or, separately, on related but different data
  (default: as many retain items of other entities, same format). It is **one optimizer trajectory**: one AdamW state,
  a constant learning rate, batches drawn from one seeded shuffle, dropout from one seeded stream, and the held-out
  forget items' answer probability is read off that trajectory at step 0 and at the measuring points (``eval_steps``,
  or every ``eval_every`` steps) without disturbing it, so the value at step s does not depend on how often the run
  measured before s. Their greedy ROUGE-L recall is taken at the end.
* Learning rate: ``lr`` when set, else ``relearn_lr(model)`` = 1e-3 x sqrt(1e6 / N), N the model's parameters not
  counting LoRA adapters (so an unlearned LoRA model and its oracle get the same rate), clipped to [1e-6, 3e-3].
  Inverse-square-root scaling anchored at both ends: 1e-3 is the rate at which a ~1M-parameter tiny model relearns its
  facts in tens of steps, and a 7B model gets 1.2e-5, the 1e-5 to 1e-4 of the published attacks (OPTML's relearn, Hu
  et al.); SmolLM2-135M gets 8.6e-5. The rate is resolved once per attack and reported (``lr``).
* The same attack on the oracle is the control: its gain is what the relearn data teaches by itself. Both runs use
  the same split, data, seed, steps and (for models of one architecture) learning rate.
* ``recovery_rate`` R = (after - unlearned) / (original - unlearned) with the original (target) model's value;
  ``steps_to_recover`` is the first measured step with R >= ``recover_at``.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.collate import PromptFormat, pad_batch
from ..data.records import QAItem
from ..errors import ConfigError, DataError
from ..logprobs import forward_logits, nll_mean
from ..scoring import metrics as M
from ..scoring.passes import generate_answers, score_items


@dataclass
class RelearnConfig:
    fraction: float = 0.5      # of each entity's forget items used to relearn; the rest are audited
    steps: int = 10
    eval_every: int = 5        # measure the held-out items every N steps; 0 = only before and after
    eval_steps: list[int] = field(default_factory=list)   # explicit measuring steps (overrides eval_every)
    lr: float = 0.0            # 0 = relearn_lr(model): scaled to the model's size
    batch_size: int = 4
    max_grad_norm: float = 1.0  # 0 = no clipping (the engine's default is 1.0)
    related: bool = True       # also attack with related, different data
    related_size: int = 0      # related items; 0 = as many as the relearn subset
    recover_at: float = 0.5    # recovery rate that counts as recovered (steps_to_recover)
    max_new_tokens: int = 32
    seed: int = 0

    def validate(self) -> None:
        if not 0 < self.fraction < 1:
            raise ConfigError(f"relearn: option 'fraction' = {self.fraction!r} must be in (0, 1)")
        if self.steps < 1 or self.eval_every < 0 or self.batch_size < 1 or self.lr < 0 or self.max_grad_norm < 0:
            raise ConfigError("relearn: options 'steps' and 'batch_size' must be >= 1, 'eval_every', 'lr' and "
                              "'max_grad_norm' >= 0 (lr 0 = scaled to the model)")
        bad = [s for s in self.eval_steps if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= self.steps]
        if bad:
            raise ConfigError(f"relearn: option 'eval_steps' has {bad!r}: each must be an integer in 1..'steps' "
                              f"({self.steps})")

    def points(self) -> list[int]:
        """The steps after which the held-out items are measured (besides step 0), ending with ``steps``."""
        if self.eval_steps:
            return sorted(set(self.eval_steps) | {self.steps})
        every = range(self.eval_every, self.steps, self.eval_every) if self.eval_every else []
        return [*every, self.steps]


def relearn_lr(model) -> float:
    """The attack's default learning rate for ``model``: 1e-3 x sqrt(1e6 / N), N its parameters not counting LoRA
    adapters, clipped to [1e-6, 3e-3] (the rule and its anchors are in the module docstring)."""
    n = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    return float(min(max(1e-3 * math.sqrt(1e6 / max(n, 1)), 1e-6), 3e-3))


def split_forget(items: list[QAItem], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(relearn indices, audit indices): per entity, round(fraction x n) items to relearn on and at least one of each
    kind. Items without an entity, and entities with a single item, are pooled and split the same way."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.entity or "", []).append(i)
    pooled = [i for key, idx in groups.items() if not key or len(idx) < 2 for i in idx]
    parts = [idx for key, idx in groups.items() if key and len(idx) >= 2] + ([sorted(pooled)] if pooled else [])
    rel, ev = [], []
    for idx in parts:
        idx = list(idx)
        rng.shuffle(idx)
        k = min(max(round(fraction * len(idx)), 1), len(idx) - 1) if len(idx) >= 2 else 0
        rel += idx[:k]
        ev += idx[k:]
    if not rel or not ev:
        raise DataError(f"relearn: cannot split {len(items)} forget items into a relearn part and an audited part")
    return sorted(rel), sorted(ev)


def _probs(model, fmt: PromptFormat, items: list[QAItem], batch_size: int) -> list[float]:
    plain = [QAItem(question=it.question, answer=it.answer) for it in items]  # the answer only: one sequence each
    scores = score_items(model.eval(), fmt, plain, fmt.tok.pad_token_id, batch_size)
    return [M.answer_prob(s.answer.logprobs) for s in scores]


def relearn_curve(model, tokenizer, train_items: list[QAItem], eval_items: list[QAItem], cfg: RelearnConfig,
                  lr: float | None = None) -> dict:
    """Fine-tune a copy of ``model`` on ``train_items`` along one optimizer trajectory; the mean answer probability
    of ``eval_items`` at step 0 and at each of ``cfg.points()``, and the greedy ROUGE-L recall at the end. ``lr``
    (default: ``cfg.lr``, or ``relearn_lr(model)`` when that is 0) is the constant AdamW rate. ``model`` itself is
    not changed, nor the global random state."""
    cfg.validate()
    if not train_items:
        raise DataError("relearn: no items to relearn on")
    lr = float(lr or cfg.lr or relearn_lr(model))
    fmt = PromptFormat(tokenizer)
    net = copy.deepcopy(model)
    device = next(net.parameters()).device
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    encs = [fmt.encode(it.question, it.answer) for it in train_items]
    points = set(cfg.points())
    steps, probs = [0], [float(np.mean(_probs(net, fmt, eval_items, 32)))]
    order: list[int] = []
    shuffle = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)                  # dropout's stream: the same on every run of this attack
        for step in range(1, cfg.steps + 1):
            picked = []
            while len(picked) < min(cfg.batch_size, len(encs)):
                if not order:
                    order = torch.randperm(len(encs), generator=shuffle).tolist()
                picked.append(order.pop())
            batch = {k: v.to(device) for k, v in pad_batch([encs[i] for i in picked], tokenizer.pad_token_id).items()}
            net.train()
            loss = nll_mean(forward_logits(net, batch), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            if step in points:   # scoring runs in eval mode under no_grad: it draws no random numbers
                steps.append(step)
                probs.append(float(np.mean(_probs(net, fmt, eval_items, 32))))
    net.eval()
    gens = generate_answers(net, tokenizer, fmt, [it.question for it in eval_items], 32, cfg.max_new_tokens)
    rouge = float(np.mean([M.rouge_l_recall(g, it.answer) for g, it in zip(gens, eval_items)]))
    return {"steps": steps, "prob": probs, "before": probs[0], "after": probs[-1], "gain": probs[-1] - probs[0],
            "rougeL_recall_after": rouge, "generations": gens, "lr": lr,
            "forward": {"train_sequences": cfg.steps * min(cfg.batch_size, len(encs)),
                        "scored_sequences": len(eval_items) * len(steps), "generations": len(eval_items)}}


def recovery(curve: dict, original: float | None, recover_at: float = 0.5) -> dict:
    """Recovery rate at the end and the first measured step whose recovery rate reaches ``recover_at``."""
    if original is None:
        return {"recovery_rate": None, "steps_to_recover": None}
    rates = [M.recovery_rate(p, curve["before"], original) for p in curve["prob"]]
    hit = [s for s, r in zip(curve["steps"], rates) if r == r and r >= recover_at and s > 0]
    return {"recovery_rate": rates[-1], "steps_to_recover": hit[0] if hit else None}


def relearn_attack(model, tokenizer, forget: list[QAItem], cfg: RelearnConfig | None = None,
                   related: list[QAItem] | None = None, original_probs: list[float] | None = None) -> dict:
    """Both attacks on one model. ``original_probs`` (the target's per-item forget answer probabilities) give the
    recovery rates. Returns ``{"relearn_items", "eval_items", "forget_subset": curve, "related": curve?}``."""
    cfg = cfg or RelearnConfig()
    cfg.validate()
    rel, ev = split_forget(forget, cfg.fraction, cfg.seed)
    eval_items = [forget[i] for i in ev]
    original = float(np.mean([original_probs[i] for i in ev])) if original_probs is not None else None
    out = {"relearn_items": rel, "eval_items": ev, "original": original}
    curve = relearn_curve(model, tokenizer, [forget[i] for i in rel], eval_items, cfg)
    out["forget_subset"] = {**curve, **recovery(curve, original, cfg.recover_at)}
    if cfg.related and related:
        n = cfg.related_size or len(rel)
        picked = random.Random(cfg.seed).sample(list(related), min(n, len(related)))
        curve = relearn_curve(model, tokenizer, picked, eval_items, cfg)
        out["related"] = {**curve, **recovery(curve, original, cfg.recover_at)}
    return out
