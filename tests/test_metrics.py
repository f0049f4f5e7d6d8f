"""Every audit metric against a computation written out by hand on fixed numbers."""

import math

import numpy as np
import pytest

from obliviate.scoring import metrics as M

LP_TRUE = [-0.1, -0.2, -0.3]          # mean -0.2
LP_PERT = [[-1.0, -2.0], [-3.0]]      # means -1.5 and -3.0 -> mean of means -2.25


def test_answer_prob_is_geometric_mean_token_probability():
    probs = [0.9, 0.5, 0.8]
    assert M.answer_prob(np.log(probs)) == pytest.approx((0.9 * 0.5 * 0.8) ** (1 / 3), rel=1e-12)


def test_truth_ratio_both_definitions():
    p_true = math.exp(-0.2)
    p_false = math.exp(-2.25)  # geometric mean of the perturbed answers' geometric-mean probabilities
    assert M.truth_ratio(LP_TRUE, LP_PERT) == pytest.approx(p_false / p_true, rel=1e-12)
    assert M.truth_ratio_prob(LP_TRUE, LP_PERT) == pytest.approx(p_true / (p_true + p_false), rel=1e-12)


def test_truth_ratio_aggregations():
    tr = [0.5, 2.0, 1.0, 4.0]
    # forget: mean of min(TR, 1/TR)
    assert M.aggregate_truth_ratio(tr, "forget") == pytest.approx((0.5 + 0.5 + 1.0 + 0.25) / 4)
    # retain / utility splits: mean of max(0, 1 - TR)
    assert M.aggregate_truth_ratio(tr, "retain") == pytest.approx((0.5 + 0 + 0 + 0) / 4)


def test_prob_normalised():
    p_c = math.exp(-0.2)
    p_w = math.exp(-1.5) + math.exp(-3.0)
    assert M.prob_normalised(LP_TRUE, LP_PERT) == pytest.approx(p_c / (p_c + p_w), rel=1e-8)


def test_rouge_l_recall_by_longest_common_subsequence():
    # reference has 6 tokens; the LCS with the generation is "the cat on the mat" = 5 tokens
    ref = "the cat sat on the mat"
    gen = "the cat lay on the mat today"
    assert M.rouge_l_recall(gen, ref) == pytest.approx(5 / 6)
    assert M.rouge_l_recall("", ref) == 0.0
    assert M.rouge_l_recall(ref, ref) == 1.0


@pytest.mark.parametrize("hits,es,em", [
    ([True, True, True, True], 1.0, 1.0),
    ([False, True, True, True], 0.75, 0.75),    # suffix from k*=1 matches: 1 - 1/4
    ([True, False, True, True], 0.5, 0.75),     # k*=2
    ([True, True, True, False], 0.0, 0.75),     # no suffix matches: 0, not the anchor's 1/N
])
def test_extraction_strength_and_exact_memorization(hits, es, em):
    assert M.extraction_strength(hits) == pytest.approx(es)
    assert M.exact_memorization(hits) == pytest.approx(em)


def test_min_k_takes_the_lowest_fraction():
    lp = [-0.1, -5.0, -0.3, -2.0, -0.2]
    # k=0.4 of 5 tokens -> the 2 lowest: -5.0 and -2.0
    assert M.min_k_score(lp, 0.4) == pytest.approx(3.5)
    # at least one token
    assert M.min_k_score([-0.7, -0.1], 0.1) == pytest.approx(0.7)


def test_mia_auc_counts_correctly_ordered_pairs():
    forget = [0.1, 0.4, 0.35]     # members: low scores
    holdout = [0.8, 0.3]          # non-members
    # pairs (f, h) with h > f: 0.8 beats all 3; 0.3 beats 0.1 only -> 4 of 6
    assert M.mia_auc(forget, holdout) == pytest.approx(4 / 6)


def test_privleak():
    assert M.privleak(1.0, 0.5) == pytest.approx(-100, abs=1e-6)
    assert M.privleak(0.5, 0.5) == pytest.approx(0, abs=1e-9)
    assert M.privleak(0.4, 0.6) == pytest.approx((0.6 - 0.4) / 0.4 * 100, rel=1e-6)


def test_forget_quality_exact_ks_p_values():
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert M.forget_quality(a, a) == pytest.approx(1.0)
    # fully separated samples of 5 and 5: exact two-sided p = 2 / C(10, 5)
    assert M.forget_quality(a, [1.1, 1.2, 1.3, 1.4, 1.5]) == pytest.approx(2 / math.comb(10, 5), rel=1e-9)


def test_model_utility_is_the_harmonic_mean():
    vals = [0.5, 0.25, 1.0]
    assert M.model_utility(vals) == pytest.approx(3 / (2 + 4 + 1))
    assert M.model_utility([0.5, 0.0]) == 0.0
