"""Path dependence (audit.path_dependence): the forget log-likelihood and the spread against hand computations, the
orders, and three training orders of the tiny model unlearned with the same local method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from obliviate.audit.path_dependence import (
    PathConfig,
    default_orders,
    forget_ll,
    path_dependence,
    spread,
    utility,
    utility_items,
)
from obliviate.errors import ConfigError, DataError
from obliviate.methods import make_method


def hand_token_logprobs(model, tok, items):
    from obliviate.data import PromptFormat

    fmt = PromptFormat(tok)
    out = []
    with torch.no_grad():
        for it in items:
            e = fmt.encode(it.question, it.answer)
            logits = model.eval()(input_ids=torch.as_tensor(e.input_ids)[None]).logits[0]
            lab = list(e.labels)
            out.append([torch.log_softmax(logits[t - 1], -1)[lab[t]].item()
                        for t in range(1, len(lab)) if lab[t] != -100])
    return out


def test_forget_ll_utility_and_spread_by_hand(random_model, small_bench):
    model, tok = random_model
    items = small_bench.forget[:4]
    lps = hand_token_logprobs(model, tok, items)
    assert forget_ll(model, tok, items) == pytest.approx(sum(sum(x) / len(x) for x in lps) / 4, abs=1e-5)
    assert utility(model, tok, items) == pytest.approx(sum(math.exp(sum(x) / len(x)) for x in lps) / 4, rel=1e-5)
    vals = [[1.0, 2.0, 4.0], [3.0, 2.0, 1.0], [2.0, 2.0, 1.0]]
    s = spread(vals)
    assert s["range"] == [2.0, 0.0, 3.0]
    for j in range(3):
        col = [v[j] for v in vals]
        mean = sum(col) / 3
        assert s["std"][j] == pytest.approx(math.sqrt(sum((c - mean) ** 2 for c in col) / 3))


def test_utility_items_round_robin(small_bench):
    a, b = small_bench.retain[:5], small_bench.retain[5:7]
    assert utility_items([a, b], 4) == [a[0], b[0], a[1], b[1]]
    assert utility_items([a, b], 0) == [a[0], b[0], a[1], b[1], a[2], a[3], a[4]]


def test_default_orders():
    assert default_orders(["forget", "a", "b"], "forget") == [["forget", "a", "b"], ["a", "forget", "b"],
                                                              ["a", "b", "forget"]]
    assert default_orders(["a", "forget"], "forget") == [["forget", "a"], ["a", "forget"]]
    with pytest.raises(ConfigError):
        default_orders(["a", "b"], "forget")


def test_three_orders_give_different_unlearning(random_model, small_bench):
    """Same base, same stages, three orders: the forget stage seen last is remembered best before unlearning, and the
    same GA steps leave the paths apart (a spread that is not zero at equal budget)."""
    model, tok = random_model
    retain = small_bench.retain
    stages = {"forget": small_bench.forget, "a": retain[:10], "b": retain[10:20]}
    cfg = PathConfig(epochs=8, lr=5e-3, batch_size=10, unlearn_steps=4, unlearn_lr=1e-3, eval_every=2)
    r = path_dependence(model, tok, stages, [make_method("GradAscent")], cfg)
    assert r["orders"][0][0] == "forget" and r["orders"][-1][-1] == "forget"
    ga = r["methods"]["GradAscent"]
    assert ga["steps"] == [0, 2, 4]
    first, middle, last = (p["forget_ll"] for p in ga["paths"])
    assert last[0] > first[0]  # recency: the forget stage trained last is the best remembered
    for p in ga["paths"]:
        assert p["forget_ll"][-1] < p["forget_ll"][0]  # every path unlearns
    s = ga["spread_forget_ll"]
    assert len(s["range"]) == 3 and min(s["range"]) > 0
    assert s["range"][-1] == pytest.approx(max(first[-1], middle[-1], last[-1]) - min(first[-1], middle[-1], last[-1]))
    assert np.allclose(ga["spread_utility"]["std"], np.std([p["utility"] for p in ga["paths"]], axis=0))
    drops = [[p["forget_ll"][0] - x for x in p["forget_ll"]] for p in ga["paths"]]
    assert ga["spread_forget_drop"]["range"][0] == 0 and ga["spread_forget_drop"]["range"][-1] == pytest.approx(
        max(d[-1] for d in drops) - min(d[-1] for d in drops))
    with pytest.raises(DataError):
        path_dependence(model, tok, {"forget": small_bench.forget, "a": []}, [make_method("GradAscent")], cfg)


def test_cli_path_dependence_writes_its_files(trained_models, small_bench_dir, tmp_path):
    import json

    from obliviate.cli import main

    out = tmp_path / "pd"
    assert main(["path-dependence", "--data", str(small_bench_dir), "--base", str(trained_models["target"]),
                 "--methods", "GradAscent", "--stage-size", "5", "--epochs", "1", "--unlearn-steps", "2",
                 "--eval-every", "0", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "path_dependence.json").read_text())
    assert len(res["orders"]) == 3 and res["stages"] == {"forget": 10, "retain1": 5, "retain2": 5}
    assert res["methods"]["GradAscent"]["steps"] == [0, 2]
    assert "spread (max - min)" in (out / "path_dependence.md").read_text()
