"""Paraphrased, adversarial and fill-in-the-blank probes: generated from templates, read from RWKU as published, and
scored like the main audit (checked token by token here)."""

import json
import math
from collections import Counter

import pytest
import torch

from obliviate.audit.probes import (
    SYNTHETIC_TYPES,
    dialogue_ids,
    fact_value,
    run_probes,
    rwku_probes,
    synonym_swap,
    synthetic_probes,
    worst_gap,
)
from obliviate.data import PromptFormat
from obliviate.errors import DataError


def test_every_synthetic_type_is_generated_with_the_right_answer(random_model, small_bench):
    _, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget
    probes = synthetic_probes(items, fmt, demos=small_bench.retain)
    kinds = Counter(p.kind for p in probes)
    assert set(kinds) == set(SYNTHETIC_TYPES)
    for p in probes:
        it = items[p.index]
        if p.kind == "paraphrased_question":
            assert it.paraphrased_question in p.prompt and p.answer == it.answer
        elif p.kind == "fill_in_blank":
            # the blanked value is what the answer and its paraphrase share, and no perturbed answer has it
            assert p.answer in it.answer and p.answer in it.paraphrased_answer
            assert all(p.answer not in w for w in it.perturbed_answers)
            assert it.answer.replace(p.answer, "___", 1) in p.prompt and p.answer not in p.prompt
        elif p.kind == "reverse_query":
            assert p.answer == it.entity and it.entity not in p.prompt
        elif p.kind == "multiple_choice":
            assert fact_value(it.answer, it.entity) in p.prompt and p.answer == it.answer
        elif p.kind == "in_context":
            # two demonstrations, both about other entities, then the question
            assert p.prompt.count("Question:") == 3 and p.prompt.rstrip().endswith("Answer:")
            assert sum(d.question in p.prompt for d in small_bench.retain) == 2
        elif p.kind == "background_hint":
            others = [o.answer for o in items if o.entity == it.entity and o is not it]
            assert any(o in p.prompt for o in others) and it.answer not in p.prompt
        elif p.kind == "role_play":
            assert it.entity in p.prompt and it.question in p.prompt
        elif p.kind == "synonym_manipulation":
            assert it.question not in p.prompt and p.answer == it.answer
        else:
            assert it.question in p.prompt and p.answer == it.answer
    # each prompt is the tokenised text of the plain format
    p = probes[0]
    assert tok.decode(p.prompt_ids, skip_special_tokens=True) == p.prompt
    with pytest.raises(DataError, match="unknown probe type"):
        synthetic_probes(items, fmt, types=("jailbreak",))


def test_fact_value_prefers_the_most_specific_template():
    assert fact_value("Ann Lee was born in the year 1965.", "Ann Lee") == "1965"
    assert fact_value("Ann Lee was born in Kalport.", "Ann Lee") == "Kalport"
    assert fact_value("Something else entirely.", "Ann Lee") is None
    assert synonym_swap("Where was Ann born?") == "Where was Ann brought into the world?"


def test_probe_scores_match_a_token_by_token_pass(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    probes = [p for p in synthetic_probes(small_bench.forget[:3], fmt, demos=small_bench.retain)
              if p.kind in ("fill_in_blank", "in_context", "reverse_query")][:4]
    out = run_probes(model, tok, fmt, probes, batch_size=3, max_new_tokens=5)
    for p, row in zip(probes, out["per_item"]):
        a_ids = tok(" " + p.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = p.prompt_ids + a_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        lp = [float(torch.log_softmax(logits[t - 1], 0)[ids[t]]) for t in range(len(p.prompt_ids), len(ids))]
        assert row["prob"] == pytest.approx(math.exp(sum(lp) / len(lp)), rel=1e-5)
        # greedy generation, one token at a time
        cur = list(p.prompt_ids)
        for _ in range(5):
            with torch.no_grad():
                nxt = int(model(input_ids=torch.tensor([cur])).logits[0, -1].argmax())
            cur.append(nxt)
            if nxt == tok.eos_token_id:
                break
        assert row["generation"] == tok.decode(cur[len(p.prompt_ids):], skip_special_tokens=True).strip()
    for kind, agg in out["by_type"].items():
        rows = [r for r in out["per_item"] if r["kind"] == kind]
        assert agg["n"] == len(rows)
        assert agg["prob"] == pytest.approx(sum(r["prob"] for r in rows) / len(rows))


def test_worst_gap_by_hand():
    model = {"by_type": {"a": {"prob": 0.5}, "b": {"prob": 0.2}, "c": {"prob": 0.9}}}
    oracle = {"by_type": {"a": {"prob": 0.1}, "b": {"prob": 0.3}}}
    gap, kind = worst_gap(model, oracle, "prob")
    assert kind == "a" and gap == pytest.approx(0.4)     # "c" has no oracle value and is not compared


def test_dialogue_ids_write_earlier_turns_in_the_plain_format(random_model):
    _, tok = random_model
    fmt = PromptFormat(tok)
    ids = dialogue_ids(fmt, [("Who?", "Me.")], "Where?")
    assert tok.decode(ids, skip_special_tokens=True) == "Question: Who?\nAnswer: Me.\n\nQuestion: Where?\nAnswer:"
    assert dialogue_ids(fmt, [], "Where?") == fmt.prompt_ids("Where?")


def test_rwku_probes_are_read_as_published(random_model):
    from conftest import RWKU

    if not RWKU.exists():
        pytest.skip("RWKU data not available")
    from obliviate.data.rwku import load_target

    _, tok = random_model
    fmt = PromptFormat(tok)
    target = load_target(RWKU, "Stephen King", texts=False)
    probes = rwku_probes(target, fmt)
    expected = Counter()
    for level in ("forget_level1", "forget_level2", "forget_level3"):
        for r in json.loads((target.folder / f"{level}.json").read_text()):
            expected["rwku:" + r["type"]] += 1
    assert Counter(p.kind for p in probes) == expected
    assert "rwku:prefix injection" in expected and "rwku:role play" in expected
    for p in probes:
        text = p.prompt
        if p.kind == "rwku:affirmative suffix":
            assert not text.endswith("Answer:")
        else:
            assert text.endswith("Answer:")
        verb = "complete the blank" if p.meta["level"] == "forget_level1" else "briefly answer"
        assert text.startswith(f"Please {verb}")
    first = json.loads((target.folder / "forget_level3.json").read_text())[0]
    p3 = [p for p in probes if p.meta["level"] == "forget_level3"][0]
    assert first["query"] in p3.prompt and p3.answer == first["answer"]
