"""The data layer of `obliviate forget`: alias matching on word boundaries, answers widened to every name of the target,
the user's own probe file (JSON and JSONL) and its error lines, RWKU targets found by name as written, the knowledge
screen (echoes, duplicates) and the knowledge gate. Pure: no model."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
from conftest import REPO, RWKU

from obliviate.data.real_targets import (
    FORGET_KINDS,
    PROBE_KINDS,
    Probe,
    answer_hit,
    answer_match,
    expand_answers,
    knowledge_by_kind,
    knowledge_gate,
    probe_question,
    screen_probes,
)
from obliviate.errors import ConfigError, DataError

FLEMING = REPO / "examples" / "forget" / "fleming.json"
needs_rwku = pytest.mark.skipif(not RWKU.is_dir(), reason=f"RWKU data not found at {RWKU}")


def _p(query, answers, kind="question", target="Alexander Fleming"):
    return Probe(query, list(answers), kind, target, target)


# ------------------------------------------------------------------------------------------------- alias matching

@pytest.mark.parametrize("generation, answers, expected", [
    ("He won the Nobel Prize in Physiology or Medicine.", ["Physiology or Medicine", "Medicine"],
     "Physiology or Medicine"),
    ("It was the prize for medicine.", ["Physiology or Medicine", "Medicine"], "Medicine"),  # alias, case folded
    ("He was awarded it in 1945.", ["1945"], "1945"),
    ("He was awarded it in 19450.", ["1945"], None),  # a longer number is not the year
    ("He was a proud Scot.", ["Scottish", "Scot"], "Scot"),
    ("He was born in Scotland.", ["Scot"], None),  # a prefix of a word is not the word
    ("A Scottish doctor.", ["Scotland"], None),  # nor the other way round
    ("won the 1945 Nobel Memorial Prize in Physics", ["Nobel Prize"], None),  # words must be contiguous
    ("He won the Nobel Prize.", ["Nobel Prize"], "Nobel Prize"),
    ("Beyonce sang it", ["Beyoncé"], "Beyoncé"),  # accents folded, the answer returned as written
    ("J K Rowling wrote it", ["J.K. Rowling"], "J.K. Rowling"),  # punctuation folded
    ("penicillin", ["", "  "], None),  # empty answers never match
])
def test_answer_match_whole_words_and_which_answer(generation, answers, expected):
    assert answer_match(generation, answers) == expected
    assert answer_hit(generation, answers) is (expected is not None)


def test_a_substring_or_bag_of_words_matcher_would_fail_these():
    # a substring matcher finds "Scot" in "Scotland"; a matcher that looks for each answer word anywhere finds
    # "Nobel Prize" in "Nobel Memorial Prize"; the word-run matcher finds neither
    for gen, ans in [("He was born in Scotland.", "Scot"), ("A Scottish doctor.", "Scot")]:
        assert ans.lower() in gen.lower() and not answer_hit(gen, [ans])
    gen = "won the 1945 Nobel Memorial Prize in Physics in 1993"
    assert all(w in gen.lower().split() for w in ("nobel", "prize")) and not answer_hit(gen, ["Nobel Prize"])


def test_answer_match_returns_first_accepted_answer_in_list_order():
    assert answer_match("Alexander Fleming, known as Fleming", ["Fleming", "Alexander Fleming"]) == "Fleming"
    assert answer_match("Alexander Fleming", ["Alexander Fleming", "Fleming"]) == "Alexander Fleming"


# ------------------------------------------------------------------------------------------------- expand_answers

def test_expand_answers_names_the_target_by_name_alias_or_surname():
    aliases = ["Sir Alexander Fleming", "Fleming"]
    # the answer is the target (punctuation and case folded): name, aliases and surname accepted, each once
    assert expand_answers(_p("Who discovered penicillin?", ["alexander fleming."]), "Alexander Fleming", aliases) == [
        "alexander fleming.", "Sir Alexander Fleming", "Fleming"]
    # the surname alone names the person, even with no aliases
    assert expand_answers(_p("Who?", ["Fleming"]), "Alexander Fleming") == ["Fleming", "Alexander Fleming"]
    # an alias names the target too
    assert expand_answers(_p("Who?", ["Sir Alexander Fleming"]), "Alexander Fleming", ["Sir Alexander Fleming"]) == [
        "Sir Alexander Fleming", "Alexander Fleming", "Fleming"]
    # other answers stay as they are
    assert expand_answers(_p("What?", ["penicillin", "Penicillin"]), "Alexander Fleming", aliases) == ["penicillin"]
    assert expand_answers(_p("Who?", ["Alexander"]), "Alexander Fleming", aliases) == ["Alexander"]  # first name: no
    # "Jr." is no surname; a non-person has none
    assert expand_answers(_p("Who?", ["Robert Downey Jr."]), "Robert Downey Jr.") == ["Robert Downey Jr."]
    assert expand_answers(_p("Who?", ["Jr"]), "Robert Downey Jr.") == ["Jr"]
    assert expand_answers(_p("What?", ["Gatsby"]), "The Great Gatsby", person=False) == ["Gatsby"]
    assert expand_answers(_p("What?", ["Gatsby"]), "The Great Gatsby") == ["Gatsby", "The Great Gatsby"]


@needs_rwku
def test_rwku_reverse_queries_become_their_own_kind_with_the_surname_accepted():
    from obliviate.data.real_targets import from_rwku
    from obliviate.data.rwku import load_target

    raw = json.loads((RWKU / "141_J__K__Rowling" / "forget_level3.json").read_text())
    t = from_rwku(load_target(RWKU, 141, texts=False))
    reverse_raw = [r for r in raw if r["type"] == "reverse query"]
    assert [p.query for p in t.probes["reverse"]] == [r["query"] for r in reverse_raw] and reverse_raw
    assert all(p.type == "reverse query" for p in t.probes["reverse"])
    assert len(t.probes["adversarial"]) == len(raw) - len(reverse_raw)
    assert "reverse query" not in {p.type for p in t.probes["adversarial"]}
    assert t.probes["reverse"][0].answers == ["J.K. Rowling", "Rowling"]  # "J.K. Rowling" folds to the target's name
    assert answer_hit("That would be Rowling.", t.probes["reverse"][0].answers)
    assert [p.kind for p in t.forget_probes()] == sorted((p.kind for p in t.forget_probes()), key=FORGET_KINDS.index)
    assert PROBE_KINDS == FORGET_KINDS + ("neighbor",) and t.aliases == []


# ------------------------------------------------------------------------------------------------------ probe file

def test_example_fleming_file_reads_with_kinds_ids_and_neighbours():
    from obliviate.data.probe_file import read_probe_file

    t = read_probe_file(FLEMING)
    raw = json.loads(FLEMING.read_text())
    assert t.name == "Alexander Fleming" and t.aliases == ["Sir Alexander Fleming", "Fleming"] and t.kind == "person"
    assert t.facts == raw["facts"] and 4 <= len(t.facts) <= 6
    want = {"cloze": 0, "question": 0, "reverse": 0, "paraphrase": 0}
    for r in raw["probes"]:
        want[{"direct": "question"}.get(r["kind"], r["kind"])] += 1
    assert {k: len(t.probes.get(k, [])) for k in want} == want and sum(want.values()) == 12
    assert [p.id for p in t.probes["cloze"]] == [f"alexander-fleming:cloze:{i}" for i in range(want["cloze"])]
    rev = t.probes["reverse"][0]
    assert rev.query == "Which scientist discovered penicillin?"
    assert rev.answers == ["Alexander Fleming", "Sir Alexander Fleming", "Fleming"]
    assert answer_match("It was Sir Alexander Fleming.", rev.answers) == "Alexander Fleming"
    nb = t.neighbor_probes()
    assert len(nb) == 14 and {p.kind for p in nb} == {"neighbor"} and all(p.target == t.name for p in nb)
    assert t.neighbors == [n["entity"] for n in raw["neighbors"]]
    assert [p.type for p in nb] == ["cloze" if "___" in p.query else "question" for p in nb]
    assert "cloze" in {p.type for p in nb} and probe_question(nb[2]).startswith("Please complete the blank")
    assert [p.id for p in nb] == [f"alexander-fleming:neighbor:{i}" for i in range(14)]
    kept, excluded = screen_probes(t.forget_probes())
    assert excluded == [] and len(kept) == 12  # the example holds no echo and no duplicate


def _write(tmp_path, data, name="t.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return p


def test_probe_file_minimal_field_spellings_and_target_option(tmp_path):
    from obliviate.data.probe_file import read_probe_file

    t = read_probe_file(_write(tmp_path, {"target": "Marie Curie"}))
    assert t.name == "Marie Curie" and t.forget_probes() == [] and t.aliases == [] and t.kind == "person"
    t = read_probe_file(_write(tmp_path, {"aliases": "Curie", "kind": "person"}), target="Marie Curie")
    assert t.name == "Marie Curie" and t.aliases == ["Curie"]  # the target from --target when the file has none
    p = _write(tmp_path, {"target": "Marie Curie", "probes": [
        {"query": "Marie Curie won how many Nobel Prizes?", "answer": "two"},
        {"question": "What element did Marie Curie discover?", "answers": "polonium", "kind": "direct"},
        {"question": "Who discovered radium?", "kind": "reverse", "answers": ["Curie"]},
        {"question": "Curie shared a prize with ___.", "answers": ["Pierre"], "kind": "paraphrase"},
        {"question": "What is Paris?", "answers": ["capital"], "entity": "Paris"}]})
    t = read_probe_file(p, target="marie curie")  # the same name, folded: accepted
    assert [p.kind for p in t.forget_probes()] == ["question", "question", "reverse", "paraphrase"]
    assert t.probes["question"][0].answers == ["two"] and t.probes["question"][1].answers == ["polonium"]
    assert t.probes["reverse"][0].answers == ["Curie", "Marie Curie"]
    para = t.probes["paraphrase"][0]
    assert para.type == "cloze" and probe_question(para).startswith("Please complete the blank")
    assert t.neighbor_probes()[0].entity == "Paris" and t.neighbors == ["Paris"]
    with pytest.raises(ConfigError, match=r"--target 'Pierre Curie' differs from .*t.json's target 'Marie Curie'"):
        read_probe_file(p, target="Pierre Curie")


def test_probe_file_jsonl_with_target_and_neighbour_lines(tmp_path):
    from obliviate.data.probe_file import read_probe_file

    lines = [{"question": "What did Fleming discover?", "answers": ["penicillin"]},
             {"question": "Which scientist discovered penicillin?", "kind": "reverse"},
             {"question": "Florey was born in ___.", "answers": ["Australia"], "entity": "Howard Florey"},
             {"question": "Fleming was born in ___.", "answers": ["Scotland"], "kind": "cloze",
              "entity": "alexander  FLEMING"}]
    p = _write(tmp_path, "\n".join(json.dumps(r) for r in lines) + "\n\n", "f.jsonl")
    t = read_probe_file(p, target="Alexander Fleming")
    assert [p.id for p in t.forget_probes()] == ["alexander-fleming:cloze:0", "alexander-fleming:question:0",
                                                 "alexander-fleming:reverse:0"]
    assert t.probes["reverse"][0].answers == ["Alexander Fleming", "Fleming"]
    nb = t.neighbor_probes()
    assert len(nb) == 1 and nb[0].entity == "Howard Florey" and nb[0].type == "cloze"
    assert t.neighbors == ["Howard Florey"]
    with pytest.raises(ConfigError, match=r"f.jsonl: a JSONL probe file holds probes only; give the target"):
        read_probe_file(p)
    bad = _write(tmp_path, json.dumps(lines[0]) + "\n{oops\n", "g.jsonl")
    with pytest.raises(DataError, match=r"g.jsonl: line 2: not valid JSON"):
        read_probe_file(bad, target="X")
    bad = _write(tmp_path, json.dumps(lines[0]) + "\n\n" + json.dumps({"question": "Q?"}) + "\n", "h.jsonl")
    with pytest.raises(DataError, match=r"h.jsonl: line 3: field 'answers' is missing"):
        read_probe_file(bad, target="X")


@pytest.mark.parametrize("data, message", [
    ({"probes": []}, "fleming.json: field 'target' is missing or empty"),
    ({"target": "A B", "probes": [{"question": "Q?", "answers": ["x"]}] * 3 + [{"question": "Q?", "answers": []}]},
     "fleming.json: probe 3: field 'answers' must be a non-empty string or list of strings"),
    ({"target": "A B", "probes": [{"question": "Q?", "answer": ["x", 3]}]},
     "fleming.json: probe 0: field 'answer' must be a non-empty string or list of strings"),
    ({"target": "A B", "probes": [{"question": "Q?"}]},
     "fleming.json: probe 0: field 'answers' is missing (only a reverse probe may leave it out)"),
    ({"target": "A B", "probes": [{"answers": "x"}]}, "fleming.json: probe 0: field 'question' is missing or empty"),
    ({"target": "A B", "probes": [{"query": " ", "answers": "x"}]},
     "fleming.json: probe 0: field 'query' is missing or empty"),
    ({"target": "A B", "probes": [{"question": "Q?", "answers": "x", "kind": "riddle"}]},
     "fleming.json: probe 0: field 'kind' is 'riddle'; kinds: direct, cloze, question, reverse, paraphrase, "
     "adversarial"),
    ({"target": "A B", "probes": [{"question": "A B was born in Paris.", "answers": "x", "kind": "cloze"}]},
     "fleming.json: probe 0: field 'question' of a cloze probe must contain the blank ___"),
    ({"target": "A B", "probes": [{"question": "Q?", "anwsers": "x"}]},
     "fleming.json: probe 0: unknown field 'anwsers' (fields: question, answers, kind, id, type)"),
    ({"target": "A B", "probes": ["Q?"]}, "fleming.json: probe 0: must be an object with 'question' and 'answers'"),
    ({"target": "A B", "probes": [{"question": "Q?", "answers": "x", "id": "a"},
                                  {"question": "R?", "answers": "y", "id": "a"}]},
     "fleming.json: probe 1: field 'id' 'a' is already used by probe 0"),
    ({"target": "A B", "neighbors": [{"entity": "C D", "probes": [{"question": "Q?", "answers": ""}]}]},
     "fleming.json: neighbor 0: probe 0: field 'answers' must be a non-empty string or list of strings"),
    ({"target": "A B", "neighbors": ["C D", {"probes": []}]}, "fleming.json: neighbor 1: field 'entity' is missing"),
    ({"target": "A B", "neighbors": ["a b"]}, "fleming.json: neighbor 0: field 'entity' is the target itself"),
    ({"target": "A B", "aliases": ["ok", ""]}, "fleming.json: field 'aliases' must be a non-empty string or list"),
    ({"target": "A B", "probes": {"question": "Q?"}}, "fleming.json: field 'probes' must be a list"),
    ({"target": "A B", "alias": ["x"]}, "fleming.json: unknown field 'alias' (fields: target, aliases, kind,"),
    ([{"question": "Q?", "answers": "x"}], "fleming.json: must be a JSON object with 'target'"),
    ("{not json", "fleming.json: not valid JSON (line 1"),
])
def test_probe_file_errors_name_file_record_and_field(tmp_path, data, message):
    from obliviate.data.probe_file import read_probe_file

    p = _write(tmp_path, data, "fleming.json")
    with pytest.raises(DataError) as e:
        read_probe_file(p)
    line = str(e.value)
    assert "\n" not in line and line.startswith(str(p)) and message in line, line


def test_probe_file_missing_and_not_utf8(tmp_path):
    from obliviate.data.probe_file import read_probe_file

    with pytest.raises(DataError, match=r"nope.json: file not found"):
        read_probe_file(tmp_path / "nope.json")
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match=r"bin.json: not UTF-8 text"):
        read_probe_file(p)


# ------------------------------------------------------------------------------------------------ finding a target

@needs_rwku
@pytest.mark.parametrize("query, tid", [
    ("J. K. Rowling", 141), ("j k rowling", 141), ("JK Rowling", 141), ("J.K. Rowling", 141), (141, 141), ("141", 141),
    ("141_J__K__Rowling", 141), ("Beyoncé", 24), ("Beyonce", 24), ("BEYONCÉ", 24), ("Daniel Day-Lewis", 34),
    ("daniel day lewis", 34), ("Stephen King", 1), ("Ulysses S. Grant", 109), ("Robert Downey Jr.", 87),
])
def test_find_target_by_name_as_written_id_or_folder(query, tid):
    from obliviate.data.rwku import find_target

    i, folder = find_target(RWKU, query)
    intro = json.loads((RWKU / folder / "intro.json").read_text())[0]["target"]
    assert i == tid and folder.startswith(f"{tid}_") and (RWKU / folder).is_dir(), intro


@needs_rwku
def test_find_target_near_misses_name_ids_and_no_match_points_to_the_list():
    from obliviate.data.real_targets import read_realworld
    from obliviate.data.rwku import find_target, load_target

    with pytest.raises(DataError) as e:
        find_target(RWKU, "J. K. Rowlings")
    assert str(e.value) == f"{RWKU}: no RWKU target 'J. K. Rowlings'; did you mean: 141 J. K. Rowling?"
    with pytest.raises(DataError, match=r"no RWKU target 'Beyonse'; did you mean: 24 Beyoncé"):
        find_target(RWKU, "Beyonse")
    # Michael J. Fox is an RWKU target not in this folder: nothing close, the message says how to list them
    with pytest.raises(DataError) as e:
        load_target(RWKU, "Michael J. Fox")
    assert str(e.value) == (f"{RWKU}: no RWKU target 'Michael J. Fox'; "
                            f"`obliviate forget --list-targets --rwku {RWKU}` lists them")
    assert load_target(RWKU, "Daniel Day-Lewis", texts=False).target == "Daniel Day-Lewis"
    # the built-in set suggests near matches too, and still names what it could not find
    with pytest.raises(DataError, match=r"no target 'Albert Einstien'; did you mean: Albert Einstein"):
        read_realworld().target("Albert Einstien")


# ---------------------------------------------------------------------------------------------- knowledge screen

def test_screen_probes_echo_and_duplicate_by_hand():
    probes = [
        _p("What did Alexander Fleming discover?", ["penicillin"]),                        # kept
        _p("Penicillin was discovered by whom?", ["Alexander Fleming"], "reverse"),        # kept
        _p("Which scientist, Alexander Fleming, discovered penicillin?", ["Alexander Fleming", "Fleming"],
           "reverse"),                                                                      # echo: names the target
        _p("what did alexander fleming DISCOVER", ["mould"], "paraphrase"),                 # duplicate of 0 (any kind)
        _p("Fleming worked in ___ (London or Paris).", ["London"], "cloze"),               # echo: answer in options
        _p("Fleming was a Scotsman born in ___.", ["Scot"], "cloze"),                       # kept: Scot is no word here
        _p("Which antibiotic did Fleming find?", ["penicillin"]),                           # kept
        _p("Which antibiotic did Fleming find?", ["penicillin"]),                           # duplicate
    ]
    kept, excluded = screen_probes(probes)
    assert kept == [probes[0], probes[1], probes[5], probes[6]]
    position = {id(p): i for i, p in enumerate(probes)}  # by identity: probes 6 and 7 are equal dataclasses
    assert [(position[id(p)], r) for p, r in excluded] == [(2, "echo"), (3, "duplicate"), (4, "echo"), (7, "duplicate")]


def _fold(text: str) -> str:
    """Independent folding for the test: NFKD, drop combining marks, lower, non-alphanumerics to single spaces."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


