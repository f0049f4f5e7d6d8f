"""BLUR's overlap tiers (audit.blur): the tiers built from the shared-facts benchmark, each tier's answer probability
against a hand computation, the drops after real unlearning, and the tier table in a bench."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.audit.blur import TIERS, blur_tiers, tier_drops, tier_probs
from obliviate.data.overlap_bench import keyword_item


@pytest.fixture(scope="module")
def overlap_bench(tmp_path_factory):
    """The shared-facts variant of the small benchmark (same authors and facts as ``small_bench``, plus overlap)."""
    from conftest import SMALL_SYNTH

    from obliviate.data import SynthConfig, load_benchmark
    from obliviate.data.overlap_bench import write_overlap_benchmark

    root = write_overlap_benchmark(tmp_path_factory.mktemp("overlap") / "bench", SynthConfig(**SMALL_SYNTH))
    return load_benchmark(root, "forget10")


def test_tiers_of_the_overlap_benchmark(overlap_bench):
    tiers = blur_tiers(overlap_bench)
    assert list(tiers) == list(TIERS)
    forget_names = {it.entity for it in overlap_bench.forget}
    shared = [it for it in overlap_bench.retain if str(it.id).startswith("shared") and it.meta["shared_with"] in
              forget_names]
    assert sorted(tiers["shared"]) == sorted((it.question, it.answer) for it in shared)
    partners = {it.entity for it in shared}
    assert len(tiers["entity"]) == sum(1 for it in overlap_bench.retain
                                       if it.entity in partners and not str(it.id).startswith("shared"))
    retain_entities = {it.entity for it in overlap_bench.retain if (it.question, it.answer) in tiers["retain"]}
    assert retain_entities and not retain_entities & partners  # the retain tier shares nothing with the forget set
    for (kq, ka), (rq, ra) in zip(tiers["keyword"], tiers["retain"]):
        assert ka == ra and kq != rq and any(name in kq for name in forget_names)
    assert all(not str(q).startswith("Which book") for q, _ in tiers["forget"])  # shared items are not unique forget
    k = keyword_item("Ann Example", overlap_bench.retain[0], 0)
    assert k.question.startswith("Leaving Ann Example aside, ") and k.answer == overlap_bench.retain[0].answer
    assert keyword_item("Ann Example", overlap_bench.retain[0], 1).question.endswith(", unlike Ann Example?")
    assert len(blur_tiers(overlap_bench, max_items=2)["entity"]) == 2


def hand_prob(model, tok, question, answer):
    """exp of the token-mean log-probability of the answer after the prompt, by a plain loop over positions."""
    from obliviate.data import PromptFormat

    e = PromptFormat(tok).encode(question, answer)
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.as_tensor(e.input_ids)[None]).logits[0]
    lps = [torch.log_softmax(logits[t - 1], -1)[e.labels[t]].item() for t in range(1, len(e.labels))
           if e.labels[t] != -100]
    return math.exp(sum(lps) / len(lps))


def test_tier_probs_and_drops_after_unlearning(load_target, overlap_bench, tmp_path):
    from obliviate.config import TrainConfig
    from obliviate.engine import train
    from obliviate.methods import make_method

    model, tok = load_target()
    tiers = {k: v[:6] for k, v in blur_tiers(overlap_bench).items()}
    before = tier_probs(model, tok, tiers)
    for name in ("keyword", "combined_retain"):
        hand = sum(hand_prob(model, tok, q, a) for q, a in tiers[name]) / len(tiers[name])
        assert before[name] == pytest.approx(hand, rel=1e-4)
    cfg = TrainConfig(lr=1e-3, max_steps=6, batch_size=5, scheduler="constant", seed=0)
    forget = [it for it in overlap_bench.forget if not str(it.id).startswith("shared")]
    net = train(model, tok, make_method("GradAscent"), {"forget": forget}, cfg, tmp_path / "ga", progress=False)
    after = tier_probs(net, tok, tiers)
    drops = tier_drops(before, after)
    for name in TIERS:
        assert drops[name]["drop"] == pytest.approx(before[name] - after[name])
        assert drops[name]["relative"] == pytest.approx((before[name] - after[name]) / before[name])
    assert drops["forget"]["drop"] > 0.1
    assert drops["forget"]["relative"] > drops["retain"]["relative"]
    assert drops["combined_forget"]["drop"] > 0
    assert tier_drops({"forget": 0.5}, {"forget": 0.2, "retain": 0.1}) == {
        "forget": {"target": 0.5, "model": 0.2, "drop": pytest.approx(0.3), "relative": pytest.approx(0.6)}}


def test_bench_reports_tier_drops(trained_models, overlap_bench, tmp_path):
    from obliviate.config import AuditConfig
    from obliviate.recipes.bench import plan, run_bench

    runs = plan(["GradAscent"], {"GradAscent": {"train.max_steps": 3}})
    rows = run_bench(overlap_bench, runs, tmp_path / "bench", {"lr": 1e-3}, AuditConfig(generate=False),
                     models=trained_models, progress=False, log=lambda *a: None)
    ga = rows[-1]
    assert ga["status"] == "ok" and set(ga["blur"]) == set(TIERS)
    assert ga["blur"]["forget"]["drop"] > 0
    assert "oracle" == rows[1]["method"] and "forget" in rows[1]["blur"]
    assert "blur.md" in (tmp_path / "bench" / "results.md").read_text()
    text = (tmp_path / "bench" / "blur.md").read_text()
    assert "BLUR" in text and "| method | forget | shared | entity | keyword |" in text
    assert text.count("\n| ") == 1 + 2  # the header, the oracle and the one run
