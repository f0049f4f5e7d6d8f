"""MUSE's verbatim and knowledge memorisation audits: prefixes, continuations and ROUGE, checked by hand."""

import json

import pytest
import torch

from obliviate.audit.verbmem import cut_documents, knowmem, qa_as_documents, read_verbmem, verbmem
from obliviate.data import Document, PromptFormat
from obliviate.errors import DataError
from obliviate.scoring import metrics as M


def _lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _rouge_l_f1_by_hand(generation, reference):
    """ROUGE-L F1 written out: lowercase alphanumeric words, Porter stems of words longer than 3 letters (as the
    rouge-score package tokenises), the longest common subsequence."""
    import re

    from nltk.stem.porter import PorterStemmer

    stem = PorterStemmer().stem

    def words(text):
        return [stem(w) if len(w) > 3 else w for w in re.sub(r"[^a-z0-9]+", " ", text.lower()).split()]

    g, r = words(generation), words(reference)
    lcs = _lcs(r, g)
    if not lcs:
        return 0.0
    p, rec = lcs / len(g), lcs / len(r)
    return 2 * p * rec / (p + rec)


def test_rouge_l_f1_by_longest_common_subsequence():
    ref, gen = "the cat sat on the mat".split(), "the cat lay on the mat today".split()
    lcs = _lcs(ref, gen)
    assert lcs == 5
    p, r = lcs / len(gen), lcs / len(ref)
    assert M.rouge_l_f1(" ".join(gen), " ".join(ref)) == pytest.approx(2 * p * r / (p + r))
    assert M.rouge_l_f1("", " ".join(ref)) == 0.0
    assert _rouge_l_f1_by_hand(" ".join(gen), " ".join(ref)) == pytest.approx(2 * p * r / (p + r))
    assert M.rouge_l_f1("He writes books.", "she wrote a book") == pytest.approx(_rouge_l_f1_by_hand(
        "He writes books.", "she wrote a book"))                        # stems: book/books match, wrote/write not


def test_documents_are_cut_into_prefix_and_true_continuation(random_model):
    _, tok = random_model
    text = "Nyyth Selis was born in Vastead. Nyyth Selis writes philosophy and plays the harp."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    (case,) = cut_documents(tok, [Document(text, id="d1"), Document("short", id="d2")], prefix_tokens=6,
                            max_new_tokens=4)
    assert case.prompt_ids == [tok.bos_token_id] + ids[:6]
    assert case.truth == tok.decode(ids[6:10]).strip() and case.id == "d1"


def test_qa_items_as_text_keep_the_prompt_and_the_first_answer_tokens(random_model, small_bench):
    _, tok = random_model
    fmt = PromptFormat(tok)
    it = small_bench.forget[0]
    (case,) = qa_as_documents(fmt, [it], answer_prefix_tokens=2)
    a_ids = tok(" " + it.answer, add_special_tokens=False)["input_ids"]
    assert case.prompt_ids == fmt.prompt_ids(it.question) + a_ids[:2]
    assert case.truth == tok.decode(a_ids[2:]).strip()


def test_verbmem_continues_greedily_and_averages_rouge(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    cases = qa_as_documents(fmt, small_bench.forget[:3])
    out = verbmem(model, tok, cases, max_new_tokens=6, batch_size=3)
    for case, row in zip(cases, out["per_item"]):
        cur = list(case.prompt_ids)
        for _ in range(6):
            with torch.no_grad():
                nxt = int(model(input_ids=torch.tensor([cur])).logits[0, -1].argmax())
            cur.append(nxt)
            if nxt == tok.eos_token_id:
                break
        assert row["generation"] == tok.decode(cur[len(case.prompt_ids):], skip_special_tokens=True).strip()
    f1 = [_rouge_l_f1_by_hand(r["generation"], r["truth"]) for r in out["per_item"]]
    assert out["rougeL_f1"] == pytest.approx(sum(f1) / 3)


def test_verbmem_file_in_muse_format(random_model, tmp_path):
    _, tok = random_model
    path = tmp_path / "verbmem.json"
    path.write_text(json.dumps([{"prompt": "Once upon a time", "gt": "there was a king."}]))
    (case,) = read_verbmem(path, tok)
    assert case.prompt_ids == tok("Once upon a time")["input_ids"] and case.truth == "there was a king."
    path.write_text(json.dumps([{"prompt": "Once upon a time"}]))
    with pytest.raises(DataError, match=r"verbmem.json: record 0: field 'gt'"):
        read_verbmem(path, tok)


def test_knowmem_target_recalls_forget_facts_the_oracle_does_not(trained_models, small_bench):
    from obliviate.models import load_model

    out = {}
    for name in ("target", "oracle"):
        model, tok = load_model(trained_models[name], dtype="fp32", device="cpu")
        out[name] = knowmem(model, tok, PromptFormat(tok), small_bench.forget[:4], small_bench.retain, shots=1,
                            max_new_tokens=16)
    for row in out["target"]["per_item"] + out["oracle"]["per_item"]:
        assert row["rougeL_f1"] == pytest.approx(_rouge_l_f1_by_hand(row["generation"], row["answer"]))
    for name in ("target", "oracle"):
        rows = out[name]["per_item"]
        assert out[name]["rougeL_f1"] == pytest.approx(sum(r["rougeL_f1"] for r in rows) / len(rows))
    assert out["target"]["rougeL_f1"] > out["oracle"]["rougeL_f1"] + 0.2