@needs_rwku
def test_screen_probes_counts_on_a_real_rwku_target_match_an_independent_count():
    from obliviate.data.real_targets import from_rwku
    from obliviate.data.rwku import load_target

    folder = RWKU / "117_Elon_Musk"
    target = json.loads((folder / "intro.json").read_text())[0]["target"]
    recs = [r for f in ("forget_level1", "forget_level2", "forget_level3")
            for r in json.loads((folder / f"{f}.json").read_text())]
    names = {_fold(target), _fold(target.split()[-1])}
    echoes, rest = 0, []
    for r in recs:
        answers = [r["answer"]] + ([target, target.split()[-1]] if _fold(r["answer"]) in names else [])
        q = f" {_fold(r['query'])} "
        if any(_fold(a) and f" {_fold(a)} " in q for a in answers):
            echoes += 1
        else:
            rest.append(q)
    duplicates = len(rest) - len(set(rest))
    kept, excluded = screen_probes(from_rwku(load_target(RWKU, 117, texts=False)).forget_probes())
    reasons = [r for _, r in excluded]
    assert (reasons.count("echo"), reasons.count("duplicate")) == (echoes, duplicates)
    assert echoes > 0 and duplicates > 0 and len(kept) == len(recs) - echoes - duplicates


# ------------------------------------------------------------------------------------------------ knowledge gate

