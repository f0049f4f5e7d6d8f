"""open-unlearning's protocol pinned by hand, prompt formats, the peer's files, and metrics at extreme values.

Every expected value here is written from the peer's definitions (open-unlearning's src/evals/metrics and
src/trainer/utils.py as docs/metrics.md describes them) in plain Python loops over one model's raw logits, not from
obliviate's metric functions.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest
import torch
from conftest import TOFU

EPS = 1e-10


# ------------------------------------------------------------------------------------------ a tiny model on real TOFU

@pytest.fixture(scope="module")
def tofu_tiny(tmp_path_factory):
    """A tiny Llama fine-tuned for a few steps on a subset of the real TOFU forget01 files (3 authors, 5 facts each;
    the real-authors and world-facts splits whole), and an independent second model as the reference."""
    if not TOFU.exists():
        pytest.skip("shared TOFU data not present")
    from obliviate.config import TrainConfig
    from obliviate.data import load_benchmark
    from obliviate.data.benchmark import tofu_subset
    from obliviate.engine.loop import train
    from obliviate.methods import make_method
    from obliviate.models import TinyConfig, tiny_from_texts
    from obliviate.pipeline import benchmark_texts

    bench = tofu_subset(load_benchmark(TOFU, "forget01"), authors=3, facts_per_author=5)
    tiny = TinyConfig(vocab_size=512, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=512, seed=0)
    torch.manual_seed(0)
    model, tok = tiny_from_texts(benchmark_texts(bench), tiny)
    reference, _ = tiny_from_texts(benchmark_texts(bench), TinyConfig(**{**tiny.to_dict(), "seed": 1}))
    cfg = TrainConfig(lr=3e-3, max_steps=12, batch_size=8, scheduler="constant", max_length=512)
    model = train(model, tok, make_method("finetune"), {"train": bench.forget + bench.retain}, cfg,
                  tmp_path_factory.mktemp("ft"), progress=False)
    return model.eval(), reference.eval(), tok, bench


def _hand_scores(model, ids: list[int], labels: list[int]):
    """Per answer token, from one unpadded forward pass in float64: log p, argmax hit, and Min-K%++'s z with the peer's
    variance E[(log p)^2] - mu^2 clamped at 1e-6."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    lp, hits, z = [], [], []
    for t in range(1, len(ids)):
        if labels[t] == -100:
            continue
        row = logp[t - 1]
        lp.append(row[ids[t]].item())
        hits.append(int(logits[t - 1].argmax()) == ids[t])
        p = row.exp()
        mu = (p * row).sum().item()
        var = max((p * row * row).sum().item() - mu * mu, 1e-6)
        z.append((row[ids[t]].item() - mu) / math.sqrt(var))
    return lp, hits, z


def _avg_loss(lp):
    return -sum(lp) / len(lp)


def _peer_es(hits):  # open-unlearning's extraction_strength loop on the tokens before EOS
    hits = hits[:-1]
    n = len(hits)
    for k in range(n):
        if all(hits[k:]):
            break
    return 1 - k / n


def _peer_min_k(values, k=0.4):
    values = sorted(values[:-1])
    m = max(1, int(len(values) * k))
    return -sum(values[:m]) / m


def _auc(forget, holdout):  # forget labelled 0, holdout 1: P(holdout score > forget score), ties count half
    pairs = [(1.0 if h > f else 0.5 if h == f else 0.0) for f in forget for h in holdout]
    return sum(pairs) / len(pairs)


