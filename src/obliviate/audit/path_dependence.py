"""Path dependence of local unlearning ("On the Impossibility of Retrain Equivalence in Machine Unlearning"; Yu, He,
Goyal, Arora, arXiv 2510.16629). Only the abstract and the project page are public: the protocol below is derived
from them, and its uncertain choices (stage sizes, epochs, learning rates, measuring points) are options.

Claim: when a model is trained in stages, what a *local* unlearning method (one that follows gradients of the forget
set: GA, NPO, ...) does depends on the order the stages were seen in, while the retrained reference (trained without
the forget data) does not; so no path-oblivious local method reaches retrain equivalence for every history.

Protocol (``path_dependence``):

1. Stages S_1..S_K (lists of items; one of them, ``forget_stage``, is the forget data D_f). A *path* pi is an order
   of the stages; by default the forget stage first, in the middle and last (early vs recent), the others in their
   given order.
2. The same base model is fine-tuned along every path (``epochs`` per stage, next-token NLL, the engine's
   ``finetune`` method, the same seed), giving theta^pi.
3. The same local unlearning (method, lr, steps, seed) on D_f from each theta^pi.
4. Measured at step 0 and every ``eval_every`` steps: the forget log-likelihood
       LL_f(theta) = mean_{z in D_f} (1/|y_z|) sum_t log p_theta(y_t | x, y_<t)
   and the utility, the mean answer probability exp(mean_t log p) over the other stages' items (what must stay;
   ``utility_size`` of them, taken round-robin across those stages).
   The engine restarts its optimizer at each measuring point (as the relearning audit does); every path gets the
   same schedule, so the budgets are equal.
5. The spread across paths at each measuring point: max - min and the standard deviation (population, ddof 0) of
   LL_f, of the drop LL_f(0) - LL_f(t) (how differently the same steps act, apart from where each path started) and
   of utility. Path dependence is a spread that stays, or grows, at equal budget.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..data.collate import PromptFormat
from ..data.records import QAItem
from ..errors import ConfigError, DataError
from ..methods.base import Method
from ..scoring.passes import score_sequences


@dataclass
class PathConfig:
    epochs: float = 10.0           # fine-tuning epochs per stage
    lr: float = 5e-3               # fine-tuning learning rate (the tiny recipe's)
    batch_size: int = 8
    unlearn_steps: int = 10
    unlearn_lr: float = 5e-4       # the tiny unlearning preset's
    unlearn_batch_size: int = 8
    eval_every: int = 2            # measure every N unlearning steps (0 = only before and after)
    utility_size: int = 40         # items of the other stages measured for utility (0 = all)
    seed: int = 0

    def validate(self) -> None:
        if self.epochs <= 0 or self.lr <= 0 or self.unlearn_lr <= 0:
            raise ConfigError("path-dependence: options 'epochs', 'lr' and 'unlearn_lr' must be > 0")
        if self.batch_size < 1 or self.unlearn_batch_size < 1 or self.unlearn_steps < 1 or self.eval_every < 0 \
                or self.utility_size < 0:
            raise ConfigError("path-dependence: batch sizes and 'unlearn_steps' must be >= 1, 'eval_every' and "
                              "'utility_size' >= 0")


def default_orders(names: list[str], forget_stage: str) -> list[list[str]]:
    """The forget stage first, in the middle and last; the other stages keep their order (duplicates dropped)."""
    if forget_stage not in names:
        raise ConfigError(f"path-dependence: the forget stage '{forget_stage}' is not one of {', '.join(names)}")
    others = [n for n in names if n != forget_stage]
    orders = []
    for pos in (0, len(others) // 2, len(others)):
        o = others[:pos] + [forget_stage] + others[pos:]
        if o not in orders:
            orders.append(o)
    return orders


def answer_logprobs(model, tokenizer, items: list[QAItem], batch_size: int = 32) -> list[np.ndarray]:
    """Per-token answer log-probs of each item (teacher forced, eval mode, no gradient)."""
    fmt = PromptFormat(tokenizer)
    was = model.training
    scores = score_sequences(model.eval(), [fmt.encode(it.question, it.answer) for it in items],
                             tokenizer.pad_token_id, batch_size)
    model.train(was)
    return [s.logprobs.astype(np.float64) for s in scores]


def forget_ll(model, tokenizer, items: list[QAItem]) -> float:
    """LL_f: the mean over items of the token-mean answer log-likelihood."""
    return float(np.mean([lp.mean() for lp in answer_logprobs(model, tokenizer, items)]))


def utility(model, tokenizer, items: list[QAItem]) -> float:
    """Mean over items of the answer's geometric-mean token probability."""
    return float(np.mean([np.exp(lp.mean()) for lp in answer_logprobs(model, tokenizer, items)]))


