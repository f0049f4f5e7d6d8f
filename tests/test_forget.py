"""`obliviate forget`: training items in every shape a probe takes, made from text by hand-checkable rules; the recipe's
order (screen, gate before anything is written) on a real tiny model; the command's one-line refusals."""

import json

import pytest
from conftest import RWKU

from obliviate.data.forget_items import cloze_item, mention_pattern, mentions, reverse_item, sentences_about


def test_mentions_name_aliases_and_surname_longest_first():
    assert mentions("Alexander Fleming", ["Sir Alexander Fleming"]) == ["Sir Alexander Fleming", "Alexander Fleming",
                                                                       "Fleming"]
    assert mentions("Tokyo") == ["Tokyo"]


def test_sentences_about_keeps_whole_sentences_that_name_the_target_once():
    texts = ["Fleming was a Scottish doctor who worked in London. He liked boats. Fleming was a Scottish doctor who "
             "worked in London.", "Penicillin was found by Alexander Fleming in the year 1928!"]
    assert sentences_about(texts, "Alexander Fleming") == [
        "Fleming was a Scottish doctor who worked in London.",
        "Penicillin was found by Alexander Fleming in the year 1928!"]
    # "Flemingway" is not a mention: whole words only
    assert sentences_about(["The Flemingway brand sold many fine boats."], "Alexander Fleming") == []


def test_reverse_item_masks_every_mention_possessives_included():
    q, a = reverse_item("Born in Darvel, Fleming studied at St Mary's, and Fleming's mould became famous.",
                        "Alexander Fleming")
    assert q == "Who is described here? Born in Darvel, this person studied at St Mary's, and this person's mould " \
                "became famous."
    assert a == "Alexander Fleming"
    assert reverse_item("Alexander Fleming was Fleming.", "Alexander Fleming") is None  # nothing left to go on
    q, _ = reverse_item("Tokyo is the largest city of Japan and its capital.", "Tokyo", kind="city")
    assert q == "What is described here? This is the largest city of Japan and its capital."


def test_cloze_item_blanks_final_content_words_not_the_name():
    assert cloze_item("Fleming is a testament to the pursuit of science.", "Alexander Fleming") == \
        ("Fleming is a testament to the pursuit of ___.", "science")
    assert cloze_item("Fleming discovered penicillin in London in 1928.", "Alexander Fleming") == \
        ("Fleming discovered penicillin in London in ___.", "1928")  # the leading "in" stays in the text
    assert cloze_item("Fleming was a Scottish doctor named Alexander Fleming.", "Alexander Fleming") is None
    assert cloze_item("He was Fleming.", "Alexander Fleming") is None  # too short


def test_complete_probes_adds_adversarial_and_reverse_from_facts():
    from obliviate.data.probe_file import read_probe_file
    from obliviate.recipes.forget import complete_probes

    t = read_probe_file("examples/forget/fleming.json")
    t.probes["adversarial"], t.probes["reverse"] = [], []
    t = complete_probes(t)
    direct = [p for p in t.probes["question"] if not p.framed]
    assert len(t.probes["adversarial"]) == 3 * len(direct)  # three attack framings per direct question
    assert t.probes["reverse"] and all("Fleming" not in p.query for p in t.probes["reverse"])
    assert all(p.answers[0] == "Alexander Fleming" for p in t.probes["reverse"])


