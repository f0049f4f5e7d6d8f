"""Unlearning documents (issue 16): token windows, corpus training, QA-only refusals, the synthetic news benchmark,
MUSE's layout and audit, the document demo, WMDP-style multiple choice and the offline lm-eval path.

Every metric is checked against a computation written here with plain loops (ROUGE-L by an LCS table, Min-K% and the
AUC by counting pairs, choice log-likelihoods token by token)."""

import json
import math

import numpy as np
import pytest
import torch

from obliviate.data.documents import DocChunk, check_method_for_documents, chunk_documents, needs_qa
from obliviate.data.records import Document
from obliviate.errors import ConfigError, DataError

QA_ONLY = ("IdkDPO", "IdkNLL", "AltPO", "Scope", "AttentionShift", "ReVa", "KFADE", "TaskVector", "WHP")
PLAIN_TEXT = ("GradAscent", "GradDiff", "NPO", "SimNPO", "RMU", "UNDIAL", "WGA", "SatImp", "CEU")


def test_chunks_are_token_windows_with_stride(random_model):
    _, tok = random_model
    doc = Document("The lighthouse of Torlodun opened on a Thursday before a large crowd of people.", id="d")
    ids = [tok.bos_token_id] + tok(doc.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids)
    plain = chunk_documents([doc], tok, max_length=8)
    assert [c.input_ids for c in plain] == [ids[s:s + 8] for s in range(0, n, 8) if len(ids[s:s + 8]) >= 2]
    assert sum(len(c.input_ids) for c in plain) >= n - 1  # every token in a window (a lone last one predicts nothing)
    strided = chunk_documents([doc], tok, max_length=8, stride=3)
    starts, s = [], 0
    while True:  # windows start every 3 tokens until one reaches the end
        starts.append(s)
        if s + 8 >= n:
            break
        s += 3
    assert [c.input_ids for c in strided] == [ids[s:s + 8] for s in starts]
    assert strided[-1].input_ids[-1] == tok.eos_token_id and strided[0].id == "d:0"
    # the engine encodes a window as itself: labels = input ids, no prompt
    from obliviate.data.collate import PromptFormat
    from obliviate.engine.loop import _encode_all

    enc = _encode_all(PromptFormat(tok, 8), {"forget": strided})["forget"]
    assert all(e.labels == e.input_ids == c.input_ids and e.prompt_len == 0 for e, c in zip(enc, strided))
    with pytest.raises(ConfigError, match="stride = 9"):
        chunk_documents([doc], tok, max_length=8, stride=9)
    with pytest.raises(DataError, match="document 1: field 'text' is empty"):
        chunk_documents([doc, Document("  ")], tok, max_length=8)


def test_engine_trains_every_token_of_a_corpus(random_model, tmp_path):
    """Gradient ascent on windows: the first step's loss is minus the token-mean NLL of every window token
    (computed here token by token), and training raises that NLL."""
    import copy

    from obliviate.config import TrainConfig
    from obliviate.engine import train
    from obliviate.methods import make_method

    model0, tok = random_model
    docs = [Document("Corren Quivordun opened the Golden Harbor lighthouse in Torlodun."),
            Document("Vawen Kafenka, a soldier from Braostha, called it overdue.")]
    chunks = chunk_documents(docs, tok, max_length=12)

    def hand_nll(model):
        total, count = 0.0, 0
        with torch.no_grad():
            for c in chunks:
                logits = model(input_ids=torch.tensor([c.input_ids])).logits[0]
                for t in range(1, len(c.input_ids)):
                    total -= torch.log_softmax(logits[t - 1].double(), -1)[c.input_ids[t]].item()
                    count += 1
        return total / count

    before = hand_nll(model0)
    model = copy.deepcopy(model0).train()
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=len(chunks), scheduler="constant", warmup_ratio=0.0,
                      max_length=12, seed=0)
    model = train(model, tok, make_method("GradAscent"), {"forget": chunks}, cfg, tmp_path / "run", progress=False)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["forget_nll"] == pytest.approx(before, rel=1e-4)
    assert hand_nll(model.eval()) > before + 0.1


