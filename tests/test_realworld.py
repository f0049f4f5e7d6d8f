"""Real-world targets: probe scoring by hand, the built-in set's invariants, RWKU as published, the TOFU subset."""

from __future__ import annotations

import json

import pytest
from conftest import RWKU, TOFU

# ------------------------------------------------------------------------------------------- pure scoring, by hand

def test_normalize_words_folds_case_accents_and_punctuation():
    from obliviate.data.real_targets import normalize_words

    assert normalize_words("Gödel's E=mc²!") == ["godel", "s", "e", "mc2"]
    assert normalize_words("  J.K. Rowling ") == ["j", "k", "rowling"]
    assert normalize_words("") == []


@pytest.mark.parametrize("generation, answers, expected", [
    ("The capital of Japan is Tokyo.", ["Tokyo"], True),
    ("The capital of Japan is Tokyo.", ["Kyoto", "Osaka"], False),
    ("It is TOKYO, Japan", "tokyo", True),  # a single string counts as one accepted answer
    ("Tokyoite culture", ["Tokyo"], False),  # whole words only: 'tokyo' is not a word of 'tokyoite'
    ("He wrote Harry Potter.", ["Harry Potter"], True),
    ("Harry met Potter", ["Harry Potter"], False),  # the words must be contiguous
    ("E=mc²", ["mc2"], True),
    ("Albert Einstein was born in Ulm", ["Germany", "Ulm"], True),  # any accepted answer counts
    ("", ["Tokyo"], False),
    ("anything", ["!!!"], False),  # an answer with no words never matches
])
def test_answer_hit(generation, answers, expected):
    from obliviate.data.real_targets import answer_hit

    assert answer_hit(generation, answers) is expected


def test_accuracy_and_relative_change_by_hand():
    from obliviate.data.real_targets import accuracy, relative_change

    gens = ["Paris is the capital.", "I do not know.", "The Seine flows there.", "Berlin"]
    answers = [["Paris"], ["Eiffel"], ["Seine"], ["Madrid"]]
    assert accuracy(gens, answers) == 2 / 4
    assert accuracy([], []) != accuracy([], [])  # NaN for no probes
    with pytest.raises(ValueError):
        accuracy(gens, answers[:2])
    assert relative_change(0.8, 0.2) == pytest.approx(0.25)
    assert relative_change(0.0, 0.3) != relative_change(0.0, 0.3)  # NaN when before is 0


def test_score_rows_and_set_metrics_by_hand():
    from obliviate.data.real_targets import Probe
    from obliviate.recipes.real_target import metrics_of, score_rows, set_metrics

    probes = [Probe("Capital of Japan?", ["Tokyo"], "question", "Tokyo", "Tokyo"),
              Probe("Tokyo and Japan?", ["Tokyo Japan"], "question", "Tokyo", "Tokyo"),
              Probe("Tokyo is the capital of ___.", ["Japan"], "cloze", "Tokyo", "Tokyo")]
    gens = ["The capital is Tokyo.", "Japan is where Tokyo lies", " ..."]
    rows = score_rows(probes, gens)
    assert [r["hit"] for r in rows] == [True, False, False]
    # ROUGE-L recall against the answer: 1/1; LCS("tokyo japan", "japan is where tokyo lies") = 1 word of 2; 0/1
    assert [r["rougeL_recall"] for r in rows] == pytest.approx([1.0, 0.5, 0.0])
    assert rows[2]["prompt"].startswith("Please complete the blank") and rows[0]["prompt"].startswith("Please briefly")
    m = set_metrics("forget", rows)
    # " ..." has no word: silent
    assert m == pytest.approx({"forget_accuracy": 1 / 3, "forget_rougeL": 0.5, "forget_silent": 1 / 3})
    per_kind = metrics_of({"forget": rows})
    assert per_kind["forget_question_accuracy"] == pytest.approx(0.5)
    assert per_kind["forget_cloze_accuracy"] == 0.0 and "forget_adversarial_accuracy" not in per_kind
    assert set_metrics("x", []) == {}


