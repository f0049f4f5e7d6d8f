"""Quantisation robustness: round-to-nearest per output channel, checked element by element, and what resurfaces."""

import pytest
import torch

from obliviate.audit.quantize import quantize_model, quantize_tensor, quantized_forget_audit, resurfaced
from obliviate.config import AuditConfig
from obliviate.errors import ConfigError


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_tensor_by_hand(bits):
    w = torch.tensor([[0.52, -1.0, 0.26, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.1, -0.4, 2.2]])
    got = quantize_tensor(w, bits)
    qmax = 2 ** (bits - 1) - 1
    for i in range(w.shape[0]):
        row = [float(x) for x in w[i]]
        biggest = max(abs(x) for x in row)
        scale = biggest / qmax if biggest > 0 else 1.0
        for j, x in enumerate(row):
            q = max(-qmax, min(qmax, round(x / scale)))
            assert float(got[i, j]) == pytest.approx(q * scale, abs=1e-6)
    assert torch.equal(got[1], torch.zeros(4))        # a zero row stays zero
    assert float(got[2, 0]) == pytest.approx(3.0)     # the largest weight of a row is exact
    with pytest.raises(ConfigError):
        quantize_tensor(w, 1)


def test_quantize_model_rounds_every_matrix_once_and_leaves_the_original(random_model):
    model, _ = random_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model(model, 4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    linear = q.model.layers[0].self_attn.q_proj.weight
    # 4 bits: every row takes at most 15 distinct values, multiples of its own scale
    for row in linear:
        scale = row.abs().max() / 7
        assert torch.allclose(row / scale, torch.round(row / scale), atol=1e-4)
        assert len(set(torch.round(row / scale).tolist())) <= 15
    assert not torch.equal(linear, model.model.layers[0].self_attn.q_proj.weight)
    # norms are not matrices: left as they were; the tied embedding / lm_head is one tensor, quantised once
    assert torch.equal(q.model.norm.weight, model.model.norm.weight)
    assert q.lm_head.weight.data_ptr() == q.model.embed_tokens.weight.data_ptr()
    emb = q.model.embed_tokens.weight
    assert torch.allclose(emb, quantize_tensor(model.model.embed_tokens.weight, 4))


def test_resurfaced_items_by_hand():
    before = [{"index": 0, "prob": 0.05, "rougeL_recall": 0.1}, {"index": 1, "prob": 0.2, "rougeL_recall": 0.3},
              {"index": 2, "prob": 0.04, "rougeL_recall": 0.9}, {"index": 3, "prob": 0.3, "rougeL_recall": 0.1}]
    after = [{"index": 0, "prob": 0.06, "rougeL_recall": 0.7},   # ROUGE up 0.6 to 0.7: resurfaced
             {"index": 1, "prob": 0.45, "rougeL_recall": 0.3},   # probability more than doubled, above 0.1: resurfaced
             {"index": 2, "prob": 0.07, "rougeL_recall": 0.95},  # already recalled before: not resurfaced
             {"index": 3, "prob": 0.5, "rougeL_recall": 0.2}]    # up, but less than double: not resurfaced
    assert [r["index"] for r in resurfaced(before, after)] == [0, 1]


def test_quantized_audit_of_the_target_keeps_its_memory(trained_models, small_bench):
    from obliviate.models import load_model

    model, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    out = quantized_forget_audit(model, tok, small_bench, (8,), AuditConfig(generate=False))
    assert set(out) == {"int8"}
    # 8-bit rounding barely moves a memorised answer: the forget probability stays near the unquantised one
    from obliviate.audit import audit_model

    acfg = AuditConfig(generate=False, splits=["forget", "holdout"])
    base = audit_model(model, tok, small_bench, acfg, progress=False)
    assert out["int8"]["forget_Q_A_Prob"] == pytest.approx(base["metrics"]["forget_Q_A_Prob"], abs=0.05)
    assert out["int8"]["forget_Q_A_Prob"] > 0.8