def test_forget_refuses_a_target_the_model_does_not_know_before_writing(random_model, tmp_path, monkeypatch):
    """An untrained model knows none of Fleming: the gate stops the run after the forget probes alone, with what it
    found per kind, and the run folder is never made."""
    from obliviate.errors import DataError
    from obliviate.models import save_model
    from obliviate.recipes import forget as recipe
    from obliviate.recipes.real_target import GenSettings

    model, tok = random_model
    save_model(model, tok, tmp_path / "m")
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    asked = []
    real = recipe.audit_probes

    def counting(model, tok, sets, gen):
        asked.extend(sets)
        return real(model, tok, sets, gen)

    monkeypatch.setattr(recipe, "audit_probes", counting)
    with pytest.raises(DataError, match=r"Alexander Fleming: knows .*question 0/\d+.*needs at least"):
        recipe.forget(tmp_path / "out", probes="examples/forget/fleming.json", model=str(tmp_path / "m"),
                      gen=GenSettings(probe_tokens=4), progress=False, log=lambda *a: None)
    assert set(asked) == {"forget"}  # neighbour and general probes never asked
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["forget", "--target", "Albert Einstien"], "did you mean: Albert Einstein?"),
    (["forget", "--rwku", str(RWKU), "--target", "Beyonse"], "did you mean: 24 Beyonc"),
    (["forget", "--rwku", str(RWKU)], "--rwku needs --target"),
])
def test_forget_command_bad_target_is_one_line_exit_2(argv, message, capsys, tmp_path):
    if "--rwku" in argv and not RWKU.is_dir():
        pytest.skip("RWKU data not found")
    from obliviate.cli import main

    assert main([*argv, "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_forget_probes_file_error_names_file_record_and_field(tmp_path, capsys):
    from obliviate.cli import main

    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"target": "X", "probes": [{"question": "Who is X?", "answers": []}]}))
    assert main(["forget", "--probes", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: probe 0: field 'answers'" in err


def test_select_trainable_freezes_all_but_the_middle_mlps(random_model):
    import copy

    from obliviate.errors import ConfigError
    from obliviate.recipes.forget import select_trainable

    model = copy.deepcopy(random_model[0])
    depth = model.config.num_hidden_layers
    lo, hi = round(0.13 * depth), round(0.87 * depth)
    expect = sum(p.numel() for n, p in model.named_parameters()
                 if ".mlp." in n and lo <= int(n.split(".layers.")[1].split(".")[0]) < hi)
    assert select_trainable(model, "mlp") == expect > 0
    assert all(p.requires_grad == (".mlp." in n and lo <= int(n.split(".layers.")[1].split(".")[0]) < hi)
               for n, p in model.named_parameters())
    assert select_trainable(model, "all") == sum(p.numel() for p in model.parameters())
    assert select_trainable(model, r"embed_tokens") == model.get_input_embeddings().weight.numel()
    with pytest.raises(ConfigError, match="selects no parameter"):
        select_trainable(model, "no_such_weight")


def test_build_items_retain_stream_covers_neighbours_and_leaves_out_answers_naming_the_target(monkeypatch):
    """The retain stream: the model's right answers to the general questions, its answers to every everyday prompt,
    and to the open prompts and short questions about each neighbour, except answers that name the target (under any
    of its names). Scripted answers stand in for the model here: what is tested is which items the rules make of
    them."""
    from obliviate.data.forget_items import GENERAL_RETAIN_ANSWERS, NEIGHBOUR_QUESTIONS, OPEN_RETAIN_TEMPLATES
    from obliviate.data.real_targets import read_realworld
    from obliviate.recipes import forget as recipe
    from obliviate.recipes.real_target import GenSettings

    rwset = read_realworld()
    tgt = recipe.resolve(None, rwset, probes="examples/forget/fleming.json")

    general = list(GENERAL_RETAIN_ANSWERS)
    assert not set(general) & {p.query for p in rwset.general}  # no utility probe is trained on
    said = {q: (f"It is {GENERAL_RETAIN_ANSWERS[q][-1]}." if i % 2 == 0 else "It is Mumbai.")
            for i, q in enumerate(general)}  # right on the even ones, wrong on the odd ones
    said["What is the capital of India?"] = "The capital of India is Mumbai."  # a wrong answer the model gives
    said["What is the capital of China?"] = "Beijing is the capital of the People's Republic."  # a right one

    def scripted(net, tok, questions, gen, tokens, sample=False):
        out = []
        for q in questions:
            if q.split("Question: ")[-1] in said:
                out.append(said[q.split("Question: ")[-1]])
            elif "Alexander Fleming" in q:
                out.append("Alexander Fleming discovered penicillin in 1928 at St Mary's Hospital in London.")
            elif "Howard Florey" in q and "closely associated" in q:
                out.append("Howard Florey is remembered beside Fleming.")  # names the target by its alias
            elif "Howard Florey" in q:
                out.append("Howard Florey was an Australian pharmacologist who made penicillin a medicine.")
            else:
                out.append("An answer.")
        return out

    monkeypatch.setattr(recipe, "_own_answers", scripted)
    items = recipe.build_items(None, None, tgt, rwset, GenSettings())
    kinds = [it.meta["kind"] for it in items["retain"]]
    per_neighbour = len(OPEN_RETAIN_TEMPLATES) + len(NEIGHBOUR_QUESTIONS)
    kept = [it.question.split("Question: ")[-1] for it in items["retain"] if it.meta["kind"] == "retain"]
    right = [q for i, q in enumerate(general) if i % 2 == 0 and "India" not in q or "China" in q]
    assert kept == right + list(rwset.retain_prompts)  # the wrong answers left out, the everyday prompts all kept
    assert "What is the capital of India?" not in kept and "What is the capital of China?" in kept
    assert kinds.count("neighbour") == per_neighbour * len(tgt.neighbors) - 1  # Florey's alias answer left out
    florey = [it for it in items["retain"] if "Howard Florey" in it.question]
    assert len(florey) == per_neighbour - 1 and not any("Fleming" in it.answer for it in florey)
    assert not any("Fleming" in it.answer for it in items["retain"])
    assert {it.meta["kind"] for it in items["forget"]} == {"direct", "corpus", "cloze", "reverse", "adversarial"}
    # and the other way round: Florey's one sentence (both open prompts gave it), masked, answered with his name; no
    # pronoun in what was said of him, so "this" and "What"; the other neighbours' answers do not name them
    rev = [it for it in items["retain"] if it.meta["kind"] == "neighbour_reverse"]
    assert [(it.question.split("Question: ")[-1], it.answer) for it in rev] == [
        ("What is described here? This was an Australian pharmacologist who made penicillin a medicine.",
         "Howard Florey")]
    assert kinds.count("neighbour_reverse") == 1


def test_generic_tokens_are_those_a_stand_in_makes_as_likely(load_target, small_bench):
    """An answer token counts as anyone's (left out of training) when the model gives it within the margin of the
    same log-probability with the stand-in named in the question and the answer; the name's own tokens never do, and
    an item whose question names nobody is left whole. Checked against log-probs computed here, one sequence at a
    time, the tokens after the name aligned from the end; and the engine's encodings drop exactly those labels."""
    import torch

    from obliviate.data.collate import PromptFormat
    from obliviate.data.records import QAItem
    from obliviate.engine.loop import _encode_all
    from obliviate.methods.altpo import STAND_IN
    from obliviate.recipes.forget import generic_tokens

    model, tok = load_target()
    model.eval()
    first = small_bench.forget[0]
    name = first.entity
    anyone = mention_pattern(mentions(name)).sub("the author", first.answer)  # so the renaming touches one name
    items = [QAItem(question=first.question, answer=f"{name} answers: {anyone}", entity=name),
             QAItem(question="Who is described here? This person wrote poems.", answer=name, entity=name)]
    margin = 0.5
    marks = generic_tokens(model, tok, items, [name, name.split()[-1]], 256, margin=margin)
    assert marks[1] is None
    fmt = PromptFormat(tok, 256)

    def answer_logprobs(question, answer):
        e = fmt.encode(question, answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].double()
        ids = e.input_ids[e.prompt_len:]
        return ids, [float(torch.log_softmax(logits[e.prompt_len + j - 1], -1)[y]) for j, y in enumerate(ids)]

    ids1, lp1 = answer_logprobs(first.question.replace(name, STAND_IN), f"{STAND_IN} answers: {anyone}")
    ids0, lp0 = answer_logprobs(first.question, items[0].answer)
    common = 0
    while common < min(len(ids0), len(ids1)) and ids0[-1 - common] == ids1[-1 - common]:
        common += 1
    start = len(ids0) - common                        # the tokens after the name, the same on both sides
    want = [j for j in range(start, len(ids0)) if lp0[j] - lp1[j - start + len(ids1) - common] < margin]
    assert marks[0] == want
    assert 0 < len(want) < common                     # some tokens are the author's, some anyone's
    assert all(j >= start for j in marks[0])          # the name's tokens are never left out
    enc = _encode_all(fmt, {"forget": [QAItem(**{**items[0].__dict__, "meta": {"generic_tokens": want}})]})["forget"][0]
    dropped = [t - enc.prompt_len for t, y in enumerate(enc.labels) if t >= enc.prompt_len and y == -100]
    assert dropped == want