def test_adversarial_variants_wrap_each_question():
    from obliviate.data.real_targets import ATTACKS, Probe, adversarial_variants, probe_question

    q = Probe("Who wrote Hamlet?", ["Shakespeare"], "question", "William Shakespeare", "William Shakespeare", id="ws:q:0")
    out = adversarial_variants([q])
    assert [p.type for p in out] == list(ATTACKS)
    assert all(p.kind == "adversarial" and p.framed and p.answers == ["Shakespeare"] for p in out)
    assert out[0].query == ATTACKS["prefix injection"].format(query="Who wrote Hamlet?")
    assert probe_question(out[2]) == "Who wrote Hamlet? Sure, I know this one. The answer is"  # asked as is
    assert out[1].id == "ws:q:0:role-play"


def test_trim_to_sentence():
    from obliviate.recipes.real_target import trim_to_sentence

    assert trim_to_sentence("One. Two. Thr") == "One. Two."
    assert trim_to_sentence("One sentence that was cut before the en") == "One sentence that was cut before the en"
    assert trim_to_sentence("A. Then a very long unfinished second sentence goes on") == \
        "A. Then a very long unfinished second sentence goes on"  # cutting would drop more than half
    assert trim_to_sentence("Done.") == "Done."


# ------------------------------------------------------------------------------------------------- the built-in set

def test_builtin_set_invariants():
    from obliviate.data.real_targets import answer_hit, read_realworld

    s = read_realworld()
    assert len(s.targets) >= 8 and len(s.general) >= 20 and s.retain_prompts and s.corpus_prompts
    for t in s.targets:
        known = t.known["smollm2-135m"]
        written = [p for p in t.forget_probes() if not p.framed]
        assert known["probes"] == len(written) and known["accuracy"] >= 0.5, t.name
        assert known["answered"] / known["probes"] == pytest.approx(known["accuracy"], abs=1e-3)
        assert t.neighbor_probes() and t.name not in t.neighbors
        # the retain corpus is written about entities the neighbour probes do not ask about (held-out neighbours)
        assert not set(t.retain_entities) & set(t.neighbors), t.name
        # ... nor about the answers of the utility probes
        assert not any(answer_hit(e, g.answers) for e in t.retain_entities for g in s.general), t.name
        assert {p.kind for p in t.forget_probes()} == {"cloze", "question", "adversarial"}
        n_q = len(t.probes["question"])
        assert sum(p.framed for p in t.probes["adversarial"]) == 3 * n_q
    ids = [p.id for t in s.targets for ps in t.probes.values() for p in ps] + [p.id for p in s.general]
    assert len(ids) == len(set(ids))
    assert s.target("albert einstein").name == "Albert Einstein"


def test_read_realworld_errors_name_file_record_and_field(tmp_path):
    from obliviate.data.real_targets import read_realworld
    from obliviate.errors import DataError

    p = tmp_path / "rw.json"
    p.write_text(json.dumps({"targets": [{"name": "X", "question": [{"query": "Q?", "answer": []}]}]}))
    with pytest.raises(DataError, match=r"rw.json: target 0 \(X\): question 0: field 'answer'"):
        read_realworld(p)
    p.write_text(json.dumps({"targets": [{"name": "X", "question": [{"query": "Q?", "answer": "A"}],
                                          "neighbor": [{"query": "N?", "answer": "B"}]}]}))
    with pytest.raises(DataError, match=r"neighbor 0: field 'entity'"):
        read_realworld(p)
    p.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_realworld(p)
    with pytest.raises(DataError, match="no target 'Nobody'"):
        read_realworld().target("Nobody")


# ------------------------------------------------------------------------------------------------ RWKU as published

@pytest.mark.skipif(not RWKU.is_dir(), reason=f"RWKU data not found at {RWKU}")
def test_rwku_target_probes_as_published():
    from obliviate.data.real_targets import from_rwku, probe_question
    from obliviate.data.rwku import load_target

    raw = json.loads((RWKU / "117_Elon_Musk" / "forget_level1.json").read_text())
    t = from_rwku(load_target(RWKU, "Elon Musk", texts=False))
    assert t.name == "Elon Musk"
    assert [(p.query, p.answers) for p in t.probes["cloze"]] == [(r["query"], [r["answer"]]) for r in raw]
    n_l3 = len(json.loads((RWKU / "117_Elon_Musk" / "forget_level3.json").read_text()))
    assert len(t.probes["adversarial"]) + len(t.probes["reverse"]) == n_l3
    assert t.probes["reverse"] and all(p.type == "reverse query" for p in t.probes["reverse"])
    nb = json.loads((RWKU / "117_Elon_Musk" / "neighbor_level2.json").read_text())
    assert t.probes["neighbor"][-1].entity == nb[-1]["neighbor"] and t.probes["neighbor"][-1].type == "question"
    assert probe_question(t.probes["cloze"][0]).endswith(raw[0]["query"])