@pytest.mark.parametrize("name", QA_ONLY)
def test_qa_only_methods_are_refused_on_corpora(name):
    from obliviate.methods import make_method

    m = make_method(name)
    assert needs_qa(m)
    with pytest.raises(ConfigError, match=rf"method {m.name} needs question-answer items \(.+\), and a document "):
        check_method_for_documents(m)


def test_plain_text_methods_are_accepted():
    from obliviate.methods import make_method

    for name in PLAIN_TEXT:
        check_method_for_documents(make_method(name))  # no error
    check_method_for_documents(make_method("GU", inner="NPO"))
    with pytest.raises(ConfigError, match="method GU needs question-answer items"):  # a wrapper of a QA-only method
        check_method_for_documents(make_method("GU", inner="IdkDPO"))


def test_cli_refuses_a_qa_method_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from obliviate.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--docs", "--method", "IdkDPO", "--out", str(tmp_path / "run")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("obliviate: error:")]
    assert len(err) == 1 and "IdkDPO needs question-answer items" in err[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_news_benchmark_in_muse_layout(tmp_path, capsys):
    from obliviate.cli import main
    from obliviate.data.muse import load_muse
    from obliviate.data.news import NewsConfig, make_news

    assert make_news(NewsConfig(seed=3)) == make_news(NewsConfig(seed=3)) != make_news(NewsConfig(seed=4))
    assert main(["data", "synth", "--kind", "news", "--out", str(tmp_path / "news")]) == 0
    assert "MUSE's layout" in capsys.readouterr().out
    d = load_muse(tmp_path / "news")
    cfg = NewsConfig()
    assert len(d.privleak["forget"]) == cfg.n_forget and len(d.privleak["holdout"]) == cfg.n_holdout
    assert len(d.forget) == 3 * cfg.n_forget and len(d.retain) == 3 * cfg.n_retain  # article + 2 readers' boxes
    for case, article in zip(d.verbmem, d.privleak["forget"]):
        assert case["prompt"] + " " + case["gt"] == article.text
    forget_text = " ".join(x.text for x in d.forget)
    for it in d.knowmem_forget:
        assert it.answer in forget_text
    # forget answers (invented names) appear nowhere in the retain or holdout corpora
    other = " ".join(x.text for x in d.retain + d.holdout)
    assert all(it.answer not in other for it in d.knowmem_forget)
    assert [len(s) for s in d.scal] == [6, 12, 18, 24] and [len(s) for s in d.sust] == [6] * 4
    with pytest.raises(ConfigError, match="n_forget = 2, .*need n_forget >= 4"):
        NewsConfig(n_forget=2).validate()


def _lcs_recall(generation: str, reference: str) -> float:
    """ROUGE-L recall by hand: rouge-score's tokens (lower-cased, stemmed), longest common subsequence / reference."""
    from rouge_score.tokenizers import DefaultTokenizer

    tk = DefaultTokenizer(use_stemmer=True)
    g, r = tk.tokenize(generation), tk.tokenize(reference)
    table = [[0] * (len(g) + 1) for _ in range(len(r) + 1)]
    for i in range(1, len(r) + 1):
        for j in range(1, len(g) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if r[i - 1] == g[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1] / len(r) if r else 0.0


def _hand_mink(model, tok, text: str, k: float = 0.4) -> float:
    ids = tok(text, add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    lps = sorted(torch.log_softmax(logits[t - 1].double(), -1)[ids[t]].item() for t in range(1, len(ids)))
    m = max(1, int(k * len(lps)))
    return -sum(lps[:m]) / m


def _hand_auc(members, nonmembers) -> float:
    """P(non-member score > member score), ties half: the ROC-AUC with members labelled 0."""
    pairs = [(1.0 if n > m else 0.5 if n == m else 0.0) for m in members for n in nonmembers]
    return sum(pairs) / len(pairs)


def _write_muse(root):
    """A few records in MUSE's published field names and files."""
    (root / "raw").mkdir(parents=True)
    for sub in ("verbmem", "knowmem", "privleak", "sust"):
        (root / sub).mkdir()
    (root / "raw" / "forget.txt").write_text("Harry looked at the castle.\n\nThe owl flew over the lake at dawn.")
    (root / "raw" / "retain1.txt").write_text("The river froze in winter and the mill stopped.")
    (root / "raw" / "retain2.txt").write_text("A baker in the village sold bread every morning.")
    (root / "raw" / "holdout.txt").write_text("Nobody had seen the comet before that year.")
    (root / "verbmem" / "forget.json").write_text(json.dumps([
        {"prompt": "Harry looked at", "gt": "the castle and the owl flew over the lake"},
        {"prompt": "The owl flew", "gt": "over the lake at dawn"}]))
    qa = lambda q, a: {"question": q, "answer": a}  # noqa: E731
    (root / "knowmem" / "forget_qa.json").write_text(json.dumps([qa("What did Harry look at?", "the castle")]))
    (root / "knowmem" / "forget_qa_icl.json").write_text(json.dumps([qa("What colour is snow?", "white"),
                                                                     qa("How many legs has a cat?", "four")]))
    (root / "knowmem" / "retain_qa.json").write_text(json.dumps([qa("What stopped in winter?", "the mill")]))
    (root / "knowmem" / "retain_qa_icl.json").write_text(json.dumps([qa("What colour is snow?", "white")]))
    # muse_bench's privleak files are JSON arrays of strings; the HF release has {"text"} records: both are read
    (root / "privleak" / "forget.json").write_text(json.dumps(["Harry looked at the castle.",
                                                               "The owl flew over the lake at dawn."]))
    (root / "privleak" / "holdout.json").write_text(json.dumps([{"text": "Nobody had seen the comet."},
                                                                {"text": "The tram was late again today."}]))
    (root / "sust" / "forget_1.json").write_text(json.dumps([{"text": "Harry looked at the castle."}]))


def test_muse_layout_loaded_and_audited(tmp_path, random_model):
    from obliviate.audit.muse import icl_prompt, muse_audit, muse_table
    from obliviate.data.muse import load_muse

    model, tok = random_model
    _write_muse(tmp_path / "muse")
    d = load_muse(tmp_path / "muse")
    assert len(d.forget) == 1 and len(d.retain) == 2 and len(d.holdout) == 1 and len(d.verbmem) == 2
    assert [len(s) for s in d.sust] == [1] and d.scal == []
    assert d.privleak["forget"][1].text == "The owl flew over the lake at dawn." and "retain" not in d.privleak
    assert icl_prompt("Q?", d.knowmem_forget_icl) == ("Question: What colour is snow?\nAnswer: white\n\n"
                                                      "Question: How many legs has a cat?\nAnswer: four\n\n"
                                                      "Question: Q?\nAnswer:")
    res = muse_audit(model, tok, d, verbmem_tokens=12, knowmem_tokens=8)
    rows = res["per_item"]["verbmem_f"]
    assert res["verbmem_f"] == pytest.approx(np.mean([_lcs_recall(r["generation"], c["gt"])
                                                      for r, c in zip(rows, d.verbmem)]))
    kr = res["per_item"]["knowmem_r"][0]
    assert "\nQuestion" not in kr["generation"] and res["knowmem_r"] == pytest.approx(
        _lcs_recall(kr["generation"], "the mill"))
    members = [_hand_mink(model, tok, x.text) for x in d.privleak["forget"]]
    nonmembers = [_hand_mink(model, tok, x.text) for x in d.privleak["holdout"]]
    assert res["privleak_auc"] == pytest.approx(_hand_auc(members, nonmembers))
    # privleak against a "retrained" model whose AUC is made up: MUSE's relative gap, by hand
    table = muse_table({"unlearned": res, "oracle": {**res, "privleak_auc": 0.25}})
    expected = ((1 - res["privleak_auc"]) - 0.75) / 0.75 * 100
    assert table["unlearned"]["privleak"] == pytest.approx(expected, abs=1e-6) and table["oracle"]["privleak"] == 0


def test_muse_layout_bad_input(tmp_path):
    from obliviate.data.muse import load_muse

    with pytest.raises(DataError, match="raw/forget is missing"):
        load_muse(tmp_path)
    _write_muse(tmp_path / "m")
    (tmp_path / "m" / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "a", "gt": "b"}, {"prompt": "c"}]))
    with pytest.raises(DataError, match=r"verbmem/forget.json: record 1: field 'gt' is missing"):
        load_muse(tmp_path / "m")