def _hand_audit(model, tok, bench):
    """Every metric of the peer's TOFU set (plus exact memorisation and the Min-K attacks), by hand."""
    from obliviate.data import PromptFormat

    fmt = PromptFormat(tok, 512)
    out, per_item = {}, {}
    for split, items in bench.eval_splits().items():
        rows = []
        for it in items:
            def score(answer):
                e = fmt.encode(it.question, answer)
                return _hand_scores(model, e.input_ids, e.labels)

            lp, hits, z = score(it.answer)
            row = {"prob": math.exp(-_avg_loss(lp)), "es": _peer_es(hits), "em": sum(hits[:-1]) / (len(hits) - 1),
                   "mink": _peer_min_k(lp), "minkpp": _peer_min_k(z)}
            if it.perturbed_answers:
                true_lp = score(it.paraphrased_answer)[0] if it.paraphrased_answer else lp
                pert = [score(a)[0] for a in it.perturbed_answers]
                p_true = math.exp(-_avg_loss(true_lp))
                p_false = math.exp(-sum(_avg_loss(x) for x in pert) / len(pert))
                row["tr"] = p_false / (p_true + EPS)
                row["tr_prob"] = p_true / (p_true + p_false + EPS)
                p_wrong = sum(math.exp(-_avg_loss(x)) for x in pert)
                row["normalised"] = row["prob"] / (row["prob"] + p_wrong + EPS)
            rows.append(row)
        per_item[split] = rows
        if split == "holdout":
            continue
        out[f"{split}_Q_A_Prob"] = sum(r["prob"] for r in rows) / len(rows)
        if split in ("ra", "wf"):
            out[f"{split}_Q_A_Prob_normalised"] = sum(r["normalised"] for r in rows) / len(rows)
        trs = [r["tr"] for r in rows]
        if split == "forget":
            out["forget_truth_ratio"] = sum(min(t, 1 / (t + EPS)) for t in trs) / len(trs)
            out["extraction_strength"] = sum(r["es"] for r in rows) / len(rows)
            out["exact_memorization"] = sum(r["em"] for r in rows) / len(rows)
        else:
            out[f"{split}_truth_ratio"] = sum(max(0.0, 1 - t) for t in trs) / len(trs)
    out["mia_min_k"] = _auc([r["mink"] for r in per_item["forget"]], [r["mink"] for r in per_item["holdout"]])
    return out, per_item


def test_open_unlearning_protocol_equals_the_peers_formulas_by_hand(tofu_tiny, tmp_path):
    """Every metric of open-unlearning's TOFU set, on a tiny model fine-tuned on the real TOFU files, equals a hand
    computation of the peer's formula to 1e-6; and obliviate's own protocol differs where it should (EOS kept)."""
    from rouge_score import rouge_scorer

    from obliviate.audit.open_unlearning import eval_logs, read_reference
    from obliviate.audit.suite import audit_model, compare_to_oracle
    from obliviate.config import AuditConfig

    model, reference, tok, bench = tofu_tiny
    cfg = AuditConfig(protocol="open-unlearning", max_new_tokens=24, batch_size=16)
    got = audit_model(model, tok, bench, cfg, progress=False)
    ref = audit_model(reference, tok, bench, cfg, progress=False)
    want, hand_rows = _hand_audit(model, tok, bench)
    ref_want, ref_rows = _hand_audit(reference, tok, bench)
    m = got["metrics"]
    for key, value in want.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key
    for split in ("forget", "holdout"):
        for row, hand in zip(got["per_item"][split], hand_rows[split]):
            assert row["mink_score"] == pytest.approx(hand["mink"], abs=1e-6)
            assert row["minkpp_score"] == pytest.approx(hand["minkpp"], abs=1e-4)  # float32 z vs float64
            assert row["extraction_strength"] == pytest.approx(hand["es"], abs=1e-12)
    # ROUGE: rougeL recall of each greedy generation (cut at EOS, stripped) against the answer, as the peer scores
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for split in ("forget", "retain", "ra", "wf"):
        rows = got["per_item"][split]
        want_rouge = sum(scorer.score(r["target"].strip(), r["generation"])["rougeL"].recall for r in rows) / len(rows)
        assert m[f"{split}_Q_A_ROUGE"] == pytest.approx(want_rouge, abs=1e-9)
    # the generations themselves: greedy decoding by hand, one token at a time, for three forget items
    from obliviate.data import PromptFormat

    fmt = PromptFormat(tok, 512)
    for it, row in list(zip(bench.eval_splits()["forget"], got["per_item"]["forget"]))[:3]:
        ids = fmt.prompt_ids(it.question)
        new = []
        with torch.no_grad():
            for _ in range(cfg.max_new_tokens):
                nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
        assert row["generation"] == tok.decode(new, skip_special_tokens=True).strip()
    # model utility: the harmonic mean of the nine values, n / sum(1/x)
    nine = [m[k] for k in ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_truth_ratio", "ra_Q_A_Prob_normalised",
                           "ra_Q_A_ROUGE", "ra_truth_ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE",
                           "wf_truth_ratio")]
    hm = 0.0 if min(nine) <= 0 else len(nine) / sum(1 / x for x in nine)  # scipy's hmean is 0 when a value is
    assert m["model_utility"] == pytest.approx(hm, abs=1e-9)
    # forget quality (KS test of the per-item truth ratios) and privleak against the reference model
    from scipy.stats import ks_2samp

    compare_to_oracle(got, ref)
    want_fq = ks_2samp([r["tr"] for r in hand_rows["forget"]], [r["tr"] for r in ref_rows["forget"]]).pvalue
    assert m["forget_quality"] == pytest.approx(want_fq, abs=1e-6)
    auc, auc_ref = want["mia_min_k"], ref_want["mia_min_k"]
    assert m["privleak"] == pytest.approx(((1 - auc) - (1 - auc_ref)) / ((1 - auc_ref) + EPS) * 100, abs=1e-4)
    # the same reference read back from the peer's file layout gives the same forget quality and privleak
    logs, summary = eval_logs(ref)
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(logs))
    again = compare_to_oracle({**got, "metrics": {k: v for k, v in m.items()
                                                  if k not in ("forget_quality", "privleak")}}, read_reference(path))
    assert again["metrics"]["forget_quality"] == pytest.approx(m["forget_quality"], abs=1e-12)
    assert again["metrics"]["privleak"] == pytest.approx(m["privleak"], abs=1e-9)
    assert set(summary) <= {"forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility",
                            "extraction_strength"}
    # obliviate's protocol keeps the EOS prediction: exact memorisation and Min-K change, the probabilities do not
    own = audit_model(model, tok, bench, AuditConfig(max_new_tokens=1, batch_size=16, generate=False), progress=False)
    assert own["metrics"]["forget_Q_A_Prob"] == pytest.approx(m["forget_Q_A_Prob"], abs=1e-9)
    assert any(a["mink_score"] != pytest.approx(b["mink_score"], abs=1e-9)
               for a, b in zip(own["per_item"]["forget"], got["per_item"]["forget"]))


