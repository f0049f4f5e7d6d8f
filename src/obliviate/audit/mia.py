"""Membership inference: can an attacker tell the forget set (members) from the holdout set (never trained on)?

Six attacks, each a per-sample score signed "higher = less likely a member" (open-unlearning's convention):

==============  ========================================================================================================
``loss``        mean token NLL of the answer                                       (Yeom et al. 2018)
``zlib``        mean NLL / len(zlib.compress(answer text))                          (Carlini et al. 2021)
``min_k``       minus the mean of the lowest k fraction of token log-probs          (Shi et al. 2024; k = 0.4)
``min_k_pp``    the same on z_t = (log p(x_t) - mu_t) / sigma_t                     (Zhang et al. 2024, Min-K%++)
``gradnorm``    mean over parameter tensors of ||d NLL_mean / d theta||_2, one sample at a time (needs backward)
``reference``   mean NLL under the audited model minus mean NLL under a reference model (default: the oracle)
==============  ========================================================================================================

The first four, and the reference attack, come from the audit's one teacher-forced pass per split (``audit_model``'s
per-item rows hold the answer probability exp(mean log p) and the Min-K% / Min-K%++ scores); only the gradient norm
costs extra passes. Each attack gives a ROC-AUC (forget labelled 0, holdout 1, as ``metrics.mia_auc``), the TPR at 1%
FPR, and, against the oracle's AUC for the same attack, MUSE's privleak. For plain texts (RWKU's ``forget_mia`` /
``retain_mia``, MUSE's privleak sets) ``score_documents`` scores whole texts into rows of the same shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.collate import IGNORE, Encoded, PromptFormat, pad_batch
from ..data.records import Document, QAItem
from ..logprobs import forward_logits, nll_mean
from ..scoring import metrics as M
from ..scoring.passes import score_sequences

ATTACKS = ("loss", "zlib", "min_k", "min_k_pp", "gradnorm", "reference")


def _mean_lp(row: dict) -> list[float]:
    """A row keeps exp(mean log p); as a one-element list, its log has the same mean, so the formulas of ``metrics``
    (``loss_score``, ``zlib_score``, ``reference_score``) apply to rows unchanged."""
    return [math.log(row["prob"]) if row["prob"] > 0 else float("-inf")]


def row_scores(rows: list[dict], reference_rows: list[dict] | None = None) -> dict[str, list[float]]:
    """Attack scores from an audit's per-item rows (``prob``, ``mink_score``, ``minkpp_score``, ``target``).

    ``reference_rows`` (the same items audited on a reference model) add the ``reference`` attack.
    """
    out = {"loss": [M.loss_score(_mean_lp(r)) for r in rows],
           "zlib": [M.zlib_score(_mean_lp(r), r["target"].strip()) for r in rows],
           "min_k": [r["mink_score"] for r in rows],
           "min_k_pp": [r["minkpp_score"] for r in rows]}
    if reference_rows is not None:
        if len(reference_rows) != len(rows):
            raise ValueError(f"reference rows: {len(reference_rows)} items, audited rows: {len(rows)}")
        out["reference"] = [M.reference_score(_mean_lp(r), _mean_lp(ref)) for r, ref in zip(rows, reference_rows)]
    return out


def gradnorm_scores(model, fmt: PromptFormat, items: list[QAItem] | list[Encoded]) -> list[float]:
    """Per sample (batch of one): NLL_mean of the answer, backward, then the mean over parameter tensors of the L2 norm
    of their gradients. The model is left unchanged (gradients are cleared; eval mode, so no dropout)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    encs = [x if isinstance(x, Encoded) else fmt.encode(x.question, x.answer, where=f"item {i}")
            for i, x in enumerate(items)]
    out = []
    for enc in encs:
        batch = {k: v.to(device) for k, v in pad_batch([enc], fmt.tok.pad_token_id).items()}
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            nll_mean(forward_logits(model, batch), batch["labels"]).backward()
        norms = [p.grad.detach().float().norm(2).item() if p.grad is not None else 0.0 for p in params]
        out.append(float(np.mean(norms)))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return out


