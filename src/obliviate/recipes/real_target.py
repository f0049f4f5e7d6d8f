"""The building blocks of a real-target run (``obliviate forget``, ``recipes/forget.py``; ``obliviate demo --real`` is
``forget`` on a built-in target): how probes are asked (RWKU's instructions, the chat template, greedy), how answers
are scored (a hit is an accepted answer as whole words, ``matched`` says which; RWKU's ROUGE-L recall beside it), the
per-set and per-kind metrics, and the report and before/after table. TOFU on a pretrained model is
``tofu_pretrained.py``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ..config import (
    REAL_METHOD,
    REAL_MODEL,
    REAL_TARGET,
    REAL_TRAIN,
)
from ..data.collate import PromptFormat
from ..data.real_targets import (
    FORGET_KINDS,
    Probe,
    RealTarget,
    RealWorldSet,
    answer_match,
    probe_question,
)
from ..scoring.passes import generate_answers


@dataclass
class GenSettings:
    """How probes are asked and how the model writes its training items (``recipes.forget.build_items``)."""

    probe_tokens: int = 24  # greedy tokens per probe answer (answers sit in the first sentence)
    corpus_tokens: int = 64  # tokens per text the model writes (corpus and retain answers)
    forget_samples: int = 2  # sampled texts per corpus prompt about the target
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 16
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------- asking

def _generate(model, tok, questions: list[str], max_new_tokens: int, batch_size: int, sample: bool = False,
              temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """Chat-template generations (greedy, or sampled with a fixed seed), cut at the stop token ``tok.eos_token``."""
    was_training = model.training
    model.eval()
    try:
        return generate_answers(model, tok, PromptFormat(tok), questions, batch_size, max_new_tokens, sample=sample,
                                temperature=temperature, top_p=top_p, seed=seed)
    finally:
        model.train(was_training)


def answer_probes(model, tok, probes: list[Probe], max_new_tokens: int = 24, batch_size: int = 16) -> list[str]:
    """The model's greedy answer to each probe (asked with RWKU's instructions, in the chat template)."""
    return _generate(model, tok, [probe_question(p) for p in probes], max_new_tokens, batch_size)


def score_rows(probes: list[Probe], generations: list[str]) -> list[dict]:
    """One row per probe: the probe, the generation, ``hit`` (an accepted answer occurs in it, as whole words),
    ``matched`` (which answer did: the hit explained) and RWKU's score, ROUGE-L recall against the best answer."""
    from ..scoring.metrics import rouge_l_recall

    rows = []
    for p, g in zip(probes, generations):
        matched = answer_match(g, p.answers)
        rows.append({**p.to_dict(), "prompt": probe_question(p), "generation": g, "hit": matched is not None,
                     "matched": matched, "rougeL_recall": max(rouge_l_recall(g, a) for a in p.answers)})
    return rows


def set_metrics(name: str, rows: list[dict]) -> dict[str, float]:
    """``{name}_accuracy`` (share of hits), ``{name}_rougeL`` (mean ROUGE-L recall) and ``{name}_silent`` (share of
    answers without a word, ``is_silent``) of a probe set."""
    if not rows:
        return {}
    return {f"{name}_accuracy": sum(r["hit"] for r in rows) / len(rows),
            f"{name}_rougeL": sum(r["rougeL_recall"] for r in rows) / len(rows),
            f"{name}_silent": sum(is_silent(r["generation"]) for r in rows) / len(rows)}


def is_silent(generation: str) -> bool:
    """An answer without a single word (the model stopped at once, or wrote only punctuation): a miss that shows no
    forgetting, only a model that stopped answering; the tables count it apart (``{set}_silent``)."""
    return not re.search(r"\w", generation)


def probe_sets(target: RealTarget, rwset: RealWorldSet) -> dict[str, list[Probe]]:
    """The audit's probe sets for one target: forget (every kind), neighbour, utility (general knowledge)."""
    return {"forget": target.forget_probes(), "neighbor": target.neighbor_probes(), "utility": list(rwset.general)}


def audit_probes(model, tok, sets: dict[str, list[Probe]], gen: GenSettings | None = None) -> dict:
    """Ask every probe set; return ``{"metrics", "per_item"}`` with per-kind forget metrics too."""
    gen = gen or GenSettings()
    flat = [(name, p) for name, ps in sets.items() for p in ps]
    gens = answer_probes(model, tok, [p for _, p in flat], gen.probe_tokens, gen.batch_size)
    per_item: dict[str, list[dict]] = {name: [] for name in sets}
    for (name, p), row in zip(flat, score_rows([p for _, p in flat], gens)):
        per_item[name].append(row)
    return {"metrics": metrics_of(per_item), "per_item": per_item}


