"""MUSE's evaluation (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation"), under MUSE's metric names.

* ``verbmem_f``: each ``verbmem/forget`` prompt is continued greedily for up to ``verbmem_tokens`` (128) tokens; the
  continuation's ROUGE-L **recall** against ``gt``, averaged (muse_bench's ``eval.py``; open-unlearning reports F1,
  kept here as ``verbmem_f_f1``). No verbatim memorisation: the unlearned model should sit near the retrained one.
* ``knowmem_f`` / ``knowmem_r``: each ``knowmem/{forget,retain}_qa`` question is asked after all of the matching
  ``*_qa_icl`` examples, as plain text (``Question: ...\\nAnswer: ...`` blocks joined by a blank line, then
  ``Question: {q}\\nAnswer:``); a greedy answer of up to 32 tokens, cut at MUSE's stop strings (``\\n\\n``,
  ``\\nQuestion``, ``Question:``), scored by ROUGE-L recall against the answer. Forget: low; retain: kept (utility).
* ``privleak``: Min-K% (k = 0.4) scores of every ``privleak/forget`` text (members) and ``privleak/holdout`` text
  (never trained); ROC-AUC with members labelled 0 and "higher = less likely a member" (about 1 for a memorising
  model, about 0.5 for one that cannot tell them apart), then MUSE's gap to the retrained model,
  ``((1 - AUC) - (1 - AUC_retrain)) / (1 - AUC_retrain) * 100`` (``metrics.privleak``): about -100 when forget texts are
  still recognisable, about 0 for the oracle, positive when over-unlearned.

``muse_audit`` audits one model; ``muse_table`` puts several side by side with privleak against the oracle's AUC.
"""

from __future__ import annotations

import numpy as np

from ..data.muse import MuseData
from ..data.records import QAItem
from ..scoring import metrics as M
from .mia import score_documents
from .probes import generate_from_ids

STOP = ("\n\n", "\nQuestion", "Question:")
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc", "privleak")


def cut_at_stop(text: str, stops: tuple[str, ...] = STOP) -> str:
    """``text`` up to the first of MUSE's stop strings, stripped."""
    end = min([i for i in (text.find(s) for s in stops) if i >= 0], default=len(text))
    return text[:end].strip()


def icl_prompt(question: str, examples: list[QAItem]) -> str:
    """MUSE's knowmem prompt: the in-context examples, then the question, as plain text."""
    blocks = [f"Question: {ex.question}\nAnswer: {ex.answer}" for ex in examples]
    return "\n\n".join([*blocks, f"Question: {question}\nAnswer:"])


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    was_training = model.training
    model.eval()
    try:
        return generate_from_ids(model, tokenizer, ids, batch_size, max_new_tokens)
    finally:
        model.train(was_training)


def verbmem_f(model, tokenizer, cases: list[dict], max_new_tokens: int = 128, batch_size: int = 16) -> dict:
    """Greedy continuation of each ``{prompt, gt}``; mean ROUGE-L recall (and F1) against ``gt``."""
    gens = _generate(model, tokenizer, [c["prompt"] for c in cases], max_new_tokens, batch_size)
    rows = [{"id": c.get("id"), "generation": g, "recall": M.rouge_l_recall(g, c["gt"]),
             "f1": M.rouge_l_f1(g, c["gt"])} for c, g in zip(cases, gens)]
    return {"recall": _mean(rows, "recall"), "f1": _mean(rows, "f1"), "per_item": rows}


def knowmem(model, tokenizer, items: list[QAItem], icl: list[QAItem], max_new_tokens: int = 32,
            batch_size: int = 16) -> dict:
    """Each question after the in-context examples; mean ROUGE-L recall of the (stop-cut) answer."""
    gens = _generate(model, tokenizer, [icl_prompt(it.question, icl) for it in items], max_new_tokens, batch_size)
    rows = [{"id": it.id, "question": it.question, "answer": it.answer, "generation": cut_at_stop(g),
             "recall": M.rouge_l_recall(cut_at_stop(g), it.answer)} for it, g in zip(items, gens)]
    return {"recall": _mean(rows, "recall"), "per_item": rows}


def privleak_auc(model, tokenizer, members, nonmembers, k: float = 0.4, max_length: int = 512,
                 batch_size: int = 8) -> float:
    """ROC-AUC of Min-K% scores, members (label 0) against non-members (label 1)."""
    m = [r["mink_score"] for r in score_documents(model, tokenizer, members, max_length, batch_size, k)]
    n = [r["mink_score"] for r in score_documents(model, tokenizer, nonmembers, max_length, batch_size, k)]
    return M.mia_auc(m, n)


def muse_audit(model, tokenizer, data: MuseData, verbmem_tokens: int = 128, knowmem_tokens: int = 32,
               k: float = 0.4, max_length: int = 512, batch_size: int = 16) -> dict:
    """MUSE's metrics of one model on what ``data`` holds (a part whose files are absent is left out).

    ``privleak`` itself needs the retrained model's AUC: ``muse_table`` (or ``with_privleak``) adds it."""
    out: dict = {"per_item": {}}
    if data.verbmem:
        r = verbmem_f(model, tokenizer, data.verbmem, verbmem_tokens, batch_size)
        out["verbmem_f"], out["verbmem_f_f1"], out["per_item"]["verbmem_f"] = r["recall"], r["f1"], r["per_item"]
    for name, items, icl in (("knowmem_f", data.knowmem_forget, data.knowmem_forget_icl),
                             ("knowmem_r", data.knowmem_retain, data.knowmem_retain_icl)):
        if items:
            r = knowmem(model, tokenizer, items, icl, knowmem_tokens, batch_size)
            out[name], out["per_item"][name] = r["recall"], r["per_item"]
    members, nonmembers = data.privleak.get("forget") or data.forget, data.privleak.get("holdout") or data.holdout
    if members and nonmembers:
        out["privleak_auc"] = privleak_auc(model, tokenizer, members, nonmembers, k, max_length, batch_size)
    return out


def with_privleak(result: dict, retrain_auc: float) -> dict:
    """``result`` with MUSE's privleak against the retrained model's AUC."""
    if "privleak_auc" in result:
        result = {**result, "privleak": M.privleak(result["privleak_auc"], retrain_auc)}
    return result


def muse_table(results: dict[str, dict], oracle: str = "oracle") -> dict[str, dict]:
    """Every model's metrics, privleak measured against ``results[oracle]``'s AUC (the oracle itself scores 0)."""
    ref = results.get(oracle, {}).get("privleak_auc")
    return {name: {k: v for k, v in (with_privleak(r, ref) if ref is not None else r).items() if k in METRICS}
            for name, r in results.items()}


def format_muse_table(table: dict[str, dict]) -> str:
    """A plain-text table: one row per model, MUSE's metrics as columns."""
    cols = [c for c in METRICS if any(c in row for row in table.values())]
    width = max([len(n) for n in table] + [5])
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>12}" for c in cols)]
    for name, row in table.items():
        cells = [f"{row[c]:>12.3f}" if c in row else f"{'-':>12}" for c in cols]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")