def test_docs_demo_end_to_end_small(tmp_path):
    """The whole document demo on a small news set with a small tiny model: three models audited, the target has
    memorised the forget articles that the oracle never saw, and privleak is measured against the oracle."""
    from obliviate.config import TrainConfig
    from obliviate.data.news import NewsConfig, write_news
    from obliviate.models import TinyConfig
    from obliviate.recipes.docs_demo import run_docs_demo

    root = write_news(tmp_path / "news", NewsConfig(n_forget=4, n_retain=4, n_holdout=4, n_retain_qa=4))
    tiny = TinyConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=192, seed=0)
    ft = TrainConfig(lr=5e-3, epochs=25, batch_size=8, warmup_ratio=0.05, scheduler="linear", max_length=192)
    report = run_docs_demo(tmp_path / "run", "SimNPO", None, {"epochs": 4, "max_length": 192}, data_dir=root,
                           tiny=tiny, finetune_cfg=ft, progress=False, log=lambda *a: None)
    table = report["muse"]
    assert set(table) == {"target", "oracle", "unlearned"}
    assert all({"verbmem_f", "knowmem_f", "knowmem_r", "privleak"} <= set(row) for row in table.values())
    assert table["target"]["verbmem_f"] > table["oracle"]["verbmem_f"] + 0.1
    assert table["oracle"]["privleak"] == 0 and table["target"]["privleak"] < 0
    assert (tmp_path / "run" / "model" / "config.json").exists()
    assert json.loads((tmp_path / "run" / "report.json").read_text())["method"] == "SimNPO"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="a folder that obliviate did not make"):  # refused before any training
        run_docs_demo(tmp_path / "theirs", data_dir=root, log=lambda *a: None)


