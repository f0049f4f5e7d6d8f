"""Fluency of generated forget answers: each measure against a hand computation on fixed strings, garbage scored as
garbage and a sentence as a sentence, the reference perplexity against a plain torch loop, and the report column."""

import math

import pytest
import torch

from obliviate.audit.checks import CHECKS, Value
from obliviate.audit.fluency import annotate_rows, badchar_share, fluency_report, ngram_entropy, nonword_share
from obliviate.data import PromptFormat

GARBAGE = ["O\x1akloreklore\ufffd Nyny Halmarford.&.", "k\ufffd\ufffdMM.&."]   # the demo's babbling (issue 14)
FLUENT = ["He was born in Halmarford, a small town.", "His mother was a well-known surgeon."]


def test_garbage_is_non_fluent_and_a_sentence_is_fluent():
    # "O\x1akloreklore\ufffd" holds a control character and U+FFFD; "Nyny" and "Halmarford.&." are words in punctuation
    assert nonword_share(GARBAGE[0]) == pytest.approx(1 / 3)
    assert nonword_share(GARBAGE[1]) == 1.0
    assert badchar_share(GARBAGE[0]) == pytest.approx(2 / len(GARBAGE[0]))
    assert badchar_share(GARBAGE[1]) == pytest.approx(2 / 8)
    for s in FLUENT + ["I don't know.", "It is 1,200 km - roughly."]:
        assert nonword_share(s) == 0.0 and badchar_share(s) == 0.0, s
    assert nonword_share("") == badchar_share("") == 0.0
    assert nonword_share("price: 5$ \u2603") == pytest.approx(2 / 3)   # symbols are not words
    assert nonword_share("Well ... no -- ::::::::::::") == pytest.approx(1 / 5)  # short punctuation runs are words


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams (a,b) x2, (b,a) x1; trigrams (a,b,a), (b,a,b)
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    h3 = 1.0
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    # "x x x x x": one bigram and one trigram type: zero entropy (a repetitive loop)
    assert ngram_entropy("x x x x x") == 0.0
    # six distinct words: 5 bigrams, 4 trigrams, each once
    assert ngram_entropy("one two three four five six") == pytest.approx((2 / 3 * math.log2(5) + 4 / 3 * 2) / 2)
    # punctuation is a token of its own: "Hi, you." -> Hi , you .
    assert ngram_entropy("Hi, you.") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1) / 2)
    assert ngram_entropy("loop loop loop loop loop loop") < ngram_entropy(FLUENT[0])


def test_reference_perplexity_by_hand_and_the_report(trained_models, small_bench):
    from obliviate.models import load_model

    model, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    items = small_bench.forget[:2]
    gens = [items[0].answer, GARBAGE[0]]
    rep = fluency_report(gens, model, tok, [it.question for it in items])
    fmt = PromptFormat(tok)
    for g, it, row in zip(gens, items, rep["per_item"]):
        enc = fmt.encode(it.question, g)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
        lp = [float(torch.log_softmax(logits[t - 1], 0)[enc.input_ids[t]])
              for t in range(enc.prompt_len, len(enc.input_ids))]
        assert row["ref_ppl"] == pytest.approx(math.exp(-sum(lp) / len(lp)), rel=1e-4)
    # the target knows its own answer; garbage is far less probable to it
    assert rep["per_item"][1]["ref_ppl"] > 10 * rep["per_item"][0]["ref_ppl"]
    assert rep["mean"]["nonword_share"] == pytest.approx((0 + 1 / 3) / 2)
    rows = annotate_rows([{"index": 0}, {"index": 1}], rep)
    assert rows[1]["fluency_nonword_share"] == pytest.approx(1 / 3) and "fluency_ref_ppl" in rows[0]


def test_the_fluency_check_compares_with_the_oracle():
    check = CHECKS["fluency"]

    def report(texts):
        rows = [{"ref_ppl": 1.0, "nonword_share": nonword_share(t), "badchar_share": 0.0, "ngram_entropy": 0.0}
                for t in texts]
        return {"per_item": rows, "mean": {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}}

    babbling = check.value((report(GARBAGE), report(FLUENT)), None)
    assert isinstance(babbling, Value) and babbling.value == pytest.approx((1 / 3 + 1) / 2)
    assert not check.judge(babbling.value, check.threshold)
    fluent = check.value((report(FLUENT), report(FLUENT)), None)
    assert fluent.value == 0.0 and check.judge(fluent.value, check.threshold)


def test_the_report_shows_per_item_fluency():
    from obliviate.report.run_page import _items_table

    rows = [{"index": 0, "prompt": "Q?", "target": "A.", "prob": 0.5, "generation": GARBAGE[0],
             "rougeL_recall": 0.0, "fluency_nonword_share": 1 / 3, "fluency_ref_ppl": 812.0,
             "fluency_ngram_entropy": 1.5}]
    html = _items_table({"per_item": {"forget": rows}}, {})
    assert "non-words" in html and "812" in html
    assert "non-words" not in _items_table({"per_item": {"forget": [{k: v for k, v in rows[0].items()
                                                                      if not k.startswith("fluency")}]}}, {})


def test_every_audit_measures_how_word_like_the_forget_answers_are(random_model, small_bench):
    """The base audit carries the text measures per forget item and on average (the report's oracle is the reference);
    an untrained model babbles, so its non-word share is far above a fluent answer's 0."""
    from obliviate.audit.suite import audit_model
    from obliviate.config import AuditConfig

    model, tok = random_model
    res = audit_model(model, tok, small_bench, AuditConfig(max_new_tokens=12, splits=["forget"]), progress=False)
    rows = res["per_item"]["forget"]
    shares = [nonword_share(r["generation"]) for r in rows]
    assert [r["fluency_nonword_share"] for r in rows] == shares
    assert res["metrics"]["forget_nonword_share"] == pytest.approx(sum(shares) / len(shares))
    assert res["metrics"]["forget_nonword_share"] > 0.2
    assert res["metrics"]["forget_ngram_entropy"] == pytest.approx(
        sum(ngram_entropy(r["generation"]) for r in rows) / len(rows))
