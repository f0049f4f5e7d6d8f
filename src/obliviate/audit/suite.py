"""The TOFU-style audit of one model: scores per split, then every metric from those scores.

Beside TOFU's metrics it measures how word-like the forget answers are (``audit.fluency``: the share of non-word
tokens and RWKU's n-gram entropy, per item and on average), since a model can stop giving the forgotten answer by
babbling; the oracle's values are the reference in the report.

``audit_model`` measures what depends only on the model. ``compare_to_oracle`` adds what needs the oracle's audit too
(forget quality: the KS test of forget truth ratios; privleak: the MIA AUC against the oracle's). Keeping them apart
lets a cached audit of the target or the oracle be compared with any later model.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..config import AuditConfig
from ..data.benchmark import Benchmark
from ..data.collate import PromptFormat
from ..scoring import metrics as M
from ..scoring.passes import ItemScore, generate_answers, score_items
from . import fluency as F

# model utility, as TOFU defines it: the harmonic mean of these (those present)
UTILITY_KEYS = ["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_truth_ratio",
                "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_truth_ratio",
                "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_truth_ratio"]


def _split_metrics(split: str, scores: list[ItemScore], gens: list[str] | None, items, fmt, k: float,
                   protocol: str = M.OBLIVIATE):
    metrics: dict[str, float] = {}
    rows = []
    tr, tr_prob = [], []
    for i, (it, s) in enumerate(zip(items, scores)):
        lp = s.answer.logprobs
        row = {"index": i, "id": it.id, "prompt": fmt.prompt(it.question), "target": fmt.target(it.answer),
               "prob": M.answer_prob(lp), "avg_loss": -M.mean_logprob(lp),
               "extraction_strength": M.extraction_strength(s.answer.hits, protocol),
               "exact_memorization": M.exact_memorization(s.answer.hits, protocol),
               "mink_score": M.min_k_score(lp, k, protocol),
               "minkpp_score": M.min_k_pp_score(s.answer.zscores, k, protocol)}
        if s.perturbed:
            true = s.paraphrased if s.paraphrased is not None else s.answer
            row["truth_ratio"] = M.truth_ratio(true.logprobs, [p.logprobs for p in s.perturbed], protocol)
            row["truth_ratio_prob_mean"] = M.truth_ratio_prob(true.logprobs, [p.logprobs for p in s.perturbed],
                                                              protocol)
            row["prob_normalised"] = M.prob_normalised(lp, [p.logprobs for p in s.perturbed])
            row["pert_prob"] = float(np.mean([M.answer_prob(p.logprobs) for p in s.perturbed]))
            row["pert_avg_loss"] = [-M.mean_logprob(p.logprobs) for p in s.perturbed]
            tr.append(row["truth_ratio"])
            tr_prob.append(row["truth_ratio_prob_mean"])
        if s.paraphrased is not None:
            row["para_prob"] = M.answer_prob(s.paraphrased.logprobs)
            row["para_avg_loss"] = -M.mean_logprob(s.paraphrased.logprobs)
        if gens is not None:
            row["generation"] = gens[i]
            row["rougeL_recall"] = M.rouge_l_recall(gens[i], it.answer)
            if split == "forget":  # forgetting by babbling is not forgetting: how word-like the answer is
                row["fluency_nonword_share"] = F.nonword_share(gens[i])
                row["fluency_badchar_share"] = F.badchar_share(gens[i])
                row["fluency_ngram_entropy"] = F.ngram_entropy(gens[i])
        rows.append(row)

    def mean(key):
        vals = [r[key] for r in rows if key in r]
        return float(np.mean(vals)) if vals else None

    metrics[f"{split}_Q_A_Prob"] = mean("prob")
    metrics[f"{split}_Q_A_PARA_Prob"] = mean("para_prob")
    metrics[f"{split}_Q_A_PERT_Prob"] = mean("pert_prob")
    metrics[f"{split}_Q_A_Prob_normalised"] = mean("prob_normalised")
    metrics[f"{split}_Q_A_ROUGE"] = mean("rougeL_recall")
    if tr:
        metrics[f"{split}_truth_ratio"] = M.aggregate_truth_ratio(tr, split, protocol)
        metrics[f"{split}_truth_ratio_prob_mean"] = float(np.mean(tr_prob))
    if split == "forget":
        metrics["extraction_strength"] = mean("extraction_strength")
        metrics["exact_memorization"] = mean("exact_memorization")
        metrics["forget_nonword_share"] = mean("fluency_nonword_share")
        metrics["forget_ngram_entropy"] = mean("fluency_ngram_entropy")
    return {k: v for k, v in metrics.items() if v is not None}, rows


def audit_model(model, tokenizer, bench: Benchmark, cfg: AuditConfig | None = None, progress: bool = True) -> dict:
    """Audit one model on a benchmark's splits. Returns ``{"metrics", "per_item", "raw", "cost"}``."""
    cfg = cfg or AuditConfig()
    fmt = PromptFormat(tokenizer, cfg.max_length, spec=cfg.prompt)
    was_training = model.training
    model.eval()
    splits = {k: v for k, v in bench.eval_splits().items() if k in cfg.splits}
    metrics: dict[str, float] = {}
    per_item: dict[str, list[dict]] = {}
    raw: dict[str, list[float]] = {}
    t0 = time.time()
    n_seqs = n_gen = 0
    bar = tqdm(splits.items(), desc="audit", disable=not progress, unit="split", dynamic_ncols=True)
    for split, items in bar:
        bar.set_postfix(split=split)
        scores = score_items(model, fmt, items, tokenizer.pad_token_id, cfg.batch_size)
        n_seqs += sum(1 + (s.paraphrased is not None) + len(s.perturbed) for s in scores)
        gens = None
        if cfg.generate and split != "holdout":
            gens = generate_answers(model, tokenizer, fmt, [it.question for it in items], cfg.batch_size, cfg.max_new_tokens)
            n_gen += len(gens)
        m, rows = _split_metrics(split, scores, gens, items, fmt, cfg.mink_k, cfg.protocol)
        if split == "holdout":
            m = {}  # holdout items only serve as membership-inference non-members
        metrics.update(m)
        per_item[split] = rows
        raw[f"{split}_mink"] = [r["mink_score"] for r in rows]
        if split == "forget":
            raw["forget_truth_ratio"] = [r["truth_ratio"] for r in rows if "truth_ratio" in r]
    model.train(was_training)
    if "forget_mink" in raw and "holdout_mink" in raw:
        metrics["mia_min_k"] = M.mia_auc(raw["forget_mink"], raw["holdout_mink"])
    utility = [metrics[k] for k in UTILITY_KEYS if k in metrics]
    if utility:
        metrics["model_utility"] = M.model_utility(utility)
    cost = {"seconds": round(time.time() - t0, 2), "scored_sequences": n_seqs, "generations": n_gen}
    return {"metrics": metrics, "per_item": per_item, "raw": raw, "protocol": cfg.protocol,
            "prompt_format": fmt.describe(), "cost": cost}


def compare_to_oracle(result: dict, oracle: dict | None) -> dict:
    """Add forget_quality and privleak, which compare a model's audit with the oracle's. Returns ``result``.

    Without an oracle neither is defined (privleak is relative to the retrained model's MIA AUC, not to a random
    guess), so neither is added; ``mia_min_k`` (the AUC itself) stays.
    """
    m = result["metrics"]
    if oracle is None:
        return result
    if result["raw"].get("forget_truth_ratio") and oracle["raw"].get("forget_truth_ratio"):
        m["forget_quality"] = M.forget_quality(result["raw"]["forget_truth_ratio"], oracle["raw"]["forget_truth_ratio"])
    if "mia_min_k" in m and "mia_min_k" in oracle["metrics"]:
        m["privleak"] = M.privleak(m["mia_min_k"], oracle["metrics"]["mia_min_k"])
    return result
