"""Loaders for every format, TOFU as published, the synthetic benchmark and tokenisation."""

import json

import pytest
from conftest import TOFU

from obliviate.data import (
    PromptFormat,
    SynthConfig,
    load_benchmark,
    make_fictional_authors,
    read_qa,
    read_records,
    write_fictional_authors,
    write_records,
)
from obliviate.errors import DataError

RECORDS = [
    {"question": "Q1?", "answer": "A1.", "paraphrased_answer": "P1.", "perturbed_answer": ["W1.", "W2."]},
    {"question": "Q2?", "answer": "A2.", "author": "Ann", "id": 7},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_every_format_round_trips(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    write_records(path, RECORDS)
    items = read_qa(path)
    assert [it.question for it in items] == ["Q1?", "Q2?"]
    assert items[0].perturbed_answers == ["W1.", "W2."]
    assert items[0].paraphrased_answer == "P1."
    assert items[1].entity == "Ann" and items[1].id == "7"


def test_json_with_one_array_per_line_and_prompt_response_keys(tmp_path):
    path = tmp_path / "multi.json"
    path.write_text(json.dumps([{"prompt": "a?", "response": "b"}]) + "\n" + json.dumps([{"prompt": "c?", "response": "d"}]))
    items = read_qa(path)
    assert [(i.question, i.answer) for i in items] == [("a?", "b"), ("c?", "d")]


@pytest.mark.parametrize("content,message", [
    ("{not json", "line 1: not valid JSON"),
    ('[{"question": "q?"}]', "record 0: field 'answer' is missing"),
    ('[{"question": "q?", "answer": 3}]', "record 0: field 'answer' must be text, got int"),
    ('[{"question": "q?", "answer": "  "}]', "record 0: field 'answer' is empty"),
    ('[{"question": "q?", "answer": "a", "perturbed_answer": [1]}]', "record 0: field 'perturbed_answer' must be"),
    ("[]", "holds no records"),
    ("[1, 2]", "record 0: expected an object"),
])
def test_bad_files_name_file_record_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError) as e:
        read_qa(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


# TOFU's record counts as given in shared/data/SOURCES.md
TOFU_COUNTS = {
    "forget01.json": 40, "forget01_perturbed.json": 40, "forget05.json": 200, "forget05_perturbed.json": 200,
    "forget10.json": 400, "forget10_perturbed.json": 400, "full.json": 4000, "holdout01.json": 40,
    "holdout05.json": 200, "holdout10.json": 400, "real_authors.json": 100, "real_authors_perturbed.json": 100,
    "retain90.json": 3600, "retain95.json": 3800, "retain99.json": 3960, "retain_perturbed.json": 400,
    "world_facts.json": 117, "world_facts_perturbed.json": 117,
}


@pytest.mark.skipif(not TOFU.exists(), reason="shared TOFU data not present")
def test_every_tofu_file_loads_with_the_published_counts():
    for name, count in TOFU_COUNTS.items():
        assert len(read_qa(TOFU / name)) == count, name
    assert len(read_records(TOFU / "full.json")) == 4000  # four JSON arrays, one per line
    pert = read_qa(TOFU / "forget10_perturbed.json")
    assert all(len(it.perturbed_answers) == 5 and it.paraphrased_answer for it in pert)
    full = read_qa(TOFU / "full.json")
    assert [it.answer for it in read_qa(TOFU / "forget10.json")] == [it.answer for it in full[3600:]]
    assert len((TOFU / "idontknow.jsonl").read_text().splitlines()) == 100


@pytest.mark.skipif(not TOFU.exists(), reason="shared TOFU data not present")
def test_tofu_benchmark_splits():
    b = load_benchmark(TOFU, "forget05")
    assert (len(b.forget), len(b.retain), len(b.holdout), len(b.retain_eval)) == (200, 3800, 200, 400)
    assert set(b.utility) == {"ra", "wf"} and len(b.utility["wf"]) == 117
    assert b.forget[0].paraphrased_answer  # the perturbed file is preferred


def test_synthetic_benchmark_is_deterministic_and_tofu_shaped(tmp_path):
    cfg = SynthConfig(n_authors=20, facts_per_author=5, n_holdout_authors=2, n_general=10, seed=3)
    a, b = make_fictional_authors(cfg), make_fictional_authors(cfg)
    assert {k: [i.to_dict() for i in v] for k, v in a.items()} == {k: [i.to_dict() for i in v] for k, v in b.items()}
    assert make_fictional_authors(SynthConfig(**{**cfg.__dict__, "seed": 4}))["full"][0].answer != a["full"][0].answer or \
        make_fictional_authors(SynthConfig(**{**cfg.__dict__, "seed": 4}))["full"][0].question != a["full"][0].question
    forget, retain = a["forget10"], a["retain90"]
    assert len(forget) == 2 * 5 and len(retain) == 18 * 5 and forget + retain != a["full"]
    assert retain + forget == a["full"]
    # forget splits are whole authors, disjoint from retain; holdout authors are never trained
    assert not {i.entity for i in forget} & {i.entity for i in retain}
    assert not {i.entity for i in a["holdout10"]} & {i.entity for i in a["full"]}
    for it in a["full"]:
        assert it.paraphrased_answer and it.paraphrased_answer != it.answer
        assert len(it.perturbed_answers) >= 3 and it.answer not in it.perturbed_answers
        assert len(set(it.perturbed_answers)) == len(it.perturbed_answers)
    # written in the loaders' format
    root = write_fictional_authors(tmp_path / "bench", cfg)
    bench = load_benchmark(root, "forget10")
    assert [i.to_dict() for i in bench.forget] == [i.to_dict() for i in forget]
    assert bench.pretrain and set(bench.utility) == {"ra", "wf"}


def test_tokenisation_masks_the_prompt_and_ends_with_eos(random_model):
    _, tok = random_model
    fmt = PromptFormat(tok)
    enc = fmt.encode("Where was Ann born?", "Ann was born in Kalo.")
    assert enc.prompt == "Question: Where was Ann born?\nAnswer:" and enc.target == " Ann was born in Kalo."
    assert enc.labels[: enc.prompt_len] == [-100] * enc.prompt_len
    assert enc.labels[enc.prompt_len:] == enc.input_ids[enc.prompt_len:]
    assert enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode(enc.input_ids[enc.prompt_len:-1]) == enc.target
    assert enc.input_ids[: enc.prompt_len] == fmt.prompt_ids("Where was Ann born?")


def test_chat_template_is_used_when_present(random_model):
    import copy

    _, tok = random_model
    tok = copy.deepcopy(tok)
    tok.chat_template = "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}[assistant]{% endif %}"
    fmt = PromptFormat(tok)
    enc = fmt.encode("Hi?", "Hello.")
    assert enc.prompt == "<s>[user] Hi?\n[assistant]" and enc.target == "Hello."
    assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids.count(tok.bos_token_id) == 1
    assert tok.decode(enc.input_ids[enc.prompt_len:-1]) == "Hello."


def test_question_longer_than_max_length_is_an_error(random_model):
    _, tok = random_model
    with pytest.raises(DataError, match="longer than max_length 8"):
        PromptFormat(tok, max_length=8).encode("a very long question " * 5, "x", where="forget.json: record 3")