# ------------------------------------------------------------------------------------------------- extreme values

def test_truth_ratio_and_log_space_metrics_at_extreme_magnitudes():
    from obliviate.scoring import metrics as M

    true, false = [-1.0] * 4, [[-2000.0] * 3, [-1500.0] * 3]  # P_false ~ e^-1750: underflows to 0 in float64
    for protocol in ("obliviate", "open-unlearning"):
        tr = M.truth_ratio(true, false, protocol)
        assert tr == 0.0 or (math.isfinite(tr) and tr < 1e-300)
        assert M.truth_ratio_prob(true, false, protocol) == pytest.approx(1.0)
    # a collapsed model: the true answer 1000 nats less likely than the perturbed ones (math.exp raised OverflowError)
    tr = M.truth_ratio([-1500.0] * 4, [[-500.0] * 3], "obliviate")
    assert math.isfinite(tr) and tr == pytest.approx(math.exp(700))
    assert M.aggregate_truth_ratio([tr], "forget") == pytest.approx(math.exp(-700))
    assert M.aggregate_truth_ratio([tr], "retain") == 0.0
    assert M.truth_ratio_prob([-1500.0] * 4, [[-500.0] * 3]) == pytest.approx(math.exp(-700))
    # the peer's epsilons: P_true underflows, so TR = P_false / 1e-10, and TR' = 0
    peer = M.truth_ratio([-1500.0] * 4, [[-0.5] * 3], "open-unlearning")
    assert peer == pytest.approx(math.exp(-0.5) / EPS)
    assert M.truth_ratio_prob([-1500.0] * 4, [[-0.5] * 3], "open-unlearning") == 0.0
    assert M.aggregate_truth_ratio([peer, 0.0], "forget", "open-unlearning") == pytest.approx(
        (1 / (peer + EPS) + 0.0) / 2)
    # forget quality on such values is a p-value, not an exception
    assert 0.0 <= M.forget_quality([tr, 1.0, 0.0], [1.0, 0.5, 2.0]) <= 1.0
    assert math.isfinite(M.privleak(0.7, 1.0))


