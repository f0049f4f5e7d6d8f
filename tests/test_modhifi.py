"""ModHiFi-U: subset fidelity against a hand least-squares fit per channel, the edit removes exactly the most
forget-specific channels with no backward pass, and its forget/retain effect on the small benchmark."""

import copy
import json

import pytest
import torch
from conftest import mean_prob

from obliviate.config import TrainConfig
from obliviate.data import PromptFormat, pad_batch
from obliviate.engine import train
from obliviate.methods import make_method
from obliviate.methods.modhifi import subset_fidelity


def hand_fidelity(model, batch, layer):
    """1 - min_s sum_t ||y_t - s c_tj||^2 / sum_t ||y_t||^2 per channel j, by an explicit scalar least-squares fit."""
    proj = model.model.layers[layer].mlp.down_proj
    seen = {}
    h = proj.register_forward_hook(lambda m, a, o: seen.update(a=a[0].detach().double(), y=o.detach().double()))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h.remove()
    w = proj.weight.detach().double()
    tokens = [(b, t) for b in range(batch["input_ids"].shape[0]) for t in range(batch["input_ids"].shape[1])
              if batch["attention_mask"][b, t]]
    out = []
    for j in range(w.shape[1]):
        cs = [w[:, j] * seen["a"][b, t, j] for b, t in tokens]
        ys = [seen["y"][b, t] for b, t in tokens]
        s = sum(float(c @ y) for c, y in zip(cs, ys)) / sum(float(c @ c) for c in cs)
        resid = sum(float(((y - s * c) ** 2).sum()) for c, y in zip(cs, ys))
        out.append(1 - resid / sum(float((y ** 2).sum()) for y in ys))
    return torch.tensor(out, dtype=torch.float64)


def encode(tok, items):
    fmt = PromptFormat(tok)
    return pad_batch([fmt.encode(it.question, it.answer) for it in items], tok.pad_token_id)


def test_subset_fidelity_is_the_hand_least_squares_fit(random_model, small_bench):
    model, tok = random_model
    batch = encode(tok, small_bench.forget[:3])  # padded: padding tokens must not count
    sf = subset_fidelity(model, [batch])
    for layer in (0, 1):
        want = hand_fidelity(model, batch, layer)
        assert torch.allclose(sf[layer], want, atol=1e-9), (sf[layer][:5], want[:5])
    assert 0 < float(sf[0].max()) <= 1


def test_apply_removes_the_most_forget_specific_channels_without_gradients(random_model, small_bench, tmp_path):
    base, tok = random_model
    model = copy.deepcopy(base)
    forget, retain = small_bench.forget[:4], small_bench.retain[:4]
    frac = 0.1
    # hand: specificity = SF(forget) - SF(retain) per layer over all items (one batch of 4 = the run's batch size),
    # the top round(0.1 * 128) = 13 columns zeroed
    method = make_method("ModHiFiU", fraction=frac, contrast="retain")
    with torch.no_grad():  # gradient-free: apply must work with autograd off
        method.apply(model, tok, {"forget": forget, "retain": retain}, TrainConfig(batch_size=4), tmp_path)
    fb, rb = encode(tok, forget), encode(tok, retain)
    for layer in (0, 1):
        score = hand_fidelity(base, fb, layer) - hand_fidelity(base, rb, layer)
        want = set(torch.argsort(score, descending=True)[:13].tolist())
        w0 = base.model.layers[layer].mlp.down_proj.weight
        w1 = model.model.layers[layer].mlp.down_proj.weight
        zeroed = {j for j in range(w1.shape[1]) if bool((w1[:, j] == 0).all())}
        assert zeroed == want
        kept = sorted(set(range(w1.shape[1])) - want)
        assert torch.equal(w1[:, kept], w0[:, kept])
    assert all(p.grad is None for p in model.parameters())
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["removed_channels"] == [13, 13] and line["backward_passes"] == 0


def test_synthetic_contrast_needs_no_data_but_the_forget_set(random_model, small_bench, tmp_path):
    base, tok = random_model
    model = copy.deepcopy(base)
    make_method("ModHiFiU", fraction=0.05).apply(model, tok, {"forget": small_bench.forget[:4]},
                                                 TrainConfig(batch_size=4), tmp_path)
    w = model.model.layers[0].mlp.down_proj.weight
    assert int((w == 0).all(0).sum()) == round(0.05 * w.shape[1])


def test_modhifi_forgets_more_than_it_costs_on_the_benchmark(load_target, small_bench, tmp_path):
    model, tok = load_target()
    f0, r0 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    model = train(model, tok, make_method("ModHiFiU", fraction=0.2, contrast="retain"),
                  {"forget": small_bench.forget, "retain": small_bench.retain}, TrainConfig(batch_size=16), tmp_path,
                  progress=False)
    f1, r1 = mean_prob(model, tok, small_bench.forget), mean_prob(model, tok, small_bench.retain_eval)
    print(f"ModHiFiU: forget {f0:.3f} -> {f1:.3f}, retain {r0:.3f} -> {r1:.3f}")
    assert f1 <= 0.85 * f0
    assert (f0 - f1) > 1.5 * (r0 - r1) and r1 > f1


def test_modhifi_rejects_bad_settings():
    from obliviate.errors import ConfigError

    with pytest.raises(ConfigError, match="fraction"):
        make_method("ModHiFiU", fraction=1.5)
    with pytest.raises(ConfigError, match="contrast"):
        make_method("ModHiFiU", contrast="nothing")