def utility_items(stage_items: list[list[QAItem]], size: int) -> list[QAItem]:
    """Up to ``size`` items (0 = all) taken round-robin from the stages, so that every stage counts alike."""
    rounds = max((len(x) for x in stage_items), default=0)
    out = [items[j] for j in range(rounds) for items in stage_items if j < len(items)]
    return out[:size] if size else out


def spread(values_by_path: list[list[float]]) -> dict:
    """Across paths, at each measuring point: ``range`` (max - min) and ``std`` (population)."""
    a = np.asarray(values_by_path, dtype=np.float64)
    return {"range": (a.max(0) - a.min(0)).tolist(), "std": a.std(0).tolist()}


def finetune_path(base, tokenizer, stages: dict[str, list[QAItem]], order: list[str], cfg: PathConfig, root: Path):
    """A copy of ``base`` fine-tuned on each stage of ``order`` in turn (fresh optimizer per stage)."""
    from ..engine import train
    from ..methods import make_method

    net = copy.deepcopy(base)
    for k, name in enumerate(order):
        tcfg = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, scheduler="constant",
                           warmup_ratio=0.0, seed=cfg.seed)
        net = train(net, tokenizer, make_method("finetune"), {"train": stages[name]}, tcfg, root / f"stage{k}-{name}",
                    progress=False)
    return net


def unlearn_curve(model, tokenizer, method: Method, forget: list[QAItem], retain: list[QAItem],
                  util_items: list[QAItem], cfg: PathConfig, root: Path) -> dict:
    """``cfg.unlearn_steps`` steps of ``method`` on ``forget`` from a copy of ``model``, LL_f and utility measured at
    step 0 and every ``eval_every`` steps."""
    from ..engine import train

    net = copy.deepcopy(model)
    points = list(range(0, cfg.unlearn_steps, cfg.eval_every))[1:] if cfg.eval_every else []
    points.append(cfg.unlearn_steps)
    steps, ll, ut = [0], [forget_ll(net, tokenizer, forget)], [utility(net, tokenizer, util_items)]
    done = 0
    for j, point in enumerate(points):
        tcfg = TrainConfig(lr=cfg.unlearn_lr, max_steps=point - done, batch_size=cfg.unlearn_batch_size,
                           scheduler="constant", warmup_ratio=0.0, seed=cfg.seed + j)
        net = train(net, tokenizer, method, {"forget": forget, "retain": retain}, tcfg, root / f"unlearn-{j}",
                    progress=False)
        done = point
        steps.append(point)
        ll.append(forget_ll(net, tokenizer, forget))
        ut.append(utility(net, tokenizer, util_items))
    return {"steps": steps, "forget_ll": ll, "utility": ut}


def path_dependence(base, tokenizer, stages: dict[str, list[QAItem]], methods: list[Method], cfg: PathConfig,
                    forget_stage: str = "forget", orders: list[list[str]] | None = None, log=None) -> dict:
    """Fine-tune ``base`` along every order of ``stages``, unlearn the forget stage from each with every method, and
    report the curves and their spread across orders. ``base`` is not changed."""
    cfg.validate()
    for name, items in stages.items():
        if not items:
            raise DataError(f"path-dependence: stage '{name}' has no items")
    orders = orders or default_orders(list(stages), forget_stage)
    for o in orders:
        if sorted(o) != sorted(stages):
            raise ConfigError(f"path-dependence: order {o} is not a permutation of the stages {list(stages)}")
    forget = stages[forget_stage]
    others = [it for name, items in stages.items() if name != forget_stage for it in items]
    util_items = utility_items([items for name, items in stages.items() if name != forget_stage], cfg.utility_size)
    out: dict = {"config": asdict(cfg), "stages": {k: len(v) for k, v in stages.items()},
                 "forget_stage": forget_stage, "orders": orders, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = []
        for i, order in enumerate(orders):
            if log:
                log(f"[obliviate] path-dependence: fine-tuning along {' -> '.join(order)}")
            models.append(finetune_path(base, tokenizer, stages, order, cfg, Path(tmp) / f"path{i}"))
        for m in methods:
            curves = []
            for i, (order, net) in enumerate(zip(orders, models)):
                c = unlearn_curve(net, tokenizer, m, forget, others, util_items, cfg, Path(tmp) / f"{m.name}-{i}")
                curves.append({"order": order, **c})
                if log:
                    log(f"[obliviate] path-dependence {m.name} {' -> '.join(order)}: forget LL {c['forget_ll'][0]:.3f}"
                        f" -> {c['forget_ll'][-1]:.3f}, utility {c['utility'][0]:.3f} -> {c['utility'][-1]:.3f}")
            out["methods"][m.name] = {
                "hparams": m.hparams(), "steps": curves[0]["steps"], "paths": curves,
                "spread_forget_ll": spread([c["forget_ll"] for c in curves]),
                "spread_forget_drop": spread([[c["forget_ll"][0] - x for x in c["forget_ll"]] for c in curves]),
                "spread_utility": spread([c["utility"] for c in curves]),
            }
    return out