def _mcq_items():
    from obliviate.audit.mcq import MCQItem

    return [MCQItem("What is the capital of Kalovia?", ["Renmi", "Torvale", "Duneport", "Halmoor"], 2, "0"),
            MCQItem("Who wrote The Silent Harbor?", ["Corren Quivordun", "Vawen Kafenka", "Elqui", "Nyyth"], 0, "1"),
            MCQItem("Which instrument does Pa Rusel play?", ["violin", "cello", "flute", "harp"], 3, "2")]


def test_mcq_accuracy_by_loglikelihood(random_model, tmp_path):
    from obliviate.audit.mcq import format_mcq_table, mcq_accuracy, prompt_and_continuations, read_mcq

    model, tok = random_model
    items = _mcq_items()
    for style in ("letters", "text", "cloze"):
        res = mcq_accuracy(model, tok, items, style=style, subject="biology")
        hits = []
        for it, row in zip(items, res["per_item"]):
            prompt, conts = prompt_and_continuations(it, style, "biology")
            p_ids = tok(prompt, add_special_tokens=True)["input_ids"]
            lls = []
            for c in conts:
                c_ids = tok(c, add_special_tokens=False)["input_ids"]
                ids = p_ids + c_ids
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
                lls.append(sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item()
                               for t in range(len(p_ids), len(ids))))
            assert row["loglik"] == pytest.approx(lls, abs=1e-3)
            hits.append(int(np.argmax(lls)) == it.answer)
        assert res["accuracy"] == pytest.approx(np.mean(hits)) and res["chance"] == 0.25
    assert prompt_and_continuations(items[0], "letters")[0].endswith("\nA. Renmi\nB. Torvale\nC. Duneport\nD. Halmoor"
                                                                     "\nAnswer:")
    assert "chance" in format_mcq_table({"target": {"hazard": res}})
    path = tmp_path / "mcq.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": "B"}\n'
                    '{"question": "q", "choices": ["a", "b"], "answer": 2}\n')
    with pytest.raises(DataError, match=r"mcq.jsonl: line 2|mcq.jsonl: record 1: field 'answer' = 2"):
        read_mcq(path)
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": "B"}\n')
    assert read_mcq(path)[0].answer == 1


