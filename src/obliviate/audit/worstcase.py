"""Worst-case (and easiest) forget sets by bi-level selection (Challenging Forgets; Fan, Liu, Hero, S. Liu, ECCV 2024,
arXiv 2403.07362, official code OPTML-Group/Unlearn-WorstCase).

Which m of N candidate items are hardest to erase for a given unlearning method? Soft selection weights w live on the
capped simplex S = {w in [0, 1]^N : sum_i w_i = m}:

    upper:  min_{w in S}  sum_i w_i * l(theta_u(w); z_i) + gamma * ||w||^2        (hardest: loss stays lowest)
    lower:  theta_u(w) = Unlearn(theta_o; w)                                       (a few weighted unlearning steps)

* **Lower level**: ``lower_steps`` optimizer steps of the method from the target theta_o, each step the weighted mean
  (1/m) sum_i w_i L_method(z_i) over every candidate (one item per micro-batch, ``N`` micro-batches accumulated), so a
  binary w is the method run on the chosen set. A retain term, where the method has one, is scaled with its forget
  item's weight; its pairing is random, so its total weight stays 1 on average.
* **Upper level** (first order, as the official code): g_i = l(theta_u(w); z_i), the token-mean answer NLL after the
  lower level, treated as the gradient of the upper objective w.r.t. w_i (the dependence of theta_u on w through the
  unrolled steps is dropped); then w <- Proj_S(w - eta * (g + 2 gamma w)). The code uses the raw losses; here g is
  divided by its standard deviation (``normalize``, on by default) so that ``w_lr`` means the same on any model.
* **Projection** onto S by bisection on the shift mu: w_i = clip(v_i - mu, 0, 1) with mu chosen so sum_i w_i = m
  (the sum is continuous and non-increasing in mu; it is N at mu = min(v) - 1 and 0 at mu = max(v)).
* After ``iterations`` outer steps the set is binarised: the top m of w (ties broken by the lower g). The easiest set
  flips the sign of the loss term: min_w -sum_i w_i l_i + gamma ||w||^2.

``compare_sets`` then runs the method unweighted on each chosen set (worst, easiest, and ``n_random`` random sets of the
same size) from the target and measures, on that set, the gap to the oracle: mean answer probability of the unlearned
model minus the oracle's (and the NLL gap, oracle minus unlearned). The oracle is the model trained without the whole
candidate pool (the benchmark's forget split), the reference for every subset of it; an exact per-set oracle would
need one retraining per set.
"""

from __future__ import annotations

import copy
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..data.collate import PromptFormat
from ..data.records import QAItem
from ..errors import ConfigError
from ..methods.base import Method
from ..scoring.passes import score_sequences