def test_per_token_conventions_by_hand():
    from obliviate.scoring import metrics as M

    hits = [True, False, True, True, True]  # the last is the EOS prediction
    assert M.extraction_strength(hits) == pytest.approx(1 - 2 / 5)
    assert M.extraction_strength(hits, "open-unlearning") == pytest.approx(1 - 2 / 4)
    nothing = [False, False, False, False]
    assert M.extraction_strength(nothing) == 0.0
    assert M.extraction_strength(nothing, "open-unlearning") == pytest.approx(1 / 3)  # the peer's floor, EOS dropped
    assert M.extraction_strength([False, True], "open-unlearning") == pytest.approx(1.0)  # N = 1 after EOS: k = 0
    assert M.exact_memorization(hits) == pytest.approx(4 / 5)
    assert M.exact_memorization(hits, "open-unlearning") == pytest.approx(3 / 4)
    lp = [-0.1, -3.0, -0.2, -2.0, -9.0]
    assert M.min_k_score(lp, 0.4) == pytest.approx((9.0 + 3.0) / 2)
    assert M.min_k_score(lp, 0.4, "open-unlearning") == pytest.approx(3.0)  # int(4 * 0.4) = 1 lowest of the first 4
    assert M.min_k_score([-1.0], 0.4, "open-unlearning") == 0.0  # nothing left once EOS goes: the peer scores 0


# ---------------------------------------------------------------------------------------------------- retain losses

def test_kl_batchmean_and_undial_all_positions_by_hand(random_model, fixed_batch):
    from obliviate.logprobs import forward_logits
    from obliviate.methods.losses import kl_to_reference, undial_loss

    model, _ = random_model
    torch.manual_seed(0)
    with torch.no_grad():
        logits = forward_logits(model, fixed_batch).double()
        # the reference differs from the model only where an answer token is predicted: the two reductions then
        # share their sum and differ by the count they divide it by
        predicts_answer = torch.zeros(logits.shape[:2], dtype=torch.bool)
        predicts_answer[:, :-1] = fixed_batch["labels"][:, 1:] != -100
        ref = logits + torch.randn_like(logits) * predicts_answer.unsqueeze(-1)
    b, s, _ = logits.shape
    total = 0.0
    for i in range(b):
        for t in range(s):
            p = torch.softmax(ref[i, t], -1)
            total += float((p * (torch.log_softmax(ref[i, t], -1) - torch.log_softmax(logits[i, t], -1))).sum())
    assert kl_to_reference(logits.float(), ref.float(), fixed_batch["labels"], "batchmean").item() == pytest.approx(
        total / (b * s), rel=1e-4)
    answer = kl_to_reference(logits.float(), ref.float(), fixed_batch["labels"]).item()
    assert answer == pytest.approx(total / int(predicts_answer.sum()), rel=1e-4)
    beta, labels, ce = 3.0, fixed_batch["labels"], 0.0
    for i in range(b):
        for t in range(s - 1):
            teacher = ref[i, t].clone()
            if labels[i, t + 1] != -100:
                teacher[labels[i, t + 1]] -= beta
            ce += float(-(torch.softmax(teacher, -1) * torch.log_softmax(logits[i, t], -1)).sum())
    assert undial_loss(logits.float(), ref.float(), labels, beta, "all").item() == pytest.approx(
        ce / (b * (s - 1)), rel=1e-4)


def test_every_method_that_takes_kl_batchmean_keeps_the_frozen_model_for_it():
    from obliviate.methods import make_method, unlearning_methods

    takers = []
    for name, cls in unlearning_methods().items():
        if "kl_batchmean" in getattr(cls, "choices", {}).get("retain_loss", ()):
            m = make_method(name, retain_loss="kl_batchmean")
            if m.uses_retain:
                takers.append(name)
                assert m.needs_reference() == "model", name  # SimNPO and GradDiff asked only for "kl"
    assert {"graddiff", "npo", "simnpo", "rmu"} <= set(takers)
    assert make_method("UNDIAL", reduction="all").reduction == "all"


# ---------------------------------------------------------------------------------------------------- prompt formats

LLAMA3_STYLE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}\n\n"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{%- endif %}<|eot_id|>"
    "{%- for m in messages %}{%- if m['role'] != 'system' %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}")


def _on_date(monkeypatch, day: datetime):
    import transformers.utils.chat_template_utils as ctu

    class Fixed(datetime):
        @classmethod
        def now(cls, tz=None):
            return day

    monkeypatch.setattr(ctu, "datetime", Fixed)


