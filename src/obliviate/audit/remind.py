"""REMIND (Cohen, Nemcovesky, Mendelson, arXiv 2511.04228): residual memorisation in the loss landscape around an item.

A memorised item sits in a sharp basin: its loss is low and nudging its tokens raises the loss steeply. An item the
model never learned, or truly forgot, sits on a plateau: its neighbours' losses are about its own. Pointwise losses
can overlap after unlearning while the landscapes still differ; REMIND reads the landscape.

* **Neighbours.** For each item and each rate p, ``neighbours`` variants: every token position (except special tokens;
  which positions is set by ``where``) is replaced, independently with probability p, by one of its ``top_j`` nearest
  tokens in the model's input-embedding space (cosine similarity). The loss L is the mean token NLL of the answer span
  of the (perturbed) sequence, from the audit's teacher-forced pass (``scoring.score_sequences``).
* **Features** per item: L(x); for each rate p, the mean and the standard deviation of dL = L(x~) - L(x); the slope of
  mean dL against p (least squares); and the mean over rates of mean|dL| / p. Cost: 1 + rates x neighbours passes.
* **Classifier.** A logistic regression (standardised features) of the memorisation state, trained where the ground
  truth is known: on the target (forget and retain items remembered, holdout not) and the oracle (retain remembered,
  forget and holdout not). It is applied to an unlearned model's forget items; the audit reports each item's
  probability of being remembered. Predictions for an item always come from a classifier fitted without that item
  (grouped K-fold over items), so auditing the target or the oracle themselves is not scored in-sample.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.collate import IGNORE, Encoded, PromptFormat
from ..data.records import QAItem
from ..errors import ConfigError
from ..scoring.passes import score_sequences


@dataclass
class RemindConfig:
    rates: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    neighbours: int = 8         # variants per rate
    top_j: int = 5              # a replaced token becomes one of its j nearest tokens
    where: str = "all"          # positions that may be replaced: "all", "prompt" or "answer"
    folds: int = 5
    batch_size: int = 64
    seed: int = 0

    def validate(self) -> None:
        if not self.rates or any(not 0 < r <= 1 for r in self.rates):
            raise ConfigError(f"remind: option 'rates' = {self.rates!r} must be a list of numbers in (0, 1]")
        if self.neighbours < 1 or self.top_j < 1 or self.folds < 2:
            raise ConfigError("remind: options 'neighbours' and 'top_j' must be >= 1 and 'folds' >= 2")
        if self.where not in ("all", "prompt", "answer"):
            raise ConfigError(f"remind: option 'where' = {self.where!r} must be all, prompt or answer")


@torch.no_grad()
def nearest_tokens(model, token_ids: list[int], top_j: int, exclude: set[int]) -> dict[int, list[int]]:
    """The ``top_j`` nearest tokens (cosine similarity of input embeddings) of each id, never itself or ``exclude``."""
    emb = model.get_input_embeddings().weight.detach().float()
    emb = emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    out: dict[int, list[int]] = {}
    ids = sorted(set(token_ids))
    banned = torch.tensor(sorted(exclude), dtype=torch.long, device=emb.device) if exclude else None
    for start in range(0, len(ids), 256):
        chunk = ids[start:start + 256]
        sims = emb[chunk] @ emb.T
        if banned is not None:
            sims[:, banned] = float("-inf")
        sims[torch.arange(len(chunk)), torch.tensor(chunk)] = float("-inf")
        top = sims.topk(min(top_j, emb.shape[0] - 1), dim=-1).indices
        for t, row in zip(chunk, top.tolist()):
            out[t] = row
    return out


def perturb(enc: Encoded, neighbours: dict[int, list[int]], rate: float, rng: random.Random, where: str,
            special: set[int]) -> Encoded:
    """One neighbour of ``enc``: each eligible position replaced with probability ``rate`` by a random near token."""
    ids = list(enc.input_ids)
    labels = list(enc.labels)
    for t, tok in enumerate(ids):
        in_answer = enc.labels[t] != IGNORE
        if tok in special or (where == "prompt" and in_answer) or (where == "answer" and not in_answer):
            continue
        if rng.random() < rate and neighbours.get(tok):
            ids[t] = rng.choice(neighbours[tok])
            if in_answer:
                labels[t] = ids[t]
    return Encoded(ids, labels, enc.prompt, enc.target, enc.prompt_len)


def features(base_loss: float, losses: dict[float, list[float]]) -> np.ndarray:
    """[L, (mean dL_p, std dL_p) for each rate p, slope of mean dL over p, mean over p of mean|dL_p| / p]."""
    rates = sorted(losses)
    deltas = {p: np.asarray(losses[p], float) - base_loss for p in rates}
    means = np.array([deltas[p].mean() for p in rates])
    feats = [base_loss]
    for p, m in zip(rates, means):
        feats += [m, deltas[p].std()]
    r = np.asarray(rates, float)
    slope = float(((r - r.mean()) * (means - means.mean())).sum() / ((r - r.mean()) ** 2).sum()) if len(r) > 1 else 0.0
    feats += [slope, float(np.mean([np.abs(deltas[p]).mean() / p for p in rates]))]
    return np.asarray(feats, float)


def landscape(model, fmt: PromptFormat, items: list[QAItem], cfg: RemindConfig | None = None) -> np.ndarray:
    """REMIND features of each item under ``model``: shape (len(items), 3 + 2 x len(rates))."""
    cfg = cfg or RemindConfig()
    cfg.validate()
    tok = fmt.tok
    special = {t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if t is not None}
    special |= set(getattr(tok, "all_special_ids", []) or [])
    encs = [fmt.encode(it.question, it.answer, where=f"item {i}") for i, it in enumerate(items)]
    near = nearest_tokens(model, [t for e in encs for t in e.input_ids if t not in special], cfg.top_j, special)
    rates = sorted(cfg.rates)
    batch, slots = [], []
    for i, e in enumerate(encs):
        batch.append(e)
        slots.append((i, None))
        for p in rates:
            for k in range(cfg.neighbours):
                rng = random.Random(f"{cfg.seed}:{i}:{p}:{k}")
                batch.append(perturb(e, near, p, rng, cfg.where, special))
                slots.append((i, p))
    was_training = model.training
    model.eval()
    scores = score_sequences(model, batch, tok.pad_token_id, cfg.batch_size)
    model.train(was_training)
    base = [0.0] * len(items)
    losses: list[dict[float, list[float]]] = [{p: [] for p in rates} for _ in items]
    for (i, p), s in zip(slots, scores):
        loss = -float(np.mean(s.logprobs))
        if p is None:
            base[i] = loss
        else:
            losses[i][p].append(loss)
    return np.stack([features(base[i], losses[i]) for i in range(len(items))])


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000,
                                                              random_state=seed))


def fit_and_predict(train_x: np.ndarray, train_y: np.ndarray, train_groups: list[str], test_x: np.ndarray,
                    test_groups: list[str], folds: int = 5, seed: int = 0) -> tuple[np.ndarray, float]:
    """P(remembered) for each test row from a classifier fitted without that row's item (grouped K-fold), and the
    classifier's out-of-fold ROC-AUC on its own training rows (how well the landscape separates the known states)."""
    from sklearn.metrics import roc_auc_score

    groups = sorted(set(train_groups) | set(test_groups))
    rng = random.Random(seed)
    rng.shuffle(groups)
    fold_of = {g: j % folds for j, g in enumerate(groups)}
    tr_f = np.array([fold_of[g] for g in train_groups])
    te_f = np.array([fold_of[g] for g in test_groups])
    pred = np.full(len(test_x), np.nan)
    oof = np.full(len(train_x), np.nan)
    for f in range(folds):
        fit = tr_f != f
        if len(set(train_y[fit].tolist())) < 2:
            continue
        clf = _classifier(seed).fit(train_x[fit], train_y[fit])
        if (te_f == f).any():
            pred[te_f == f] = clf.predict_proba(test_x[te_f == f])[:, 1]
        if (tr_f == f).any():
            oof[tr_f == f] = clf.predict_proba(train_x[tr_f == f])[:, 1]
    ok = ~np.isnan(oof)
    both = ok.any() and len(set(train_y[ok].tolist())) == 2
    auc = float(roc_auc_score(train_y[ok], oof[ok])) if both else float("nan")
    return pred, auc