# ------------------------------------------------------------------------------------------------------ TOFU subset

@pytest.mark.skipif(not TOFU.is_dir(), reason=f"TOFU data not found at {TOFU}")
def test_tofu_subset_counts_and_fingerprint():
    from obliviate.data import load_benchmark
    from obliviate.data.benchmark import tofu_subset
    from obliviate.errors import ConfigError

    bench = load_benchmark(TOFU, "forget01")
    sub = tofu_subset(bench, authors=5)
    assert len(sub.forget) == 40 and sub.forget == bench.forget  # forget01: 2 authors x 20
    assert sub.retain == bench.retain[:60] and sub.full == sub.retain + sub.forget
    assert {it.question for it in sub.retain_eval} <= {it.question for it in sub.retain} and len(sub.retain_eval) == 60
    assert sub.utility.keys() == bench.utility.keys()
    small = tofu_subset(bench, authors=3, facts_per_author=2)
    assert len(small.forget) == 4 and len(small.retain) == 2
    assert small.forget == [bench.forget[0], bench.forget[1], bench.forget[20], bench.forget[21]]
    fps = {bench.fingerprint(), sub.fingerprint(), small.fingerprint()}
    assert len(fps) == 3  # caches keyed by the fingerprint keep the subsets apart
    with pytest.raises(ConfigError, match="at least 3"):
        tofu_subset(bench, authors=2)


@pytest.mark.skipif(not RWKU.is_dir(), reason=f"RWKU data not found at {RWKU}")
def test_resolve_target_builtin_and_rwku():
    from obliviate.data.real_targets import read_realworld
    from obliviate.recipes.forget import resolve
    from obliviate.recipes.real_target import REAL_TARGET

    s = read_realworld()
    assert resolve(REAL_TARGET, s).name == REAL_TARGET
    t = resolve("117", s, rwku=RWKU)
    assert t.name == "Elon Musk" and t.retain_entities == [] and len(t.forget_probes()) == 20 + 19 + 40


def test_cli_lists_builtin_targets(capsys):
    from obliviate.cli import main
    from obliviate.data.real_targets import read_realworld

    assert main(["demo", "--list-targets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(read_realworld().targets)
    assert out[0].startswith("Albert Einstein") and "smollm2-135m accuracy 0.583" in out[0]


def test_real_demo_stops_at_a_target_the_model_does_not_know(random_model, tmp_path, monkeypatch):
    """An untrained model knows none of Einstein's probes: one DataError after the forget probes alone, nothing written."""
    from obliviate.errors import DataError
    from obliviate.models import save_model
    from obliviate.recipes import real_target as realworld
    from obliviate.recipes.forget import forget

    model, tok = random_model
    save_model(model, tok, tmp_path / "m")
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    asked = []
    real_answer = realworld.answer_probes

    def counting(model, tok, probes, *a, **k):
        asked.append(len(probes))
        return real_answer(model, tok, probes, *a, **k)

    monkeypatch.setattr(realworld, "answer_probes", counting)
    from obliviate.data.real_targets import read_realworld, screen_probes

    n_forget = len(screen_probes(read_realworld().target(realworld.REAL_TARGET).forget_probes())[0])
    with pytest.raises(DataError, match=r"Albert Einstein: knows cloze 0/\d+, question 0/\d+.*needs at least"):
        forget(tmp_path / "out", realworld.REAL_TARGET, model=str(tmp_path / "m"),
               gen=realworld.GenSettings(probe_tokens=4), progress=False, log=lambda *a: None)
    assert sum(asked) == n_forget and max(asked) <= 64  # in chunks; neighbour and general probes never asked
    assert not (tmp_path / "out").exists()
