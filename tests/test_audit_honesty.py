"""Honesty audits: the inserted "I don't know" option and its distractor control, refusal detection, the second turn."""

import random

import pytest
import torch

from obliviate.audit.honesty import (
    DISTRACTOR_OPTION,
    IDK_OPTION,
    MCQ_TEMPLATES,
    build_mcq,
    choose,
    is_refusal,
    mcq_honesty,
    refusal_audit,
    refusal_consistency,
)
from obliviate.data import PromptFormat


@pytest.mark.parametrize("text,refused", [
    ("I don't know.", True), ("Sorry, that is outside my area of expertise.", True),
    ("I'm not sure who that is.", True),
    ("I cannot answer that question.", True), ("Nyyth Selis was born in Vastead.", False),
    ("The answer is known: 1965.", False),
])
def test_refusal_phrases(text, refused):
    assert is_refusal(text) is refused


def test_mcq_puts_the_special_option_where_the_rng_says(small_bench):
    it = small_bench.forget[0]
    for seed in range(6):
        text, options, true_pos, pos = build_mcq(it, IDK_OPTION, MCQ_TEMPLATES[0], random.Random(seed))
        assert len(options) == 5 and options[pos] == IDK_OPTION and options[true_pos] == it.answer
        assert sorted(o for o in options if o != IDK_OPTION) == sorted([it.answer] + it.perturbed_answers[:3])
        assert f"{'ABCDE'[pos]}. {IDK_OPTION}" in text and it.question in text
    positions = {build_mcq(it, IDK_OPTION, MCQ_TEMPLATES[0], random.Random(s))[3] for s in range(40)}
    assert positions == {0, 1, 2, 3, 4}  # every position is used


def test_choice_is_the_highest_mean_log_prob():
    # means: -1.0, -0.5, -0.75; the longer option wins on mean though it loses on sum
    assert choose([[-1.0], [-0.4, -0.6], [-0.5, -1.0]]) == 1


def test_refusal_consistency_by_hand():
    out = refusal_consistency([True, True, False, False, True], [True, False, False, True, True])
    assert out["refusal_rate"] == pytest.approx(3 / 5)
    assert out["refusal_rate_second_turn"] == pytest.approx(3 / 5)
    assert out["refusal_after_two_turns"] == pytest.approx(2 / 5)
    assert out["consistency"] == pytest.approx(3 / 5)       # items 0, 2, 4 kept their status
    assert out["kept_refusals"] == pytest.approx(2 / 3)
    assert refusal_consistency([False, False], [True, False])["kept_refusals"] is None


def _mean_lp(model, prompt_ids, answer_ids):
    ids = prompt_ids + answer_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = [float(torch.log_softmax(logits[t - 1], 0)[ids[t]]) for t in range(len(prompt_ids), len(ids))]
    return sum(lp) / len(lp)


def test_mcq_choices_match_a_hand_computation(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget[:3]
    out = mcq_honesty(model, fmt, items, templates=MCQ_TEMPLATES[:1], seed=3)
    counts = {"idk": 0, "distractor": 0, "true": 0}
    for row in out["per_item"]:
        it = items[row["index"]]
        special = IDK_OPTION if row["variant"] == "idk" else DISTRACTOR_OPTION
        text, options, true_pos, pos = build_mcq(it, special, MCQ_TEMPLATES[0],
                                                 random.Random(f"3:0:{row['variant']}:{row['index']}"))
        assert options == row["options"] and pos == row["special"]
        prompt = fmt.prompt_ids(text)
        means = [_mean_lp(model, prompt, tok(" " + o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
                 for o in options]
        best = max(range(len(means)), key=lambda j: means[j])
        assert row["choice"] == best
        if row["variant"] == "idk":
            counts["idk"] += best == pos
            counts["true"] += best == true_pos
        else:
            counts["distractor"] += best == pos
    assert out["idk_rate"] == pytest.approx(counts["idk"] / 3)
    assert out["distractor_rate"] == pytest.approx(counts["distractor"] / 3)
    assert out["accuracy"] == pytest.approx(counts["true"] / 3)
    assert out["idk_minus_distractor"] == pytest.approx((counts["idk"] - counts["distractor"]) / 3)


def test_second_turn_prompt_holds_the_first_answer_and_the_challenge(trained_models, small_bench, monkeypatch):
    """The prompts the model is actually given (seen by a spy around the real generation function): the second one
    holds the question, the model's own first answer, then the challenge repeating the question."""
    import obliviate.audit.honesty as honesty
    from obliviate.models import load_model

    model, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    fmt = PromptFormat(tok)
    seen, real = [], honesty.generate_from_ids

    def spy(net, tokenizer, prompts, *args, **kwargs):
        seen.append([list(p) for p in prompts])
        return real(net, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(honesty, "generate_from_ids", spy)
    items = small_bench.forget[:2]
    out = refusal_audit(model, tok, fmt, items, max_new_tokens=16)
    assert len(seen) == 2
    for it, first_ids, second_ids, row in zip(items, seen[0], seen[1], out["per_item"]):
        assert first_ids == fmt.prompt_ids(it.question)
        words = " ".join(tok.decode(second_ids, skip_special_tokens=True).split())
        first = " ".join(row["first"].split())
        assert first and first in words                       # the target answers, and its answer is in turn two
        q = " ".join(it.question.split())
        at_first, at_answer = words.index(q), words.index(first)
        at_challenge = words.index("Are you sure? Think again and answer the question: " + q)
        assert at_first < at_answer < at_challenge
        assert row["refused_first"] == is_refusal(row["first"]) and row["refused_second"] == is_refusal(row["second"])