def ground_truth(target_feats: dict[str, np.ndarray], oracle_feats: dict[str, np.ndarray]):
    """Training rows from the known states: target forget/retain = 1, target holdout = 0; oracle retain = 1, oracle
    forget/holdout = 0. Returns (x, y, groups) with groups naming the item (``split:index``)."""
    xs, ys, groups = [], [], []
    truth = {("target", "forget"): 1, ("target", "retain"): 1, ("target", "holdout"): 0,
             ("oracle", "forget"): 0, ("oracle", "retain"): 1, ("oracle", "holdout"): 0}
    for (who, split), label in truth.items():
        feats = (target_feats if who == "target" else oracle_feats).get(split)
        if feats is None:
            continue
        xs.append(feats)
        ys += [label] * len(feats)
        groups += [f"{split}:{i}" for i in range(len(feats))]
    return np.concatenate(xs), np.asarray(ys), groups


def remind_audit(model_forget_feats: np.ndarray, target_feats: dict[str, np.ndarray],
                 oracle_feats: dict[str, np.ndarray], cfg: RemindConfig | None = None) -> dict:
    """Apply the ground-truth classifier to an unlearned model's forget-item features."""
    cfg = cfg or RemindConfig()
    x, y, groups = ground_truth(target_feats, oracle_feats)
    test_groups = [f"forget:{i}" for i in range(len(model_forget_feats))]
    p, auc = fit_and_predict(x, y, groups, model_forget_feats, test_groups, cfg.folds, cfg.seed)
    return {"p_remembered": float(np.nanmean(p)), "frac_remembered": float(np.nanmean(p > 0.5)),
            "classifier_auc": auc, "per_item": [float(v) for v in p]}