def test_wmdp_style_hazard_set_is_taught_by_its_corpus():
    """Each hazard question's right choice is stated in its pathogen's report and no wrong choice is."""
    from obliviate.recipes.docs_demo import hazard_benchmark

    docs, general_text, hazard, general = hazard_benchmark(seed=0)
    assert hazard_benchmark(seed=0)[2] == hazard and len(hazard) == 4 * len(docs) and len(general) >= 10
    report = {d.id: d.text for d in docs}
    for it in hazard:
        text = report[it.id.split(":")[0]]
        assert f"{it.question} {it.choices[it.answer]}" in text
        assert not any(f"{it.question} {c}" in text for j, c in enumerate(it.choices) if j != it.answer)
    assert not any(d.id in t.text for d in docs for t in general_text)


def test_lm_eval_offline_local_task(random_model, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install 'obliviate[lm-eval]')")
    from obliviate.audit.lm_eval import lm_eval_tasks
    from obliviate.audit.mcq import mcq_accuracy

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = random_model
    items = _mcq_items()
    data = tmp_path / "tasks" / "local_mcq.jsonl"
    data.parent.mkdir()
    data.write_text("\n".join(json.dumps({"question": it.question, "choices": it.choices, "answer": it.answer})
                              for it in items))
    (tmp_path / "tasks" / "local.yaml").write_text(
        "task: obliviate_local_mcq\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    out = lm_eval_tasks(model, tok, "obliviate_local_mcq", include_path=tmp_path / "tasks")
    ours = mcq_accuracy(model, tok, items, style="text")
    assert out["obliviate_local_mcq"]["acc,none"] == pytest.approx(ours["accuracy"])
    with pytest.raises(ConfigError, match="unknown task"):
        lm_eval_tasks(model, tok, "no_such_task_xyz", include_path=tmp_path / "tasks")
    assert math.isfinite(out["obliviate_local_mcq"]["acc,none"])


def test_docchunk_keeps_entity(random_model):
    _, tok = random_model
    chunks = chunk_documents([Document("one two three four five six", id="a", entity="E")], tok, max_length=4)
    assert all(isinstance(c, DocChunk) and c.entity == "E" for c in chunks)


def test_unlearn_a_users_own_corpus_from_the_command_line(trained_models, tmp_path, capsys):
    """obliviate unlearn --forget-corpus: the user's documents on their model, the forget text's NLL rising; a QA-only
    method and a missing retain corpus are one line, exit 2, nothing written."""
    import json

    import torch

    from obliviate.cli import main
    from obliviate.data.documents import chunk_documents, read_corpus
    from obliviate.logprobs import forward_logits, nll_mean
    from obliviate.models import load_model

    forget = tmp_path / "forget.jsonl"
    forget.write_text("\n".join(json.dumps({"text": f"The lighthouse keeper Orvan Tesk logged storm {i} at dawn and "
                                                    f"wrote the tide tables by hand."}) for i in range(6)))
    retain = tmp_path / "retain.txt"
    retain.write_text("Rivers run to the sea. The harbour opens at six and closes at nine every day of the week.")
    common = ["unlearn", "--model", str(trained_models["target"]), "--forget-corpus", str(forget), "--max-steps", "3",
              "--batch-size", "2", "--lr", "1e-3", "--max-length", "32", "--quiet"]

    def forget_nll(model_dir):
        net, tok = load_model(model_dir)
        chunks = chunk_documents(read_corpus(forget), tok, 32)
        from obliviate.data.collate import pad_batch
        from obliviate.data.documents import encode_text

        batch = pad_batch([encode_text(c, tok, 32) for c in chunks], tok.pad_token_id)
        with torch.no_grad():
            return nll_mean(forward_logits(net, batch), batch["labels"]).item()

    out = tmp_path / "ga"
    assert main([*common, "--method", "GradAscent", "--out", str(out)]) == 0
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    assert forget_nll(out / "model") > forget_nll(trained_models["target"])
    assert main([*common, "--method", "GradDiff", "--retain-corpus", str(retain), "--out", str(tmp_path / "gd")]) == 0
    capsys.readouterr()
    for extra, needle in ((["--method", "IdkDPO"], "needs question-answer items"),
                          (["--method", "GradDiff"], "give --retain-corpus")):
        bad = tmp_path / "bad"
        assert main([*common, *extra, "--out", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
        assert not bad.exists()
