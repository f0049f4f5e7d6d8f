"""Every audit metric as a pure function of numbers: per-token log-probs, argmax hits, generations.

The formulas follow TOFU and open-unlearning (names and aggregations as there). Where the two protocols differ, a
``protocol`` argument chooses (``docs/metrics.md`` has the table and the reasons):

* ``"obliviate"`` keeps the final (EOS) prediction in every per-token score, as the answer probability does (whether
  the model ends the answer there is part of what it memorised); extraction strength is 0, not 1/N, when not even
  the last token is reproduced; the truth ratio is the exact ratio P_false / P_true, computed in log space.
* ``"open-unlearning"`` leaves the final prediction out of Min-K, Min-K++, exact memorisation and extraction
  strength, floors extraction strength at 1/N (its loop stops at k = N - 1), and adds its epsilons:
  TR = P_false / (P_true + 1e-10), TR' = P_true / (P_true + P_false + 1e-10), min(TR, 1 / (TR + 1e-10)).

Every function here is safe at any magnitude: a log-gap of thousands of nats gives a finite (or exactly 0) value,
never an exception.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

EPS = 1e-10
OBLIVIATE, OPEN_UNLEARNING = "obliviate", "open-unlearning"
MAX_LOG = 700.0  # exp(700) ~ 1e304: the largest exponent taken, so no ratio overflows a float


def per_token(values: Sequence, protocol: str = OBLIVIATE):
    """The per-token values a token-level score uses: all of them, or, under open-unlearning, all but the last (the
    prediction of EOS)."""
    return values[:-1] if protocol == OPEN_UNLEARNING else values


def _exp(x: float) -> float:
    return math.exp(min(max(x, -MAX_LOG), MAX_LOG))


def mean_logprob(lp: Sequence[float]) -> float:
    return float(np.mean(lp)) if len(lp) else float("nan")


def answer_prob(lp: Sequence[float]) -> float:
    """Geometric-mean token probability of an answer: exp(mean log p), TOFU's Q_A_Prob for one item."""
    return math.exp(mean_logprob(lp))


def truth_ratio(lp_true: Sequence[float], lp_perturbed: Sequence[Sequence[float]], protocol: str = OBLIVIATE) -> float:
    """TOFU's truth ratio P_false / P_true.

    P_true = exp(mean log p) of the correct (paraphrased) answer; P_false = exp(mean_j mean log p(perturbed_j)), the
    geometric mean over perturbed answers of their geometric-mean token probabilities. obliviate computes the ratio
    in log space (exact whatever the magnitudes; the exponent is clipped at +-700 so it stays a finite float);
    open-unlearning computes P_false / (P_true + 1e-10), which caps the ratio near P_false * 1e10 when P_true
    vanishes.
    """
    log_false = float(np.mean([mean_logprob(lp) for lp in lp_perturbed]))
    if protocol == OPEN_UNLEARNING:
        return math.exp(log_false) / (math.exp(mean_logprob(lp_true)) + EPS)
    return _exp(log_false - mean_logprob(lp_true))


def truth_ratio_prob(lp_true: Sequence[float], lp_perturbed: Sequence[Sequence[float]],
                     protocol: str = OBLIVIATE) -> float:
    """The OpenUnlearning paper's truth ratio: P_true / (P_true + P_false), in [0, 1]; higher = more true knowledge.

    obliviate: 1 / (1 + P_false / P_true), defined even when both probabilities underflow; open-unlearning:
    P_true / (P_true + P_false + 1e-10)."""
    if protocol == OPEN_UNLEARNING:
        p_true = math.exp(mean_logprob(lp_true))
        p_false = math.exp(float(np.mean([mean_logprob(lp) for lp in lp_perturbed])))
        return p_true / (p_true + p_false + EPS)
    return 1.0 / (1.0 + truth_ratio(lp_true, lp_perturbed))


def aggregate_truth_ratio(tr: Sequence[float], split: str, protocol: str = OBLIVIATE) -> float:
    """TOFU's aggregation: forget -> mean min(TR, 1/TR) (closer to 1 is better); other splits -> mean max(0, 1 - TR).

    open-unlearning writes 1 / (TR + 1e-10) for 1/TR."""
    tr = np.asarray(tr, dtype=float)
    if split == "forget":
        inverse = 1.0 / (tr + EPS) if protocol == OPEN_UNLEARNING else 1.0 / np.maximum(tr, EPS)
        return float(np.mean(np.minimum(tr, inverse)))
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def prob_normalised(lp_true: Sequence[float], lp_perturbed: Sequence[Sequence[float]]) -> float:
    """p_correct / (p_correct + sum_j p_wrong_j), with p the geometric-mean token probability (TOFU's ra/wf Prob)."""
    p_c = answer_prob(lp_true)
    return p_c / (p_c + sum(answer_prob(lp) for lp in lp_perturbed) + EPS)


_ROUGE = None


class RougeTokenizer:
    """rouge-score's default tokenizer with ``use_stemmer=True`` (lower case, alphanumeric words, the Porter stem of
    each word over three letters), each word's stem computed once per process.

    The Porter stemmer is a pure function of the word and most of ROUGE's time (``docs/performance.md``): an audit's
    references and generations repeat the same words over and over. The tokens are those of
    ``rouge_score.tokenizers.DefaultTokenizer(use_stemmer=True)``, so every score is unchanged."""

    def __init__(self):
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, self)


def _rouge():
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())
    return _ROUGE


