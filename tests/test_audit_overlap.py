"""Shared versus unique knowledge (DUSK) and combined forget/retain queries (BLUR): the generator and the audit."""

import filecmp
import warnings

import pytest

from obliviate.audit.shared_facts import combined_halves, combined_queries, overlap_audit, shared_facts
from obliviate.data import QAItem, SynthConfig, load_benchmark, make_fictional_authors, write_fictional_authors
from obliviate.data.overlap_bench import make_overlap_benchmark, write_overlap_benchmark

SMALL = dict(n_authors=20, facts_per_author=5, n_holdout_authors=2, n_general=10, seed=0)


def test_default_benchmark_is_untouched(tmp_path):
    a = write_fictional_authors(tmp_path / "a", SynthConfig(**SMALL))
    write_overlap_benchmark(tmp_path / "overlap", SynthConfig(**SMALL))
    b = write_fictional_authors(tmp_path / "b", SynthConfig(**SMALL))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors
    assert not any("shared" in n or "combined" in n for n in names)


def test_overlap_variant_adds_shared_facts_to_both_sides(tmp_path):
    cfg = SynthConfig(**SMALL)
    default = make_fictional_authors(cfg)
    splits = make_overlap_benchmark(cfg)
    for name, items in default.items():  # every default item is still there, unchanged and in order
        assert [it.to_dict() for it in splits[name][:len(items)]] == [it.to_dict() for it in items]
    for pct in (1, 5, 10):
        forget, retain = splits[f"forget{pct:02d}"], splits[f"retain{100 - pct:02d}"]
        forget_authors = {it.entity for it in default[f"forget{pct:02d}"]}
        shared_f = [it for it in forget if it.id and it.id.startswith("shared")]
        shared = splits[f"shared_facts{pct:02d}"]
        assert len(shared_f) == len(forget_authors) == len(shared)
        for f_side, r_side in zip(shared_f, shared):
            # the same co-written book, stated about the forget author (forget split) and about its partner (retain)
            assert f_side.entity in forget_authors and r_side.entity not in forget_authors
            assert f_side.meta["shared_value"] == r_side.meta["shared_value"] in f_side.answer
            assert r_side.meta["shared_value"] in r_side.answer
            assert f_side.meta["shared_with"] == r_side.entity and r_side.meta["shared_with"] == f_side.entity
            assert r_side in retain and f_side not in retain
            assert len(r_side.perturbed_answers) == 3
            assert all(r_side.meta["shared_value"] not in w for w in r_side.perturbed_answers)
        assert not {it.entity for it in retain if not (it.id or "").startswith("shared")} & forget_authors
    out = write_overlap_benchmark(tmp_path / "o", cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "retain items also appear in forget10": the two sides are distinct items
        bench = load_benchmark(out, "forget10")
    assert len(shared_facts(bench)) == 2
    combined = combined_queries(bench)
    assert len(combined) == len(default["forget10"])
    for i, c in enumerate(combined):
        f = next(it for it in default["forget10"] if it.id == c.meta["forget_id"])
        r = next(it for it in default["retain_perturbed"] if it.id == c.meta["retain_id"])
        first, second = (f, r) if i % 2 == 0 else (r, f)
        assert c.meta["order"] == i % 2 and c.question.startswith(first.question)
        assert c.answer == f"{first.answer} {second.answer}"


def test_combined_queries_are_built_when_the_benchmark_has_none(small_bench):
    combined = combined_queries(small_bench)
    assert len(combined) == len(small_bench.forget)
    assert all(c.meta["forget_answer"] in c.answer and c.meta["retain_answer"] in c.answer for c in combined)
    assert shared_facts(small_bench) is None


def test_combined_halves_by_hand():
    items = [QAItem("q", "a", meta={"forget_answer": "Kalo Mira lives in Renport.",
                                    "retain_answer": "Tor Ulva plays the harp."})] * 2
    gens = ["Kalo Mira lives in Renport.", "Kalo Mira lives in Vorport and Tor Ulva plays the harp."]
    out = combined_halves(gens, items)
    # forget half: 5 of 5 tokens, then 4 of 5 (kalo mira live in); retain half: 0 of 5, then 5 of 5
    assert out["forget_half_rouge"] == pytest.approx((1.0 + 0.8) / 2)
    assert out["retain_half_rouge"] == pytest.approx((0.0 + 1.0) / 2)


def test_overlap_audit_on_target_and_oracle(trained_models, small_bench_dir, tmp_path):
    from obliviate.models import load_model

    bench = load_benchmark(write_overlap_benchmark(tmp_path / "o", SynthConfig(**SMALL)), "forget10")
    out = {}
    for name in ("target", "oracle"):
        model, tok = load_model(trained_models[name], dtype="fp32", device="cpu")
        out[name] = overlap_audit(model, tok, bench, max_new_tokens=16)
    # the fixtures were trained on the default benchmark: the unique forget facts are the target's, not the oracle's
    assert out["target"]["unique_forget"]["prob"] > 0.8 > 0.2 > out["oracle"]["unique_forget"]["prob"]
    assert out["target"]["combined"]["forget_half_rouge"] > out["oracle"]["combined"]["forget_half_rouge"]
    assert out["target"]["shared"]["n"] == 2 and out["target"]["combined"]["n"] == 10
    assert out["target"]["forward"] == {"scored_sequences": 2 + 10 + 10 + 20, "generations": 2 + 10 + 10 + 10}