def metrics_of(per_item: dict[str, list[dict]]) -> dict[str, float]:
    """Every probe set's metrics, and the forget set's per kind (``FORGET_KINDS``)."""
    metrics: dict[str, float] = {}
    for name, rows in per_item.items():
        metrics.update(set_metrics(name, rows))
        if name == "forget":
            for kind in FORGET_KINDS:
                metrics.update(set_metrics(f"forget_{kind}", [r for r in rows if r["kind"] == kind]))
    return metrics


def trim_to_sentence(text: str) -> str:
    """Cut a generation cut off by the token limit back to its last full sentence (if that keeps half of it)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    if ends and ends[-1] < len(text) and ends[-1] >= len(text) // 2:
        return text[:ends[-1]]
    return text


REAL_DIRECTIONS = {"forget_accuracy": "lower", "forget_rougeL": "lower", "neighbor_accuracy": "higher",
                   "neighbor_rougeL": "higher", "utility_accuracy": "higher", "utility_rougeL": "higher",
                   **{f"forget_{k}_{m}": "lower" for k in FORGET_KINDS for m in ("accuracy", "rougeL")}}


def build_real_report(tgt: RealTarget, before: dict, after: dict, counts: dict, ratios: dict, corpora: dict,
                      config: dict, timing: dict) -> dict:
    """report.json of a real-target run, in the shape of ``report.summary.build_report`` (``metrics`` of the unlearned
    model, ``compare.before``, ``per_item``, ``directions``, ``config``, ``versions``) plus the probe counts, the
    after/before ratios and the corpora the model wrote."""
    from ..report.summary import build_report

    result = {"metrics": {**after["metrics"], **ratios}, "per_item": after["per_item"], "raw": {},
              "cost": {"seconds": timing.get("total_s"), **timing}}
    rep = build_report(result, config, {"before": {**before, "raw": {}}}, model_name="after")
    rep["directions"] = {**rep.get("directions", {}), **REAL_DIRECTIONS}
    rep["scenario"] = {"target": tgt.name, "kind": tgt.kind, "intro": tgt.intro, "neighbors": tgt.neighbors,
                       "retain_entities": tgt.retain_entities, "probes": counts,
                       "note": "metrics are over the probes the starting model answered (before = 1.0 by construction); "
                               "*_accuracy_all_probes is the starting model's accuracy over every probe asked"}
    rep["corpora"] = {k: [dataclasses.asdict(it) for it in v] for k, v in corpora.items()}
    return rep


def format_real_table(report: dict) -> str:
    """The before/after table: one row per probe set, accuracy and ROUGE-L recall, and after/before."""
    b, a = report["compare"]["before"], report["metrics"]
    probes = report["scenario"]["probes"]
    rows = [("forget (all kinds)", "forget"), *((f"  {k}", f"forget_{k}") for k in FORGET_KINDS),
            ("neighbour", "neighbor"), ("utility (general)", "utility")]
    head = ["probe set", "probes", "acc before", "acc after", "after/before", "rougeL before", "rougeL after",
            "silent after", "better"]
    lines = []
    for label, key in rows:
        if f"{key}_accuracy" not in b:
            continue
        n = probes.get(key, {}).get("known") if key in probes else \
            sum(1 for r in report["compare_per_item"].get("before", {}).get("forget", []) if r.get("kind") ==
                key.split("_", 1)[1])
        ab, aa = b[f"{key}_accuracy"], a.get(f"{key}_accuracy")
        ratio = aa / ab if (aa is not None and ab) else float("nan")
        lines.append([label, str(n), f"{ab:.3f}", "-" if aa is None else f"{aa:.3f}", f"{ratio:.2f}",
                      f"{b.get(f'{key}_rougeL', float('nan')):.3f}", f"{a.get(f'{key}_rougeL', float('nan')):.3f}",
                      f"{a[f'{key}_silent']:.2f}" if f"{key}_silent" in a else "-",
                      "lower" if key.startswith("forget") else "higher"])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    sc = report["scenario"]
    title = (f"target: {sc['target']}   method: {report['config']['method']}   probes the starting model answered: "
             + ", ".join(f"{k} {v['known']}/{v['asked']}" for k, v in probes.items()))
    return "\n".join([title, fmt(head), "  ".join("-" * w for w in widths), *(fmt(r) for r in lines)])


__all__ = ["GenSettings", "REAL_METHOD", "REAL_MODEL", "REAL_TARGET", "REAL_TRAIN", "answer_probes",
           "audit_probes", "format_real_table", "is_silent", "score_rows", "set_metrics", "trim_to_sentence"]
