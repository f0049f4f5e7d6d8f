"""The recipes as a user calls them from Python: the TOFU-on-a-pretrained-model recipe runs TOFU's files as published
with the pretrained presets (here on a small model built from TOFU's own text, so the test needs no download)."""

import json
from pathlib import Path

import pytest
from conftest import TOFU

from obliviate.config import PRETRAINED_FINETUNE, PRETRAINED_UNLEARN, AuditConfig


@pytest.mark.skipif(not TOFU.exists(), reason="shared TOFU data not present")
def test_tofu_on_a_pretrained_model_uses_the_pretrained_presets(tmp_path):
    from obliviate.data import load_benchmark
    from obliviate.models import TinyConfig, save_model, tiny_from_texts
    from obliviate.pipeline import benchmark_texts
    from obliviate.recipes.tofu_pretrained import run_tofu_pretrained

    base = tmp_path / "base"  # a model folder not made by the tiny recipe: it counts as pretrained
    model, tok = tiny_from_texts(benchmark_texts(load_benchmark(TOFU, "forget01"))[:4000],
                                 TinyConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=512))
    save_model(model, tok, base)
    out = tmp_path / "run"
    report = run_tofu_pretrained(TOFU, model=str(base), forget_split="forget01", authors=3, facts_per_author=2,
                                 cfg={"max_steps": 1}, finetune_cfg={"max_steps": 2, "max_length": 512},
                                 out_dir=out, audit_cfg=AuditConfig(generate=False, max_length=512), progress=False,
                                 log=lambda *a: None)
    assert 0 <= report["metrics"]["forget_quality"] <= 1 and "model_utility" in report["metrics"]
    unlearn_train = json.loads((out / "config.json").read_text())["train"]
    assert (unlearn_train["lr"], unlearn_train["grad_accum"], unlearn_train["max_steps"]) == \
        (PRETRAINED_UNLEARN.lr, PRETRAINED_UNLEARN.grad_accum, 1)
    target = Path(json.loads((out / "config.json").read_text())["model"])
    finetune_train = json.loads((target / "obliviate.json").read_text())["train"]
    assert (finetune_train["lr"], finetune_train["epochs"], finetune_train["max_steps"]) == \
        (PRETRAINED_FINETUNE.lr, PRETRAINED_FINETUNE.epochs, 2)
    assert len(report["per_item"]["forget"]) == 4  # forget01's 2 authors, 2 facts each