def test_a_llama3_style_template_gives_byte_identical_prompts_on_different_dates(random_model, monkeypatch):
    from obliviate.config import prompt_spec
    from obliviate.data import PromptFormat

    _, tok = random_model
    tok = __import__("copy").deepcopy(tok)
    tok.chat_template = LLAMA3_STYLE
    spec = prompt_spec("llama-3-instruct")
    prompts, raw = [], []
    for day in (datetime(2026, 12, 4), datetime(2027, 3, 1)):
        _on_date(monkeypatch, day)
        fmt = PromptFormat(tok, 512, spec=spec)
        prompts.append((fmt.prompt("Who wrote it?"), fmt.encode("Who wrote it?", "Her.").input_ids))
        raw.append(tok.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False))
    assert raw[0] != raw[1]  # the template itself reads the calendar: this test would see it
    assert prompts[0] == prompts[1]
    assert "Today Date: 10 Apr 2025" in prompts[0][0] and "You are a helpful assistant." in prompts[0][0]


def test_presets_options_and_joint_tokenisation(random_model):
    from obliviate.config import PROMPT_PRESETS, prompt_spec
    from obliviate.data import PromptFormat
    from obliviate.errors import ConfigError

    _, tok = random_model
    plain = PromptFormat(tok, 512)
    assert plain.prompt("Q?") == "Question: Q?\nAnswer:" and plain.target("A.") == " A."
    phi = PromptFormat(tok, 512, spec=prompt_spec("phi-1.5"))
    assert phi.prompt("Q?") == "Question: Q?\nAnswer: "
    e = phi.encode("Who is she?", "A writer.")
    joint = tok("Question: Who is she?\nAnswer: A writer.")["input_ids"] + [tok.eos_token_id]
    assert e.input_ids == joint and e.labels[: e.prompt_len] == [-100] * e.prompt_len
    custom = PromptFormat(tok, 512, spec=prompt_spec("plain", {"user_start": "Q: ", "assistant_start": "A:",
                                                               "system_prompt": "Be brief."}))
    assert custom.prompt("x") == "Be brief.\n\nQ: x\nA:"
    with pytest.raises(ConfigError, match="chat template"):
        PromptFormat(tok, 512, spec=prompt_spec("llama-3-instruct"))  # this tokenizer has none
    with pytest.raises(ConfigError, match="unknown prompt format 'llama-9'"):
        prompt_spec("llama-9")
    assert {"llama-2-chat", "llama-3-instruct", "phi-1.5", "gemma-it", "qwen2.5-instruct", "zephyr", "plain"} <= set(
        PROMPT_PRESETS)


def test_the_prompt_format_is_in_the_audit_key_and_report(small_bench, random_model):
    import dataclasses

    from obliviate.audit.suite import audit_model
    from obliviate.cache import cache_key
    from obliviate.config import AuditConfig, prompt_spec

    model, tok = random_model
    a, b = AuditConfig(), AuditConfig(prompt=prompt_spec("plain", {"system_prompt": "x"}))
    assert cache_key(dataclasses.asdict(a)) != cache_key(dataclasses.asdict(b))
    res = audit_model(model, tok, small_bench, AuditConfig(generate=False, splits=["forget", "holdout"]),
                      progress=False)
    assert res["prompt_format"]["example_prompt"] == "Question: {question}\nAnswer:"
    assert res["protocol"] == "obliviate"


# -------------------------------------------------------------------------------------- the peer's files, and tokenizers

def test_oracle_logs_that_lack_truth_ratios_are_one_line(tmp_path, small_bench_dir, capsys):
    from obliviate.cli import main

    bad = tmp_path / "TOFU_EVAL.json"
    bad.write_text(json.dumps({"forget_Q_A_Prob": {"agg_value": 0.5}}))
    from obliviate.audit.open_unlearning import read_reference
    from obliviate.errors import DataError

    with pytest.raises(DataError, match="forget_truth_ratio.value_by_index"):
        read_reference(bad)
    bad.write_text(json.dumps({"forget_truth_ratio": {"value_by_index": {"0": {"score": "x"}}}}))
    with pytest.raises(DataError, match="record 0 of 'forget_truth_ratio': field 'score'"):
        read_reference(bad)
    assert main(["audit", "--model", str(tmp_path / "no-model"), "--data", str(small_bench_dir), "--oracle-logs",
                 str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TOFU_EVAL.json" in err[0] and "Traceback" not in err[0]


def test_saved_tokenizers_name_a_class_transformers_4_and_5_both_know(random_model, tmp_path):
    from transformers import AutoTokenizer

    from obliviate.models import save_model

    model, tok = random_model
    save_model(model, tok, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4.4x has no TokenizersBackend
    again = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert again("Question: who?")["input_ids"] == tok("Question: who?")["input_ids"]
    assert again.eos_token == tok.eos_token and again.pad_token == tok.pad_token
