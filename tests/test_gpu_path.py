"""The GPU path's options, checked on the CPU: ``TrainConfig.precision`` (bf16 autocast) and ``compile``.

With the defaults a CPU run must compute exactly what it did before these options existed: ``precision="auto"`` is fp32
here, and its first step equals a hand computation of NPO's loss. bf16 autocast (asked for explicitly) gives finite
losses close to fp32's but not equal to them. ``benchmarks/gpu_bench.py --device cpu --tiny`` (the script the lent GPU
machine runs) is run end to end.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from obliviate.config import TrainConfig
from obliviate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _npo_run(model, tok, bench, tmp_path, name, **options) -> tuple[list[dict], dict]:
    """Two NPO steps of 4 + 4 items; the metrics lines and the final weights."""
    from obliviate.engine import train
    from obliviate.methods import make_method

    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=4, scheduler="constant", seed=0, **options)
    trained = train(copy.deepcopy(model), tok, make_method("NPO"), {"forget": bench.forget, "retain": bench.retain},
                    cfg, tmp_path / name, progress=False)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return rows, {k: v.detach().clone() for k, v in trained.state_dict().items()}


@pytest.mark.parametrize("options, field", [({"precision": "fp16"}, "precision"), ({"precision": None}, "precision"),
                                            ({"compile": "yes"}, "compile"), ({"compile": 1}, "compile")])
def test_bad_precision_or_compile_is_a_config_error(options, field):
    with pytest.raises(ConfigError, match=f"option '{field}'"):
        TrainConfig().with_options(options)
    assert TrainConfig().with_options({"precision": "bf16", "compile": True}).precision == "bf16"


def test_precision_resolves_per_device():
    from obliviate.engine.loop import precision_context, resolved_precision

    assert TrainConfig().precision == "auto" and TrainConfig().compile is False
    assert resolved_precision("auto", "cpu") == "fp32"  # never bf16 on a CPU unless asked
    assert resolved_precision("bf16", "cpu") == "bf16" and resolved_precision("fp32", "cuda") == "fp32"
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with precision_context("auto", "cpu"):
        assert (a @ b).dtype == torch.float32
    with precision_context("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16


def test_default_cpu_step_is_fp32_and_equals_a_hand_computation(random_model, small_bench, tmp_path):
    """auto == fp32 bit for bit on the CPU, and the first step's losses are NPO's formula computed here by hand."""
    from obliviate.data import PromptFormat
    from obliviate.engine.pairing import Schedule

    model, tok = random_model
    auto_rows, auto_w = _npo_run(model, tok, small_bench, tmp_path, "auto")
    fp32_rows, fp32_w = _npo_run(model, tok, small_bench, tmp_path, "fp32", precision="fp32")
    assert [r["loss"] for r in auto_rows] == [r["loss"] for r in fp32_rows]
    assert all(torch.equal(auto_w[k], fp32_w[k]) for k in auto_w)

    # step 1, by hand: pi_theta == pi_ref, so r = 0 and the forget term is -(2/beta) log sigmoid(0) = (2/beta) ln 2;
    # the retain term is the token-mean NLL of the 4 retain items the seeded schedule pairs with the first batch
    assert fp32_rows[0]["forget_loss"] == pytest.approx(2 / 0.1 * math.log(2), abs=1e-5)
    _, _, retain_idx = Schedule("random", len(small_bench.forget), len(small_bench.retain), 0).micro_batch(0, 4)
    fmt = PromptFormat(tok)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in retain_idx:
            enc = fmt.encode(small_bench.retain[i].question, small_bench.retain[i].answer)
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
            for t in range(1, len(enc.labels)):
                if enc.labels[t] != -100:
                    row = logits[t - 1]
                    total -= float(row[enc.labels[t]] - torch.log(torch.exp(row - row.max()).sum()) - row.max())
                    count += 1
    assert fp32_rows[0]["retain_loss"] == pytest.approx(total / count, abs=2e-6)


def test_bf16_autocast_on_cpu_is_close_to_fp32(random_model, small_bench, tmp_path):
    model, tok = random_model
    fp32_rows, fp32_w = _npo_run(model, tok, small_bench, tmp_path, "fp32", precision="fp32")
    bf16_rows, bf16_w = _npo_run(model, tok, small_bench, tmp_path, "bf16", precision="bf16")
    for a, b in zip(fp32_rows, bf16_rows):
        assert math.isfinite(b["loss"]) and b["loss"] == pytest.approx(a["loss"], rel=2e-2)
    assert any(a["retain_loss"] != b["retain_loss"] for a, b in zip(fp32_rows, bf16_rows))  # bf16 did compute
    assert all(w.dtype == torch.float32 for w in bf16_w.values())  # fp32 master weights, updated in fp32
    assert any(not torch.equal(fp32_w[k], bf16_w[k]) for k in fp32_w)
    # the reference log-probs are scored under the same autocast: the first forget term is exactly (2/beta) ln 2
    assert bf16_rows[0]["forget_loss"] == pytest.approx(2 / 0.1 * math.log(2), abs=1e-5)


def test_gpu_bench_runs_on_cpu_in_seconds(tmp_path):
    """The lent GPU machine's script, in its CPU mode: imports from src/ only, prints its table, writes its JSON."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bench.py"), "--device", "cpu", "--tiny"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = {r["what"]: r for r in result["rows"]}
    assert {"NPO step", "log-prob pass", "greedy generation"} <= {w.split(" (")[0] for w in rows}
    assert all(r["tokens_per_s"] > 0 for r in result["rows"])
    assert "tokens/s" in out.stdout and "MFU" in out.stdout
    assert "rouge_score" not in result["modules"] and "datasets" not in result["modules"]
