"""Anchored decoding: the per-step constrained mixture against a hand grid search, the budget allocation replayed by
hand, the end points (safe / risky greedy), the copying metrics by hand, and the copying-utility curve on tiny models
(risky = fine-tuned on the forget texts, safe = the oracle that never saw them)."""

import copy
import math

import pytest
import torch
from conftest import perturbed_copy

from obliviate.audit.anchored import copying_curve, longest_common_substring, ngram_overlap, words
from obliviate.data import PromptFormat
from obliviate.errors import ConfigError
from obliviate.scoring.anchored import anchored_generate, constrained_weight


def hand_kl_of_mix(zr, zs, w):
    """KL(p_w || p_s) with p_w proportional to p_s^(1-w) p_r^w, by loops over the vocabulary."""
    ls = [v - math.log(sum(math.exp(u) for u in zs)) for v in zs]
    lr = [v - math.log(sum(math.exp(u) for u in zr)) for v in zr]
    mixed = [(1 - w) * a + w * b for a, b in zip(ls, lr)]
    norm = math.log(sum(math.exp(m) for m in mixed))
    lw = [m - norm for m in mixed]
    return sum(math.exp(a) * (a - b) for a, b in zip(lw, ls))


@pytest.mark.parametrize("limit", [0.0, 0.01, 0.1, 0.5, 100.0])
def test_constrained_weight_is_the_largest_feasible_mixture(limit):
    g = torch.Generator().manual_seed(4)
    zr, zs = torch.randn(7, generator=g) * 3, torch.randn(7, generator=g) * 3
    w, spent = constrained_weight(torch.log_softmax(zr.double(), 0), torch.log_softmax(zs.double(), 0), limit)
    grid = [i / 2000 for i in range(2001)]
    feasible = [x for x in grid if hand_kl_of_mix(zr.tolist(), zs.tolist(), x) <= limit + 1e-12]
    assert spent <= limit + 1e-12
    assert spent == pytest.approx(hand_kl_of_mix(zr.tolist(), zs.tolist(), w), abs=1e-9)
    assert w == pytest.approx(max(feasible), abs=1 / 2000)
    if limit == 100.0:
        assert w == 1.0


def test_budget_is_allocated_over_the_steps_and_never_exceeded(random_model, small_bench):
    safe, tok = random_model
    risky = perturbed_copy(safe, 0.05)
    prompt = PromptFormat(tok).prompt_ids(small_bench.forget[0].question)
    budget, n = 0.3, 6
    out = anchored_generate(risky, safe, tok, [prompt], budget, max_new_tokens=n)[0]
    spent, seq = 0.0, list(prompt)
    for t, (token, w) in enumerate(zip(out["ids"], out["weights"])):
        with torch.no_grad():
            zr = risky(input_ids=torch.tensor([seq])).logits[0, -1].double().tolist()
            zs = safe(input_ids=torch.tensor([seq])).logits[0, -1].double().tolist()
        limit = (budget - spent) / (n - t)
        step = hand_kl_of_mix(zr, zs, w)
        assert step <= limit + 1e-9
        if w < 1:  # a little more of the risky model would break the step's limit
            assert hand_kl_of_mix(zr, zs, min(1.0, w + 1e-3)) > limit
        ls = [(1 - w) * a + w * b for a, b in zip(zs, zr)]
        assert token == max(range(len(ls)), key=ls.__getitem__)
        spent += step
        seq.append(token)
    assert out["spent"] == pytest.approx(spent, abs=1e-9) and spent <= budget + 1e-9


def test_zero_budget_is_the_safe_model_and_no_limit_the_risky_one(random_model, small_bench):
    safe, tok = random_model
    risky = perturbed_copy(safe, 0.2)
    prompt = PromptFormat(tok).prompt_ids(small_bench.forget[1].question)
    for model, budget in ((safe, 0.0), (risky, math.inf)):
        want = copy.deepcopy(model).generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                                             pad_token_id=tok.pad_token_id, eos_token_id=None)[0, len(prompt):]
        got = anchored_generate(risky, safe, tok, [prompt], budget, max_new_tokens=8)[0]["ids"]
        assert got == want.tolist()[:len(got)] and len(got) >= 1
    with pytest.raises(ConfigError, match="budget"):
        anchored_generate(risky, safe, tok, [prompt], -1.0)


def test_copying_metrics_by_hand():
    g, r = words("The cat sat on the mat today"), words("a cat sat on the mat, then left")
    assert longest_common_substring(g, r) == 5  # cat sat on the mat
    # 3-grams of g: the cat sat / cat sat on / sat on the / on the mat / the mat today -> 3 of 5 occur in r
    assert ngram_overlap(g, r, 3) == pytest.approx(3 / 5)
    assert ngram_overlap(["one"], r, 3) == 0.0
    assert longest_common_substring([], r) == 0


def test_copying_falls_with_the_budget_while_utility_stays(trained_models, small_bench):
    from obliviate.models import load_model

    risky, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    safe, _ = load_model(trained_models["oracle"], dtype="fp32", device="cpu")
    rows = copying_curve(risky, safe, tok, small_bench.forget[:6], small_bench.retain_eval[:6], [0.0, 8.0, math.inf],
                         max_new_tokens=16)
    for row in rows:
        print({k: round(v, 3) for k, v in row.items()})
    lcs = [r["lcs"] for r in rows]
    overlap = [r["overlap"] for r in rows]
    assert lcs[2] >= lcs[0] + 3 and overlap[2] >= overlap[0] + 0.5  # the risky model copies, the safe one does not
    assert lcs[0] <= lcs[1] <= lcs[2] and overlap[0] <= overlap[1] <= overlap[2]
    assert all(r["utility"] >= 0.9 for r in rows)  # what both models know survives every budget
    assert rows[1]["spent"] <= 8.0 and rows[0]["spent"] == pytest.approx(0.0, abs=1e-9)


def test_generate_command_anchored_and_bad_budget(trained_models, small_bench, capsys):
    from obliviate.cli import main

    q = small_bench.forget[0].question
    common = ["generate", "--model", str(trained_models["target"]), "--prompt", q, "--max-new-tokens", "12"]
    assert main(common) == 0
    plain = capsys.readouterr().out
    assert main(common + ["--anchored", str(trained_models["oracle"]), "--budget", "0"]) == 0
    anchored = capsys.readouterr().out
    assert small_bench.forget[0].answer.split()[-1].strip(".") in plain  # the risky model copies its answer
    assert "KL spent 0.000 of 0.0" in anchored and anchored.split("\n")[1] != plain.split("\n")[1]
    assert main(common + ["--anchored", str(trained_models["oracle"]), "--budget", "nan"]) == 2
    assert "--budget a number >= 0" in capsys.readouterr().err
