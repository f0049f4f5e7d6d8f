"""Forget-set coresets: each selector's score against a hand computation, and the selection it makes."""

import copy
import math

import numpy as np
import pytest
import torch

from obliviate.data import PromptFormat, pad_batch
from obliviate.engine.coreset import coreset_scores, select_coreset
from obliviate.errors import ConfigError


def one_batch(tok, it):
    return pad_batch([PromptFormat(tok).encode(it.question, it.answer)], tok.pad_token_id)


def hand_token_logprobs(model, tok, it):
    b = one_batch(tok, it)
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[0].double()
    out = []
    for t in range(b["labels"].shape[1] - 1):
        y = int(b["labels"][0, t + 1])
        if y != -100:
            out.append(logits[t, y] - torch.logsumexp(logits[t], 0))
    return out


def test_random_coreset_is_seeded_sized_and_ordered(small_bench):
    items = small_bench.retain
    a = select_coreset(None, None, items, 0.1, "random", seed=1)
    assert len(a) == 9
    assert a == select_coreset(None, None, items, 0.1, "random", seed=1)
    assert a != select_coreset(None, None, items, 0.1, "random", seed=2)
    pos = [items.index(it) for it in a]
    assert pos == sorted(pos)
    assert len(select_coreset(None, None, items, 0.001, "random")) == 1
    assert select_coreset(None, None, items, 1.0, "random") == items


def test_mink_memorisation_by_hand(random_model, small_bench):
    model, tok = random_model
    items = small_bench.forget[:6]
    got = coreset_scores(model, tok, items, "mink", k=0.4)
    with torch.no_grad():
        for i, it in enumerate(items):
            lp = sorted(float(x) for x in hand_token_logprobs(model, tok, it))
            m = max(1, int(0.4 * len(lp)))
            assert got[i] == pytest.approx(sum(lp[:m]) / m, rel=1e-5)
    chosen = select_coreset(model, tok, items, 0.5, "mink")
    assert {id(x) for x in chosen} == {id(items[i]) for i in np.argsort(-got)[:3]}


def test_gradient_norm_by_hand(random_model, small_bench):
    model = copy.deepcopy(random_model[0])
    tok = random_model[1]
    items = small_bench.forget[:3]
    got = coreset_scores(model, tok, items, "gradnorm")
    assert all(p.grad is None for p in model.parameters()), "scoring leaves .grad alone"
    for i, it in enumerate(items):
        model.zero_grad()
        nll = -sum(hand_token_logprobs(model, tok, it))
        nll.backward()
        norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters() if p.grad is not None))
        assert got[i] == pytest.approx(norm, rel=1e-5)


def test_moderate_distance_by_hand(random_model, small_bench):
    model, tok = random_model
    items = small_bench.forget[:7]
    got = coreset_scores(model, tok, items, "moderate")
    embs = []
    with torch.no_grad():
        for it in items:
            b = one_batch(tok, it)
            h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
            embs.append(h.hidden_states[-1][0].double().mean(0))  # one item: every position is attended
    centre = sum(embs) / len(embs)
    d = [float((e - centre).norm()) for e in embs]
    med = sorted(d)[len(d) // 2]
    for i in range(len(items)):
        assert got[i] == pytest.approx(-abs(d[i] - med), rel=1e-4, abs=1e-5)
    chosen = select_coreset(model, tok, items, 1 / 7, "moderate")
    assert chosen == [items[int(np.argmin([abs(x - med) for x in d]))]]


def test_bad_coreset_options():
    with pytest.raises(ConfigError, match="fraction"):
        select_coreset(None, None, [1, 2], 0.0, "random")
    with pytest.raises(ConfigError, match="strategy"):
        select_coreset(None, None, [1, 2], 0.5, "kmeans")


def test_unlearn_command_trains_on_the_coreset(small_bench_dir, small_bench, target_path, tmp_path, capsys):
    """`unlearn --coreset mink --coreset-fraction 0.3`: 3 of the 10 forget items, the most memorised, are trained on."""
    import json

    from obliviate.cli import main
    from obliviate.models import load_model

    out = tmp_path / "run"
    rc = main(["unlearn", "--data", str(small_bench_dir), "--model", str(target_path), "--method", "GradAscent",
               "--coreset", "mink", "--coreset-fraction", "0.3", "--max-steps", "1", "--batch-size", "2",
               "--out", str(out)])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["coreset"] == {"strategy": "mink", "fraction": 0.3}
    model, tok = load_model(target_path, dtype="fp32", device="cpu")
    expected = select_coreset(model, tok, small_bench.forget, 0.3, "mink")
    assert f"coreset: {len(expected)} of {len(small_bench.forget)} forget items by mink" in capsys.readouterr().out
    assert len(expected) == 3
    rc = main(["unlearn", "--data", str(small_bench_dir), "--model", str(target_path), "--method", "GradAscent",
               "--coreset", "mink", "--coreset-fraction", "1.5", "--out", str(tmp_path / "bad"), "--quiet"])
    assert rc == 2 and not (tmp_path / "bad" / "config.json").exists()