def rouge_l_recall(generation: str, reference: str) -> float:
    """ROUGE-L recall of a generation against the reference answer (rouge-score, Porter stemmer), as TOFU reports."""
    return float(_rouge().score(reference, generation)["rougeL"].recall)


def exact_memorization(hits: Sequence[bool], protocol: str = OBLIVIATE) -> float:
    """Fraction of answer tokens that are the teacher-forced argmax prediction (open-unlearning: EOS left out)."""
    hits = per_token(hits, protocol)
    return float(np.mean(hits)) if len(hits) else float("nan")


def extraction_strength(hits: Sequence[bool], protocol: str = OBLIVIATE) -> float:
    """1 - k*/N, with k* the smallest k such that every answer token from k on is the teacher-forced argmax.

    obliviate: k* = N (so 0) when not even the last token is predicted. open-unlearning: the EOS prediction is left
    out, and k* stops at N - 1, so an answer with no reproduced suffix scores 1/N.
    """
    hits = per_token(hits, protocol)
    n = len(hits)
    if not n:
        return 0.0 if protocol == OPEN_UNLEARNING else float("nan")
    k = n
    while k > 0 and hits[k - 1]:
        k -= 1
    if protocol == OPEN_UNLEARNING:
        k = min(k, n - 1)
    return 1.0 - k / n


def min_k_score(lp: Sequence[float], k: float = 0.4, protocol: str = OBLIVIATE) -> float:
    """Min-K% membership score: minus the mean of the lowest floor(k*N) (at least one) token log-probs.

    Signed like open-unlearning: higher means *less* likely a member. open-unlearning leaves the EOS prediction out
    and scores an answer with no tokens left 0."""
    lp = np.sort(np.asarray(per_token(lp, protocol), dtype=float))
    if not len(lp):
        return 0.0
    m = max(1, int(k * len(lp)))
    return float(-np.mean(lp[:m]))


def min_k_pp_score(z: Sequence[float], k: float = 0.4, protocol: str = OBLIVIATE) -> float:
    """Min-K%++: minus the mean of the lowest k fraction of z_t = (log p(x_t) - mu_t) / sigma_t."""
    return min_k_score(z, k, protocol)


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC-AUC with forget items labelled 0 and holdout items 1, scores signed 'higher = less likely a member'.

    Near 1 when the model tells its training items (forget) from unseen ones (holdout); 0.5 when it cannot.
    """
    from sklearn.metrics import roc_auc_score

    labels = [0] * len(forget_scores) + [1] * len(holdout_scores)
    return float(roc_auc_score(labels, list(forget_scores) + list(holdout_scores)))


def privleak(auc: float, auc_ref: float = 0.5) -> float:
    """MUSE's privleak: ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) * 100; about -100 for a memorising model, 0 for the
    oracle, positive for over-unlearning."""
    return ((1 - auc) - (1 - auc_ref)) / ((1 - auc_ref) + EPS) * 100


def forget_quality(tr_model: Sequence[float], tr_oracle: Sequence[float]) -> float:
    """TOFU's forget quality: the KS-test p-value between the forget truth ratios of the model and of the oracle."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(tr_model, float), np.asarray(tr_oracle, float)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the utility metrics (TOFU: retain, real-authors and world-facts prob, ROUGE and truth ratio)."""
    from scipy.stats import hmean

    values = [float(v) for v in values]
    if any(v <= 0 for v in values):
        return 0.0
    return float(hmean(values))


# --- membership inference, relearning, memorisation (added for the certification battery) -----------------------------

def loss_score(lp: Sequence[float]) -> float:
    """LOSS attack: the mean token NLL of the target text. Higher = less likely a member (open-unlearning's sign)."""
    return -mean_logprob(lp)


def zlib_score(lp: Sequence[float], text: str) -> float:
    """zlib attack: mean token NLL divided by the length in bytes of the zlib-compressed target text."""
    import zlib

    return loss_score(lp) / len(zlib.compress(text.encode("utf-8")))


def reference_score(lp: Sequence[float], lp_reference: Sequence[float]) -> float:
    """Reference attack: mean NLL under the audited model minus mean NLL under a reference model on the same text."""
    return loss_score(lp) - loss_score(lp_reference)


def tpr_at_fpr(member_scores: Sequence[float], nonmember_scores: Sequence[float], fpr: float = 0.01) -> float:
    """The largest fraction of members flagged by a threshold that flags at most ``fpr`` of non-members.

    Scores are signed 'higher = less likely a member' (as every attack here); a sample is flagged when its score is at
    most the threshold. With n non-members, a 1% FPR allows floor(0.01 n) false positives (none below 100).
    """
    members = np.asarray(member_scores, float)
    non = np.asarray(nonmember_scores, float)
    if not len(members) or not len(non):
        return float("nan")
    best = 0.0
    for t in np.unique(np.concatenate([members, non])):
        if np.mean(non <= t) <= fpr:
            best = max(best, float(np.mean(members <= t)))
    return best


def rouge_l_f1(generation: str, reference: str) -> float:
    """ROUGE-L F1 of a generation against the reference (rouge-score, Porter stemmer), as MUSE reports."""
    return float(_rouge().score(reference, generation)["rougeL"].fmeasure)


def recovery_rate(after: float, unlearned: float, original: float) -> float:
    """Relearning recovery R = (after - unlearned) / (original - unlearned): 0 = nothing came back, 1 = all of it."""
    gap = original - unlearned
    return float("nan") if abs(gap) < EPS else (after - unlearned) / gap
