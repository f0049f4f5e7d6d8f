"""LoRA for every method: only adapters train, merging is exact, the saved model is plain, RMU and task vectors work."""

import copy
import json

import pytest
import torch

pytest.importorskip("peft")

from obliviate.config import TrainConfig  # noqa: E402
from obliviate.engine import train  # noqa: E402
from obliviate.errors import ConfigError  # noqa: E402
from obliviate.methods import make_method  # noqa: E402
from obliviate.models.lora import apply_lora, lora_options, merge_lora  # noqa: E402


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_only_adapters_train_and_merge_is_exact(random_model, fixed_batch, small_bench, tmp_path):
    base = copy.deepcopy(random_model[0])
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    net = apply_lora(copy.deepcopy(base), {"r": 4, "alpha": 8, "dropout": 0.0})
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("mlp.down_proj.lora_B" in n for n in trainable) and not any("lm_head" in n for n in trainable)
    data = {"forget": small_bench.forget, "retain": small_bench.retain}
    net = train(net, random_model[1], make_method("GradDiff"), data,
                TrainConfig(lr=1e-2, max_steps=3, batch_size=4), tmp_path, progress=False)
    want = logits(net, fixed_batch)
    merged = merge_lora(net)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits(merged, fixed_batch), want, atol=1e-4)
    after = dict(merged.named_parameters())
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(after[q], before[q])


def test_rmu_selects_among_the_adapters(random_model, fixed_batch):
    net = apply_lora(copy.deepcopy(random_model[0]), {"r": 2, "alpha": 4})
    m = make_method("RMU", layer=1, alpha=0.0)
    m.setup(net, None, {})
    selected = {n for n, p in net.named_parameters() if p.requires_grad}
    assert selected and all("mlp.down_proj.lora_" in n for n in selected)
    loss, _ = m.loss(net.train(), {"forget": fixed_batch}, None)
    loss.backward()
    assert all((p.grad is not None) == (n in selected) for n, p in net.named_parameters())


def test_task_vector_with_lora_negates_the_adapter_update(random_model, small_bench, tmp_path):
    from obliviate.methods.shared import finetune_copy

    tok = random_model[1]
    base = copy.deepcopy(random_model[0])
    w0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    net = apply_lora(copy.deepcopy(base), {"r": 4, "alpha": 8, "dropout": 0.0})
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=4, seed=2)
    ft = merge_lora(finetune_copy(net, tok, small_bench.forget, 3, 1e-2, 4, seed=2))
    alpha = 2.0
    make_method("TaskVector", alpha=alpha).apply(net, tok, {"forget": small_bench.forget}, cfg, tmp_path)
    out = dict(merge_lora(net).named_parameters())
    moved = 0
    for n, p in ft.named_parameters():
        delta_ft = p.detach() - w0[n]
        assert torch.allclose(out[n] - w0[n], -alpha * delta_ft, atol=1e-6), n
        moved += bool(delta_ft.abs().sum() > 0)
    assert moved > 0


def test_unlearn_with_lora_saves_a_plain_merged_model(target_path, small_bench, tmp_path):
    from obliviate.models import load_model
    from obliviate.pipeline import unlearn

    out = unlearn(target_path, small_bench, "NPO", {}, TrainConfig(lr=1e-2, max_steps=2, batch_size=4), tmp_path,
                  progress=False, log=lambda *a: None, lora={"r": 4, "alpha": 8})
    model, _ = load_model(out, dtype="fp32", device="cpu")
    target, _ = load_model(target_path, dtype="fp32", device="cpu")
    names = [n for n, _ in model.named_parameters()]
    assert names == [n for n, _ in target.named_parameters()]
    t = dict(target.named_parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, t[n])]
    assert changed and all(n.endswith("_proj.weight") for n in changed)
    assert json.loads((tmp_path / "config.json").read_text())["lora"]["r"] == 4


def test_unlearn_command_takes_lora_options(small_bench_dir, target_path, tmp_path):
    from obliviate.cli import main

    rc = main(["unlearn", "--data", str(small_bench_dir), "--model", str(target_path), "--method", "RMU", "--hp",
               "layer=1", "--lora-r", "2", "--lora-alpha", "4", "--max-steps", "2", "--batch-size", "4", "--out",
               str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lora"] == {
        "r": 2, "alpha": 4.0, "dropout": 0.05, "target_modules": []}


def test_bad_lora_options():
    with pytest.raises(ConfigError, match="r = 0"):
        lora_options({"r": 0})
    with pytest.raises(ConfigError, match="unknown option 'rank'"):
        lora_options({"rank": 8})
    with pytest.raises(ConfigError, match="dropout"):
        lora_options({"dropout": 1.5})
    assert lora_options({"target_modules": "q_proj, v_proj"}).target_modules == ["q_proj", "v_proj"]
