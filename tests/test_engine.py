"""The training loop on a real tiny model: cached reference, logging, the core methods' behaviour, resume, guard."""

import json
from dataclasses import dataclass

import pytest
import torch
from conftest import mean_prob
from test_losses import hand_sequence_logprobs

from obliviate.config import TrainConfig
from obliviate.data import PromptFormat
from obliviate.engine import train
from obliviate.errors import TrainingError
from obliviate.methods import make_method
from obliviate.methods.base import Method


def test_reference_logprobs_are_cached_once_from_the_starting_model(load_target, small_bench, tmp_path):
    model, tok = load_target()
    fmt = PromptFormat(tok)
    encs = [fmt.encode(it.question, it.answer) for it in small_bench.forget]
    from obliviate.data import pad_batch

    batch = pad_batch(encs, tok.pad_token_id)
    with torch.no_grad():
        want, _ = hand_sequence_logprobs(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                         batch["labels"])
    cfg = TrainConfig(lr=1e-3, max_steps=3, batch_size=4)
    train(model, tok, make_method("NPO"), {"forget": small_bench.forget, "retain": small_bench.retain}, cfg, tmp_path,
          progress=False)
    from safetensors.torch import load_file

    cached = load_file(str(tmp_path / "reference_cache.safetensors"))["forget"]
    # float32 sums over differently padded batches agree to ~1e-5 relative, not bit for bit
    assert cached.tolist() == pytest.approx(want, rel=1e-4)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert {"loss", "forget_loss", "retain_loss", "lr", "epoch"} <= set(lines[0])


def test_the_frozen_reference_shares_the_untrained_weights_and_keeps_the_starting_logits(load_target, small_bench):
    import copy

    from obliviate.data import pad_batch
    from obliviate.engine.reference import Reference
    from obliviate.logprobs import forward_logits

    model, tok = load_target()
    for n, p in model.named_parameters():
        p.requires_grad_(".mlp." in n)
    start = copy.deepcopy(model).eval()
    fmt = PromptFormat(tok)
    encs = [fmt.encode(it.question, it.answer) for it in small_bench.forget[:4]]
    ref = Reference("model", model, {"forget": encs}, tok.pad_token_id)
    own = {p.data_ptr() for p in model.parameters()}
    shared = [p.data_ptr() in own for p in ref.model.parameters()]
    trained = [p.requires_grad for p in model.parameters()]
    assert any(trained) and not all(trained)
    assert shared == [not t for t in trained]  # every untrained weight shared, no trained one
    with torch.no_grad():  # training moves the trained weights of the model, not the reference's copies
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    batch = pad_batch(encs, tok.pad_token_id)
    with torch.no_grad():
        want, moved = forward_logits(start, batch), forward_logits(model, batch)
    assert torch.equal(ref.logits(batch), want)
    assert not torch.allclose(moved, want)


@pytest.mark.parametrize("name,hp,lr,steps", [
    ("GradAscent", {}, 2e-3, 10),
    ("GradDiff", {"alpha": 3.0}, 1e-3, 20),
    ("NPO", {"alpha": 2.0}, 2e-3, 30),
    ("SimNPO", {}, 2e-3, 30),
])
def test_core_methods_forget_and_keep(load_target, small_bench, tmp_path, name, hp, lr, steps):
    model, tok = load_target()
    forget0, retain0 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    cfg = TrainConfig(lr=lr, max_steps=steps, batch_size=4, scheduler="constant")
    model = train(model, tok, make_method(name, **hp), {"forget": small_bench.forget, "retain": small_bench.retain}, cfg,
                  tmp_path, progress=False)
    forget1, retain1 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    assert forget1 <= 0.5 * forget0, (forget0, forget1)
    if name != "GradAscent":
        assert retain1 >= 0.8 * retain0, (retain0, retain1)


@dataclass
class CrashAfter(Method):
    """NPO's loss, but the process 'dies' when the n-th batch arrives."""

    crash_at: int = 10**9
    calls: int = 0
    uses_retain = True
    reference = "logprobs"

    def loss(self, model, batch, ref):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt
        return make_method("NPO").loss(model, batch, ref)


def test_resume_after_a_crash_gives_the_uninterrupted_result(load_target, small_bench, tmp_path):
    data = {"forget": small_bench.forget, "retain": small_bench.retain}
    cfg = TrainConfig(lr=1e-3, max_steps=6, batch_size=4, grad_accum=2, save_every=2, scheduler="linear")
    model, tok = load_target()
    full = train(model, tok, CrashAfter(), data, cfg, tmp_path / "a", progress=False)
    model, tok = load_target()
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, CrashAfter(crash_at=9), data, cfg, tmp_path / "b", progress=False)  # dies inside step 5
    assert json.loads((tmp_path / "b" / "status.json").read_text())["state"] == "running"
    model, tok = load_target()
    resumed = train(model, tok, CrashAfter(), data, cfg, tmp_path / "b", resume=True, progress=False)
    for (n, p), q in zip(full.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)
    a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert a == pytest.approx(b, rel=1e-6)


def test_divergence_guard_stops_with_a_clear_message(load_target, small_bench, tmp_path):
    model, tok = load_target()
    cfg = TrainConfig(lr=1e-3, max_steps=3, batch_size=4, loss_bound=1e-3)
    with pytest.raises(TrainingError, match=r"step 1: loss is .* \(bound 0.001\)"):
        train(model, tok, make_method("GradAscent"), {"forget": small_bench.forget}, cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "diverged"