@dataclass
class WorstCaseConfig:
    size: int = 5                  # m: items in the selected forget set
    iterations: int = 5            # outer (upper-level) steps
    lower_steps: int = 3           # unlearning steps per lower level
    lr: float = 5e-4               # lower-level learning rate (the tiny preset's)
    w_lr: float = 0.1              # eta: upper-level step size
    gamma: float = 0.0             # weight of ||w||^2
    normalize: bool = True         # divide g by its standard deviation before the step
    eval_steps: int = 10           # steps of the unweighted run on each chosen set (compare_sets)
    eval_batch_size: int = 4
    n_random: int = 3              # random sets of the same size to compare with
    seed: int = 0

    def validate(self, n: int | None = None) -> None:
        if self.size < 1:
            raise ConfigError(f"worstcase: option 'size' = {self.size} must be at least 1")
        if n is not None and self.size >= n:
            raise ConfigError(f"worstcase: option 'size' = {self.size} must be below the {n} candidate items")
        for name in ("iterations", "lower_steps", "eval_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"worstcase: option '{name}' = {getattr(self, name)} must be >= 1")
        if self.lr <= 0 or self.w_lr <= 0 or self.gamma < 0 or self.n_random < 0:
            raise ConfigError("worstcase: options 'lr' and 'w_lr' must be > 0, 'gamma' and 'n_random' >= 0")


def project_capped_simplex(v, m: float, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Euclidean projection of ``v`` onto {w in [0, 1]^N : sum w = m}: w = clip(v - mu, 0, 1), mu found by bisection."""
    v = np.asarray(v, dtype=np.float64)
    if not 0 <= m <= len(v):
        raise ConfigError(f"worstcase: cannot choose {m} of {len(v)} items")
    lo, hi = float(v.min()) - 1.0, float(v.max())  # sum(lo) = N >= m >= 0 = sum(hi)
    for _ in range(max_iter):
        mu = 0.5 * (lo + hi)
        s = np.clip(v - mu, 0.0, 1.0).sum()
        if abs(s - m) <= tol:
            break
        lo, hi = (mu, hi) if s > m else (lo, mu)
    return np.clip(v - mu, 0.0, 1.0)


def upper_step(w: np.ndarray, g: np.ndarray, m: int, w_lr: float, gamma: float = 0.0, easiest: bool = False,
               normalize: bool = True) -> np.ndarray:
    """One projected gradient step of the upper level: Proj_S(w - eta (s g + 2 gamma w)), s = -1 for the easiest set."""
    g = np.asarray(g, dtype=np.float64)
    if normalize:
        sd = g.std()
        g = g / sd if sd > 0 else g * 0
    sign = -1.0 if easiest else 1.0
    return project_capped_simplex(w - w_lr * (sign * g + 2 * gamma * w), m)


def binarize(w: np.ndarray, g: np.ndarray, m: int, easiest: bool = False) -> list[int]:
    """The m items of largest weight; ties go to the lower loss (the higher for the easiest set)."""
    key = sorted(range(len(w)), key=lambda i: (-w[i], g[i] if not easiest else -g[i]))
    return sorted(key[:m])


class WeightedMethod(Method):
    """An unlearning method whose loss on a one-item micro-batch is scaled by ``scale * weights[index]``."""

    def __init__(self, inner: Method, weights, scale: float):
        if not inner.trains or inner.primary != "forget":
            raise ConfigError(f"worstcase: method {inner.name} is not a training unlearning method")
        self.inner = inner
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        self.scale = scale
        self.name = inner.name
        self.reference_streams = inner.reference_streams

    @property
    def uses_retain(self) -> bool:
        return self.inner.uses_retain

    def needs_reference(self) -> str:
        return self.inner.needs_reference()

    def setup(self, model, tokenizer, data):
        return self.inner.setup(model, tokenizer, data)

    def loss(self, model, batch, ref):
        loss, logs = self.inner.loss(model, batch, ref)
        w = self.weights.to(loss.device)[batch["forget"]["index"]].mean()
        return loss * (w * self.scale), logs

    def finish(self, model) -> None:
        self.inner.finish(model)


def item_nll(model, tokenizer, items: list[QAItem], batch_size: int = 32) -> np.ndarray:
    """Token-mean answer NLL of each item under ``model`` (eval mode, no gradient)."""
    fmt = PromptFormat(tokenizer)
    was = model.training
    scores = score_sequences(model.eval(), [fmt.encode(it.question, it.answer) for it in items],
                             tokenizer.pad_token_id, batch_size)
    model.train(was)
    return np.array([-float(s.logprobs.astype(np.float64).mean()) for s in scores])


def _unlearn(model, tokenizer, method: Method, forget: list[QAItem], retain: list[QAItem], steps: int, lr: float,
             batch_size: int, grad_accum: int, seed: int, run_dir: Path):
    from ..engine import train

    cfg = TrainConfig(lr=lr, max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, scheduler="constant",
                      warmup_ratio=0.0, seed=seed)
    return train(copy.deepcopy(model), tokenizer, method, {"forget": forget, "retain": retain}, cfg, run_dir,
                 progress=False)


def select_forget_set(model, tokenizer, method: Method, candidates: list[QAItem], retain: list[QAItem],
                      cfg: WorstCaseConfig, easiest: bool = False, log=None) -> dict:
    """Bi-level selection of the hardest (or, with ``easiest``, easiest) ``cfg.size`` candidates for ``method``.

    ``model`` (the target) is not changed. Returns the chosen indices, the final weights and, per outer step, the
    weights, the losses g and the upper objective sum_i w_i g_i."""
    n = len(candidates)
    cfg.validate(n)
    m = cfg.size
    w = np.full(n, m / n)
    history = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in range(cfg.iterations):
            net = _unlearn(model, tokenizer, WeightedMethod(method, w, n / m), candidates, retain, cfg.lower_steps,
                           cfg.lr, 1, n, cfg.seed, Path(tmp) / f"lower-{t}")
            g = item_nll(net, tokenizer, candidates)
            history.append({"weights": w.tolist(), "loss": g.tolist(), "objective": float(w @ g)})
            w = upper_step(w, g, m, cfg.w_lr, cfg.gamma, easiest, cfg.normalize)
            if log:
                log(f"[obliviate] worstcase {'easiest' if easiest else 'hardest'}: step {t + 1}/{cfg.iterations}, "
                    f"objective {history[-1]['objective']:.4f}")
            del net
    chosen = binarize(w, np.array(history[-1]["loss"]), m, easiest)
    return {"indices": chosen, "weights": w.tolist(), "history": history}


def set_gap(model, oracle, tokenizer, method: Method, items: list[QAItem], retain: list[QAItem], cfg: WorstCaseConfig,
            run_dir: Path) -> dict:
    """Unlearn ``items`` from ``model`` with the method (unweighted), then the gap to ``oracle`` on those items."""
    bs = min(cfg.eval_batch_size, len(items))
    net = _unlearn(model, tokenizer, method, items, retain, cfg.eval_steps, cfg.lr, bs, 1, cfg.seed, run_dir)
    nll_u, nll_o = item_nll(net, tokenizer, items), item_nll(oracle, tokenizer, items)
    p_u, p_o = np.exp(-nll_u), np.exp(-nll_o)
    return {"prob_gap": float(p_u.mean() - p_o.mean()), "nll_gap": float(nll_o.mean() - nll_u.mean()),
            "prob_unlearned": float(p_u.mean()), "prob_oracle": float(p_o.mean())}


def compare_sets(model, oracle, tokenizer, method: Method, candidates: list[QAItem], retain: list[QAItem],
                 cfg: WorstCaseConfig, log=None) -> dict:
    """Worst-case, easiest and ``n_random`` random sets of ``cfg.size`` candidates, each unlearned with ``method`` and
    compared with the oracle; ``worst_minus_random`` is the worst set's probability gap minus the random sets' mean."""
    worst = select_forget_set(model, tokenizer, method, candidates, retain, cfg, log=log)
    easy = select_forget_set(model, tokenizer, method, candidates, retain, cfg, easiest=True, log=log)
    sets = {"worst": worst["indices"], "easiest": easy["indices"]}
    for k in range(cfg.n_random):
        sets[f"random{k}"] = sorted(random.Random(cfg.seed * 1000 + k).sample(range(len(candidates)), cfg.size))
    out: dict = {"method": method.name, "hparams": method.hparams(), "config": asdict(cfg), "n_candidates":
                 len(candidates), "selection": {"worst": worst, "easiest": easy}, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, idx in sets.items():
            gap = set_gap(model, oracle, tokenizer, method, [candidates[i] for i in idx], retain, cfg,
                          Path(tmp) / name)
            out["sets"][name] = {"indices": idx, "ids": [candidates[i].id for i in idx], **gap}
            if log:
                log(f"[obliviate] worstcase {method.name} {name}: prob gap {gap['prob_gap']:.4f}")
    rand = [out["sets"][f"random{k}"]["prob_gap"] for k in range(cfg.n_random)]
    out["random_mean_prob_gap"] = float(np.mean(rand)) if rand else None
    out["worst_minus_random"] = out["sets"]["worst"]["prob_gap"] - out["random_mean_prob_gap"] if rand else None
    return out