def test_knowledge_by_kind_counts_rows_in_kind_order():
    rows = [{"kind": k, "hit": h} for k, h in [("adversarial", True), ("cloze", True), ("cloze", False),
                                                ("reverse", False), ("cloze", 1), ("question", 0)]]
    assert knowledge_by_kind(rows) == {
        "cloze": {"asked": 3, "known": 2, "accuracy": 2 / 3}, "question": {"asked": 1, "known": 0, "accuracy": 0.0},
        "reverse": {"asked": 1, "known": 0, "accuracy": 0.0}, "adversarial": {"asked": 1, "known": 1, "accuracy": 1.0}}
    assert list(knowledge_by_kind(rows)) == ["cloze", "question", "reverse", "adversarial"]
    assert knowledge_by_kind([]) == {}


def _by_kind(**counts):
    return {k: {"asked": a, "known": n, "accuracy": n / a} for k, (n, a) in counts.items()}


def test_knowledge_gate_needs_several_kinds_and_enough_hits():
    ok, msg = knowledge_gate(_by_kind(cloze=(5, 20), question=(3, 15), reverse=(0, 4), adversarial=(2, 30)))
    assert ok and msg == "knows cloze 5/20, question 3/15, reverse 0/4, adversarial 2/30: known in 2 kinds"
    # the weak case: 3 hits out of ~77 probes, all in one kind
    ok, msg = knowledge_gate(_by_kind(cloze=(3, 20), question=(0, 19), adversarial=(0, 38)))
    assert not ok and msg == ("knows cloze 3/20, question 0/19, adversarial 0/38: known in 0 kinds; "
                              "needs at least 20% answered in 2 kinds")
    ok, msg = knowledge_gate(_by_kind(cloze=(1, 2), question=(1, 3)))  # two kinds, but 2 hits in all
    assert not ok and msg.endswith("known in 2 kinds; needs at least 3 probes answered in all (has 2)")
    ok, msg = knowledge_gate(_by_kind(cloze=(1, 5)), min_kinds=2, min_known=3)
    assert not ok and msg.endswith("known in 1 kind; needs at least 20% answered in 2 kinds and needs at least 3 "
                                   "probes answered in all (has 1)")
    # neighbour rows are shown, never counted as knowing the target
    ok, msg = knowledge_gate(_by_kind(cloze=(9, 10), neighbor=(9, 10)))
    assert not ok and "neighbor 9/10: known in 1 kind" in msg
    assert knowledge_gate(_by_kind(cloze=(9, 10)), min_kinds=1)[0]
    assert knowledge_gate({}) == (False, "no probes asked: known in 0 kinds; needs at least 20% answered in 2 kinds "
                                         "and needs at least 3 probes answered in all (has 0)")
