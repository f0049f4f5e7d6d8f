"""open-unlearning's evaluation files, read and written.

open-unlearning writes ``TOFU_EVAL.json`` (every metric it computed, pre-computes included, each as ``{"agg_value":
..., "value_by_index": {"<index>": {...}}}``) and ``TOFU_SUMMARY.json`` (the headline metrics' ``agg_value``). A retain
model's ``TOFU_EVAL.json`` is its forget-quality and privleak reference: ``forget_truth_ratio.value_by_index[i].score``
(per-item P_false / P_true) and ``mia_min_k.agg_value`` (the Min-K AUC of forget vs holdout).

``read_reference`` turns such a file into what ``audit.suite.compare_to_oracle`` takes as the oracle, so a user with
the peer's published retain logs need not retrain an oracle; ``eval_logs`` writes an obliviate audit in the same
layout, so the peer's tools (and anyone's scripts for them) read obliviate's results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import DataError

# open-unlearning's default TOFU metric set (configs/eval/tofu.yaml): what TOFU_SUMMARY.json holds
SUMMARY_KEYS = ["forget_truth_ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility",
                "privleak", "extraction_strength"]
TRUTH_RATIO_KEY = {"forget": "forget_truth_ratio", "retain": "retain_Truth_Ratio", "ra": "ra_Truth_Ratio",
                   "wf": "wf_Truth_Ratio"}


def read_reference(path: str | Path) -> dict:
    """A retain model's ``TOFU_EVAL.json`` as an oracle audit: ``{"metrics": {"mia_min_k"?}, "raw":
    {"forget_truth_ratio": [...]}}``. A file without per-item forget truth ratios is refused with one line."""
    from ..data.formats import read_text_file

    path = Path(path)
    try:
        logs = json.loads(read_text_file(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(logs, dict):
        raise DataError(f"{path}: expected open-unlearning's TOFU_EVAL.json, a JSON object of metrics")
    tr = logs.get("forget_truth_ratio")
    by_index = tr.get("value_by_index") if isinstance(tr, dict) else None
    if not isinstance(by_index, dict) or not by_index:
        raise DataError(f"{path}: field 'forget_truth_ratio.value_by_index' is missing or empty; it holds the retain "
                        "model's per-item truth ratios (open-unlearning writes it when it evaluates forget_quality)")
    ratios = []
    for idx in sorted(by_index, key=lambda k: (len(k), k)):
        score = by_index[idx].get("score") if isinstance(by_index[idx], dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
            raise DataError(f"{path}: record {idx} of 'forget_truth_ratio': field 'score' = {score!r} should be a "
                            "finite number >= 0")
        ratios.append(float(score))
    metrics = {}
    mia = logs.get("mia_min_k")
    if isinstance(mia, dict) and isinstance(mia.get("agg_value"), (int, float)):
        metrics["mia_min_k"] = float(mia["agg_value"])
    return {"metrics": metrics, "raw": {"forget_truth_ratio": ratios}, "source": str(path)}


def _entry(rows: list[dict], fields: dict[str, str], agg: float | None) -> dict:
    by_index = {str(r["index"]): {name: r[key] for name, key in fields.items() if key in r} for r in rows}
    return {"agg_value": agg, "value_by_index": by_index}


def _pert(rows: list[dict]) -> dict:
    by_index = {str(r["index"]): {"prob": [math.exp(-x) for x in r["pert_avg_loss"]], "avg_loss": r["pert_avg_loss"]}
                for r in rows if "pert_avg_loss" in r}
    probs = [p for v in by_index.values() for p in v["prob"]]
    return {"agg_value": sum(probs) / len(probs) if probs else None, "value_by_index": by_index}


def _rouge(rows: list[dict], agg: float | None) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    by_index = {}
    for r in rows:
        truth = r["target"].strip()
        s = scorer.score(truth, r["generation"])
        by_index[str(r["index"])] = {"rouge1_recall": s["rouge1"].recall, "rougeL_f1": s["rougeL"].fmeasure,
                                     "rougeL_recall": s["rougeL"].recall, "input": r["prompt"],
                                     "ground_truth": truth, "generation": r["generation"]}
    return {"agg_value": agg, "value_by_index": by_index}


def eval_logs(result: dict) -> tuple[dict, dict]:
    """An audit result (``audit_model`` + ``compare_to_oracle``) as open-unlearning's (TOFU_EVAL, TOFU_SUMMARY)."""
    m, per_item = result["metrics"], result["per_item"]
    logs: dict[str, dict] = {}
    for split, rows in per_item.items():
        if split == "holdout" or not rows:
            continue
        logs[f"{split}_Q_A_Prob"] = _entry(rows, {"prob": "prob", "avg_loss": "avg_loss"}, m.get(f"{split}_Q_A_Prob"))
        if any("para_prob" in r for r in rows):
            logs[f"{split}_Q_A_PARA_Prob"] = _entry(rows, {"prob": "para_prob", "avg_loss": "para_avg_loss"},
                                                    m.get(f"{split}_Q_A_PARA_Prob"))
        if any("pert_avg_loss" in r for r in rows):
            logs[f"{split}_Q_A_PERT_Prob"] = _pert(rows)
        if split in ("ra", "wf") and any("prob_normalised" in r for r in rows):
            logs[f"{split}_Q_A_Prob_normalised"] = _entry(rows, {"prob": "prob_normalised"},
                                                          m.get(f"{split}_Q_A_Prob_normalised"))
        if any("truth_ratio" in r for r in rows) and split in TRUTH_RATIO_KEY:
            logs[TRUTH_RATIO_KEY[split]] = _entry(rows, {"score": "truth_ratio"}, m.get(f"{split}_truth_ratio"))
        if any("generation" in r for r in rows):
            logs[f"{split}_Q_A_ROUGE"] = _rouge(rows, m.get(f"{split}_Q_A_ROUGE"))
    forget = per_item.get("forget", [])
    if forget:
        for key in ("extraction_strength", "exact_memorization"):
            logs[key] = _entry(forget, {"score": key}, m.get(key))
    if "mia_min_k" in m:
        def scores(rows):
            return {"agg_value": sum(r["mink_score"] for r in rows) / len(rows),
                    "value_by_index": {str(r["index"]): {"score": r["mink_score"]} for r in rows}}

        logs["mia_min_k"] = {"forget": scores(forget), "holdout": scores(per_item["holdout"]),
                             "auc": m["mia_min_k"], "agg_value": m["mia_min_k"]}
    for key in ("forget_quality", "model_utility", "privleak"):
        if key in m:
            logs[key] = {"agg_value": m[key]}
    summary = {k: logs[k]["agg_value"] for k in SUMMARY_KEYS if k in logs and logs[k].get("agg_value") is not None}
    return logs, summary


def write_eval_logs(run_dir: str | Path, result: dict) -> list[Path]:
    """Write ``TOFU_EVAL.json`` and ``TOFU_SUMMARY.json`` into ``run_dir`` (beside report.json)."""
    from ..io import write_json

    logs, summary = eval_logs(result)
    run_dir = Path(run_dir)
    paths = [run_dir / "TOFU_EVAL.json", run_dir / "TOFU_SUMMARY.json"]
    write_json(paths[0], logs)
    write_json(paths[1], summary)
    return paths
