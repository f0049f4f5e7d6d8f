"""REMIND: embedding neighbours, perturbations, landscape features and the ground-truth classifier."""

import math
import random

import numpy as np
import pytest
import torch

from obliviate.audit.remind import (
    RemindConfig,
    features,
    fit_and_predict,
    landscape,
    nearest_tokens,
    perturb,
    remind_audit,
)
from obliviate.data import PromptFormat
from obliviate.data.collate import IGNORE
from obliviate.errors import ConfigError


def test_nearest_tokens_by_cosine_similarity(random_model):
    model, tok = random_model
    emb = model.get_input_embeddings().weight.detach().double()
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    got = nearest_tokens(model, [10, 57, 300], top_j=3, exclude=special)
    for t in (10, 57, 300):
        sims = []
        for v in range(emb.shape[0]):
            if v == t or v in special:
                continue
            cos = float(emb[t] @ emb[v]) / (float(emb[t].norm()) * float(emb[v].norm()))
            sims.append((cos, v))
        sims.sort(reverse=True)
        assert got[t] == [v for _, v in sims[:3]]


def test_perturb_replaces_eligible_positions_only(random_model, small_bench):
    _, tok = random_model
    fmt = PromptFormat(tok)
    enc = fmt.encode(small_bench.forget[0].question, small_bench.forget[0].answer)
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    near = {t: [t + 100000] for t in enc.input_ids}  # impossible ids make every replacement visible
    same = perturb(enc, near, 0.0, random.Random(0), "all", special)
    assert same.input_ids == enc.input_ids and same.labels == enc.labels
    full = perturb(enc, near, 1.0, random.Random(0), "all", special)
    for t, (a, b) in enumerate(zip(enc.input_ids, full.input_ids)):
        assert b == (a if a in special else a + 100000)
        assert full.labels[t] == (IGNORE if enc.labels[t] == IGNORE else b)
    prompt_only = perturb(enc, near, 1.0, random.Random(0), "prompt", special)
    assert prompt_only.input_ids[enc.prompt_len:] == enc.input_ids[enc.prompt_len:]
    assert prompt_only.labels == enc.labels
    assert prompt_only.input_ids[1:enc.prompt_len] != enc.input_ids[1:enc.prompt_len]


def test_features_by_hand():
    f = features(1.0, {0.1: [1.5, 2.5], 0.2: [3.0, 5.0]})
    # deltas: 0.1 -> [0.5, 1.5] (mean 1, std 0.5); 0.2 -> [2, 4] (mean 3, std 1)
    # slope of mean delta over rate: (3 - 1) / (0.2 - 0.1) = 20; mean over rates of mean|delta| / rate = (10 + 15) / 2
    assert f.tolist() == pytest.approx([1.0, 1.0, 0.5, 3.0, 1.0, 20.0, 12.5])


def test_landscape_base_loss_is_the_mean_answer_nll(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget[:2]
    feats = landscape(model, fmt, items, RemindConfig(rates=[0.3], neighbours=2, top_j=2))
    assert feats.shape == (2, 5)
    for it, row in zip(items, feats):
        enc = fmt.encode(it.question, it.answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
        lp = [float(torch.log_softmax(logits[t - 1], 0)[enc.input_ids[t]])
              for t in range(enc.prompt_len, len(enc.input_ids))]
        assert row[0] == pytest.approx(-sum(lp) / len(lp), rel=1e-5)
    with pytest.raises(ConfigError, match="where"):
        RemindConfig(where="middle").validate()


def test_out_of_fold_predictions_never_see_their_own_item(monkeypatch):
    """A stand-in classifier that remembers its training rows answers 1 for a row it was fitted on: every prediction
    must be 0, for rows of the items it was tested on, whoever's features they are (target, oracle, model)."""
    import obliviate.audit.remind as R

    class Memoriser:
        def fit(self, x, y):
            self.rows = {tuple(r) for r in x}
            return self

        def predict_proba(self, x):
            p = np.array([1.0 if tuple(r) in self.rows else 0.0 for r in x])
            return np.stack([1 - p, p], 1)

    monkeypatch.setattr(R, "_classifier", lambda seed: Memoriser())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    groups = [f"forget:{k % 10}" for k in range(30)]      # three models' rows of the same ten items
    y = np.array([k % 2 for k in range(30)])
    pred, _ = fit_and_predict(x, y, groups, x[:10], groups[:10], folds=5)
    assert np.all(pred == 0.0)
    # the memoriser does recall rows it was fitted on: the isolation, not the stand-in, makes the zeros
    assert Memoriser().fit(x, y).predict_proba(x[:1])[0, 1] == 1.0


def test_classifier_tells_target_from_oracle(trained_models, small_bench):
    from obliviate.models import load_model

    cfg = RemindConfig(rates=[0.1, 0.3], neighbours=3)
    splits = {"forget": small_bench.forget, "retain": small_bench.retain_eval, "holdout": small_bench.holdout}
    feats = {}
    for name in ("target", "oracle"):
        model, tok = load_model(trained_models[name], dtype="fp32", device="cpu")
        fmt = PromptFormat(tok)
        feats[name] = {s: landscape(model, fmt, items, cfg) for s, items in splits.items()}
    on_target = remind_audit(feats["target"]["forget"], feats["target"], feats["oracle"], cfg)
    on_oracle = remind_audit(feats["oracle"]["forget"], feats["target"], feats["oracle"], cfg)
    assert on_target["classifier_auc"] > 0.9
    assert on_target["p_remembered"] > 0.7 and on_oracle["p_remembered"] < 0.3
    assert not any(math.isnan(p) for p in on_target["per_item"])
