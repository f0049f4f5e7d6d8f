"""Relearning attack: the split it trains on and the items it audits, recovery rate and steps to recover, and a real
short fine-tune that leaves the attacked model itself untouched."""

import copy
import math

import pytest
import torch
from conftest import mean_prob

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


def test_measuring_more_often_does_not_change_the_trajectory(load_target, small_bench):
    """One optimizer trajectory: the held-out probability after s steps is the same whether the run also measured at
    s/2 (a restart of AdamW at each measuring point, as before, relearns more when it measures more)."""
    model, tok = load_target()
    rel, ev = split_forget(small_bench.forget, 0.5)
    train_items = [small_bench.forget[i] for i in rel]
    eval_items = [small_bench.forget[i] for i in ev]
    common = dict(steps=6, lr=3e-3, batch_size=2, max_new_tokens=4)
    once = relearn_curve(model, tok, train_items, eval_items, RelearnConfig(eval_steps=[6], **common))
    twice = relearn_curve(model, tok, train_items, eval_items, RelearnConfig(eval_steps=[3, 6], **common))
    assert once["steps"] == [0, 6] and twice["steps"] == [0, 3, 6]
    assert twice["prob"][-1] == pytest.approx(once["prob"][-1], rel=1e-6, abs=1e-9)
    assert once["prob"][-1] != pytest.approx(once["prob"][0], rel=1e-3)    # it did relearn something
    assert RelearnConfig(steps=10, eval_every=4).points() == [4, 8, 10]
    with pytest.raises(ConfigError, match="eval_steps"):
        RelearnConfig(steps=5, eval_steps=[7]).validate()


def test_learning_rate_rule_and_oracle_control_under_the_identical_attack(trained_models, small_bench):
    """The default rate is 1e-3 x sqrt(1e6 / N) over non-adapter parameters (counted here by hand), the same for a
    LoRA-wrapped copy; the target and the oracle are attacked with the same split, data, steps and rate, so the
    check's value is the gap between two runs of one attack."""
    from obliviate.audit.relearn import relearn_attack, relearn_lr
    from obliviate.models import load_model
    from obliviate.models.lora import apply_lora

    target, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    oracle, _ = load_model(trained_models["oracle"], dtype="fp32", device="cpu")
    n = 0
    for p in target.parameters():
        n += p.numel()
    assert relearn_lr(target) == pytest.approx(min(max(1e-3 * (1e6 / n) ** 0.5, 1e-6), 3e-3))
    assert relearn_lr(apply_lora(copy.deepcopy(target))) == relearn_lr(target)
    cfg = RelearnConfig(steps=4, eval_every=2, batch_size=2, related=False, max_new_tokens=4)
    original = [mean_prob(target, tok, [it]) for it in small_bench.forget]
    on_target = relearn_attack(target, tok, small_bench.forget, cfg, original_probs=original)
    on_oracle = relearn_attack(oracle, tok, small_bench.forget, cfg, original_probs=original)
    assert on_target["relearn_items"] == on_oracle["relearn_items"]
    assert on_target["eval_items"] == on_oracle["eval_items"]
    t, o = on_target["forget_subset"], on_oracle["forget_subset"]
    assert t["lr"] == o["lr"] == relearn_lr(target) and t["steps"] == o["steps"] == [0, 2, 4]
    # the target knew the held-out items, the oracle never saw them: after the same attack the target is still ahead
    assert t["before"] > o["before"] and t["after"] > o["after"]
    assert t["recovery_rate"] == pytest.approx((t["after"] - t["before"]) / (on_target["original"] - t["before"]))
