"""Worst-case forget sets (audit.worstcase): the capped-simplex projection against an exact hand solution, the upper
step, the weighted lower level on the tiny target, and the whole selection + comparison end to end."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from obliviate.audit.worstcase import (
    WeightedMethod,
    WorstCaseConfig,
    binarize,
    compare_sets,
    item_nll,
    project_capped_simplex,
    upper_step,
)
from obliviate.errors import ConfigError
from obliviate.methods import make_method


def exact_projection(v, m):
    """Projection onto {w in [0,1]^N, sum w = m} by hand: s(mu) = sum clip(v - mu, 0, 1) is piecewise linear with
    breakpoints at v_i and v_i - 1; find the piece where it crosses m and solve the linear equation there."""
    v = [float(x) for x in v]
    s = lambda mu: sum(min(max(x - mu, 0.0), 1.0) for x in v)  # noqa: E731
    points = sorted(set(v + [x - 1 for x in v]))
    for a, b in zip(points, points[1:]):
        sa, sb = s(a), s(b)
        if sb <= m <= sa:
            mu = a if sa == sb else a + (sa - m) * (b - a) / (sa - sb)
            return [min(max(x - mu, 0.0), 1.0) for x in v]
    raise AssertionError("no crossing")


def test_projection_matches_exact_solution_and_is_closest():
    rng = np.random.default_rng(0)
    for n, m in [(5, 2), (8, 3), (6, 1), (7, 6)]:
        for _ in range(5):
            v = rng.normal(size=n) * 2
            w = project_capped_simplex(v, m)
            assert np.allclose(w, exact_projection(v, m), atol=1e-8)
            assert abs(w.sum() - m) < 1e-8 and w.min() >= 0 and w.max() <= 1
            d = sum((a - b) ** 2 for a, b in zip(w, v))
            for combo in itertools.combinations(range(n), m):  # vertices of S; mixtures of them are in S too
                u = np.zeros(n)
                u[list(combo)] = 1
                assert d <= sum((a - b) ** 2 for a, b in zip(u, v)) + 1e-9
    w = project_capped_simplex([0.3, 0.2, 0.5], 1)  # already feasible: unchanged
    assert np.allclose(w, [0.3, 0.2, 0.5])
    with pytest.raises(ConfigError):
        project_capped_simplex([0.1, 0.2], 3)


def test_upper_step_moves_weight_to_low_loss_items_and_flips_for_easiest():
    w = np.full(4, 0.5)
    g = np.array([1.0, 3.0, 2.0, 4.0])
    sd = math.sqrt(sum((x - 2.5) ** 2 for x in g) / 4)
    hard = upper_step(w, g, 2, 0.3, gamma=0.1)
    assert np.allclose(hard, exact_projection([0.5 - 0.3 * (x / sd + 2 * 0.1 * 0.5) for x in g], 2))
    assert hard[0] > hard[2] > hard[1] > hard[3]
    easy = upper_step(w, g, 2, 0.3, easiest=True)
    assert easy[3] > easy[1] > easy[2] > easy[0]
    assert binarize(hard, g, 2) == [0, 2] and binarize(easy, g, 2, easiest=True) == [1, 3]
    assert binarize(np.full(4, 0.5), g, 2) == [0, 2]  # ties: lowest loss first


def test_weighted_lower_level_scales_each_item(load_target, small_bench):
    """The wrapped loss of a one-item batch is the method's loss times scale x w_i (hand NLL), and a binary weight
    makes the lower level unlearn only the weighted items."""
    model, tok = load_target()
    items = small_bench.forget[:6]
    from obliviate.data import PromptFormat, pad_batch

    fmt = PromptFormat(tok)
    enc = fmt.encode(items[2].question, items[2].answer)
    batch = pad_batch([enc], tok.pad_token_id)
    batch["index"] = torch.tensor([2])
    w = [0, 0, 0.5, 1, 0, 0]
    wm = WeightedMethod(make_method("GradAscent"), w, 3.0)
    with torch.no_grad():
        loss, _ = wm.loss(model, {"forget": batch}, None)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
        labels = batch["labels"][0]
        nll = [-torch.log_softmax(logits[t - 1], -1)[labels[t]].item()
               for t in range(1, len(labels)) if labels[t] != -100]
    assert loss.item() == pytest.approx(-sum(nll) / len(nll) * 0.5 * 3.0, rel=1e-5)

    from obliviate.audit.worstcase import _unlearn

    before = item_nll(model, tok, items)
    mine = [sum(s) / len(s) for s in nll_by_hand(model, tok, items)]
    assert np.allclose(before, mine, atol=1e-4)
    weights = [1, 1, 1, 0, 0, 0]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        net = _unlearn(model, tok, WeightedMethod(make_method("GradAscent"), weights, 2.0), items, [], 3, 2e-3, 1, 6, 0,
                       Path(tmp))
    rise = item_nll(net, tok, items) - before
    assert rise[:3].mean() > 2 * abs(rise[3:].mean()) and rise[:3].mean() > 0.05
    with pytest.raises(ConfigError):
        WeightedMethod(make_method("TaskVector"), weights, 1.0)


def nll_by_hand(model, tok, items):
    from obliviate.data import PromptFormat

    fmt = PromptFormat(tok)
    out = []
    with torch.no_grad():
        for it in items:
            e = fmt.encode(it.question, it.answer)
            ids = torch.as_tensor(e.input_ids)[None]
            logits = model.eval()(input_ids=ids).logits[0]
            lab = list(e.labels)
            out.append([-torch.log_softmax(logits[t - 1], -1)[lab[t]].item()
                        for t in range(1, len(lab)) if lab[t] != -100])
    return out


def test_selection_and_comparison_end_to_end(trained_models, small_bench):
    from obliviate.models import load_model

    target, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    oracle, _ = load_model(trained_models["oracle"], dtype="fp32", device="cpu")
    cfg = WorstCaseConfig(size=3, iterations=3, lower_steps=3, eval_steps=5, n_random=3)
    r = compare_sets(target, oracle, tok, make_method("GradAscent"), small_bench.forget, small_bench.retain, cfg)
    sel = r["selection"]["worst"]
    assert len(sel["history"]) == 3 and len(sel["indices"]) == 3 and abs(sum(sel["weights"]) - 3) < 1e-6
    # the hardest set's upper objective falls, the easiest set's rises
    assert sel["history"][-1]["objective"] < sel["history"][0]["objective"]
    easy = r["selection"]["easiest"]["history"]
    assert easy[-1]["objective"] > easy[0]["objective"]
    assert set(r["sets"]) == {"worst", "easiest", "random0", "random1", "random2"}
    gaps = {k: v["prob_gap"] for k, v in r["sets"].items()}
    assert gaps["worst"] > gaps["easiest"]
    rand = np.mean([gaps[f"random{k}"] for k in range(3)])
    assert r["worst_minus_random"] == pytest.approx(gaps["worst"] - rand)
    s = r["sets"]["worst"]
    assert s["prob_gap"] == pytest.approx(s["prob_unlearned"] - s["prob_oracle"])
    with pytest.raises(ConfigError):
        WorstCaseConfig(size=10).validate(10)


def test_cli_refuses_bad_options_in_one_line(capsys, tmp_path):
    from obliviate.cli import main

    assert main(["worstcase", "--target", str(tmp_path)]) == 2
    assert main(["worstcase", "--size", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["path-dependence", "--unlearn-steps", "0", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["obliviate: error: worstcase: give both --target and --oracle, or neither",
                   "obliviate: error: worstcase: option 'size' = 0 must be at least 1",
                   "obliviate: error: path-dependence: batch sizes and 'unlearn_steps' must be >= 1, 'eval_every' and "
                   "'utility_size' >= 0"]
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()


def test_cli_worstcase_writes_its_files(trained_models, small_bench_dir, tmp_path, capsys):
    import json

    from obliviate.cli import main

    out = tmp_path / "wc"
    assert main(["worstcase", "--data", str(small_bench_dir), "--target", str(trained_models["target"]), "--oracle",
                 str(trained_models["oracle"]), "--methods", "GradAscent", "--size", "2", "--iterations", "1",
                 "--lower-steps", "1", "--eval-steps", "1", "--random-sets", "1", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "worstcase.json").read_text())["results"][0]
    assert res["method"] == "GradAscent" and set(res["sets"]) == {"worst", "easiest", "random0"}
    assert "| GradAscent |" in (out / "worstcase.md").read_text()