def attack_metrics(member: dict[str, list[float]], nonmember: dict[str, list[float]], fpr: float = 0.01) -> dict:
    """ROC-AUC and TPR at ``fpr`` of every attack present in both score sets."""
    out = {}
    for name in ATTACKS:
        if name in member and name in nonmember:
            out[name] = {"auc": M.mia_auc(member[name], nonmember[name]),
                         "tpr_at_fpr": M.tpr_at_fpr(member[name], nonmember[name], fpr)}
    return out


def mia_audit(result: dict, oracle: dict | None = None, reference: dict | None = None,
              gradnorm: tuple[list[float], list[float]] | None = None,
              oracle_gradnorm: tuple[list[float], list[float]] | None = None, fpr: float = 0.01) -> dict:
    """Every attack on forget vs holdout from ``audit_model`` results (and gradient norms, when computed).

    ``reference`` is the audit of the reference model (default ``oracle``); privleak of each attack is measured against
    the oracle's AUC for that attack, computed the same way (the oracle as its own reference scores 0.5).
    Returns ``{"attacks": {name: {"auc", "tpr_at_fpr", "privleak"?}}, "fpr": fpr}``.
    """
    reference = reference if reference is not None else oracle

    def scores(res, ref, grads):
        f_rows, h_rows = res["per_item"]["forget"], res["per_item"]["holdout"]
        f = row_scores(f_rows, ref["per_item"]["forget"] if ref else None)
        h = row_scores(h_rows, ref["per_item"]["holdout"] if ref else None)
        if grads is not None:
            f["gradnorm"], h["gradnorm"] = list(grads[0]), list(grads[1])
        return attack_metrics(f, h, fpr)

    attacks = scores(result, reference, gradnorm)
    if oracle is not None:
        ref_attacks = scores(oracle, reference, oracle_gradnorm)
        for name, a in attacks.items():
            if name in ref_attacks:
                a["privleak"] = M.privleak(a["auc"], ref_attacks[name]["auc"])
    return {"attacks": attacks, "fpr": fpr}


def score_documents(model, tokenizer, docs: list[Document] | list[str], max_length: int = 512, batch_size: int = 8,
                    k: float = 0.4) -> list[dict]:
    """Rows (``prob``, ``mink_score``, ``minkpp_score``, ``target``) for whole texts: every token after BOS a target."""
    encs = []
    for d in docs:
        text = d.text if isinstance(d, Document) else str(d)
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
        labels = list(ids)
        if ids and ids[0] == tokenizer.bos_token_id:
            labels[0] = IGNORE
        encs.append(Encoded(ids, labels, "", text, 0))
    was_training = model.training
    model.eval()
    scores = score_sequences(model, encs, tokenizer.pad_token_id, batch_size)
    model.train(was_training)
    return [{"prob": M.answer_prob(s.logprobs), "mink_score": M.min_k_score(s.logprobs, k),
             "minkpp_score": M.min_k_pp_score(s.zscores, k), "target": e.target} for s, e in zip(scores, encs)]


def document_mia(model, tokenizer, members: list, nonmembers: list, max_length: int = 512, batch_size: int = 8,
                 k: float = 0.4, fpr: float = 0.01) -> dict:
    """LOSS / zlib / Min-K% / Min-K%++ on member vs non-member texts (RWKU's forget_mia vs retain_mia): AUC, TPR at
    ``fpr`` and each set's mean score (RWKU reports the means)."""
    m = row_scores(score_documents(model, tokenizer, members, max_length, batch_size, k))
    n = row_scores(score_documents(model, tokenizer, nonmembers, max_length, batch_size, k))
    out = attack_metrics(m, n, fpr)
    for name in out:
        out[name]["member_mean"] = float(np.mean(m[name]))
        out[name]["nonmember_mean"] = float(np.mean(n[name]))
    return {"attacks": out, "fpr": fpr}
