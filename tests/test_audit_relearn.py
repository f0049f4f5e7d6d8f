"""Relearning attack: the split it trains on and the items it audits, recovery rate and steps to recover, and a real
short fine-tune that leaves the attacked model itself untouched."""

import math

import pytest
import torch

from obliviate.audit.relearn import RelearnConfig, recovery, relearn_curve, split_forget
from obliviate.data import PromptFormat, QAItem
from obliviate.errors import ConfigError, DataError
from obliviate.scoring import metrics as M


def test_split_is_per_entity_and_disjoint(small_bench):
    items = small_bench.forget  # two authors, five facts each
    rel, ev = split_forget(items, 0.4, seed=1)
    assert not set(rel) & set(ev) and sorted(rel + ev) == list(range(len(items)))
    for entity in {it.entity for it in items}:
        mine = [i for i, it in enumerate(items) if it.entity == entity]
        assert sum(i in rel for i in mine) == round(0.4 * len(mine)) == 2
    assert split_forget(items, 0.4, seed=1) == (rel, ev)             # seeded
    singles = [QAItem(f"q{i}?", "a.", entity=f"e{i}") for i in range(4)] + [QAItem("q?", "a.")]
    rel, ev = split_forget(singles, 0.5)                                 # one item per entity: pooled, then split
    assert len(rel) == round(0.5 * 5) == 2 and len(ev) == 3
    with pytest.raises(DataError, match="cannot split"):
        split_forget(items[:1], 0.5)
    with pytest.raises(ConfigError, match="fraction"):
        RelearnConfig(fraction=1.0).validate()


def test_recovery_rate_and_steps_to_recover_by_hand():
    assert M.recovery_rate(0.6, 0.2, 1.0) == pytest.approx(0.5)        # (0.6 - 0.2) / (1.0 - 0.2)
    assert math.isnan(M.recovery_rate(0.6, 0.5, 0.5))
    curve = {"steps": [0, 2, 4, 6], "prob": [0.2, 0.3, 0.65, 0.9], "before": 0.2}
    out = recovery(curve, 1.0, recover_at=0.5)
    assert out["recovery_rate"] == pytest.approx((0.9 - 0.2) / 0.8)
    assert out["steps_to_recover"] == 4                                  # (0.65 - 0.2) / 0.8 = 0.56 is the first >= 0.5
    assert recovery(curve, 1.0, recover_at=0.95)["steps_to_recover"] is None
    assert recovery(curve, None)["recovery_rate"] is None


def test_relearn_curve_fine_tunes_a_copy(trained_models, small_bench):
    from obliviate.models import load_model

    model, tok = load_model(trained_models["oracle"], dtype="fp32", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rel, ev = split_forget(small_bench.forget, 0.5)
    train_items = [small_bench.forget[i] for i in rel]
    eval_items = [small_bench.forget[i] for i in ev]
    cfg = RelearnConfig(steps=3, eval_every=2, lr=1e-3, batch_size=2, max_new_tokens=8)
    curve = relearn_curve(model, tok, train_items, eval_items, cfg)
    assert curve["steps"] == [0, 2, 3] and len(curve["prob"]) == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the step-0 value is the plain mean answer probability of the held-out items
    fmt = PromptFormat(tok)
    probs = []
    for it in eval_items:
        enc = fmt.encode(it.question, it.answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
        lp = [float(torch.log_softmax(logits[t - 1], 0)[enc.input_ids[t]])
              for t in range(enc.prompt_len, len(enc.input_ids))]
        probs.append(math.exp(sum(lp) / len(lp)))
    assert curve["before"] == pytest.approx(sum(probs) / len(probs), rel=1e-4)
    assert curve["after"] != curve["before"]                           # the copy did train
    assert len(curve["generations"]) == len(eval_items)
