"""Membership-inference attacks against computations written out here: token loops, pair counting, threshold sweeps."""

import math
import zlib

import numpy as np
import pytest
import torch

from obliviate.audit.mia import ATTACKS, document_mia, gradnorm_scores, mia_audit, row_scores, score_documents
from obliviate.config import AuditConfig
from obliviate.data import PromptFormat
from obliviate.scoring import metrics as M


def _token_logprobs(model, ids, start):
    """log p(ids[t] | ids[:t]) for t >= start, one position at a time, in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    out, zs = [], []
    for t in range(start, len(ids)):
        logp = torch.log_softmax(logits[t - 1], 0)
        p = logp.exp()
        mu = float((p * logp).sum())
        sd = math.sqrt(max(float((p * logp ** 2).sum()) - mu ** 2, 1e-6))
        out.append(float(logp[ids[t]]))
        zs.append((float(logp[ids[t]]) - mu) / sd)
    return out, zs


def _min_k_by_hand(values, k):
    vals = sorted(values)
    m = max(1, int(k * len(vals)))
    total = 0.0
    for v in vals[:m]:
        total += v
    return -total / m


def _auc_by_pairs(forget, holdout):
    """P(holdout score > forget score) + 0.5 P(tie): the ROC-AUC with forget labelled 0, holdout 1."""
    wins = 0.0
    for f in forget:
        for h in holdout:
            wins += 1.0 if h > f else 0.5 if h == f else 0.0
    return wins / (len(forget) * len(holdout))


def test_loss_zlib_reference_scores_by_hand():
    lp = [-0.5, -1.5, -0.25]
    text = "Nyyth Selis writes philosophy."
    loss = (0.5 + 1.5 + 0.25) / 3
    assert M.loss_score(lp) == pytest.approx(loss, rel=1e-12)
    assert M.zlib_score(lp, text) == pytest.approx(loss / len(zlib.compress(text.encode("utf-8"))), rel=1e-12)
    assert M.reference_score(lp, [-2.0, -1.0]) == pytest.approx(loss - 1.5, rel=1e-12)


def test_tpr_at_fpr_by_hand_and_against_a_threshold_sweep():
    members = [0.1, 0.2, 0.35, 0.8]
    non = [0.3, 0.5, 0.9, 1.0, 1.2]
    # 1% of 5 non-members: no false positive allowed, so the threshold stays below 0.3: members 0.1 and 0.2 flagged
    assert M.tpr_at_fpr(members, non, 0.01) == pytest.approx(0.5)
    # 20%: one false positive (0.3) allowed, threshold below 0.5: 0.1, 0.2, 0.35 flagged
    assert M.tpr_at_fpr(members, non, 0.2) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    for _ in range(5):
        m, n = rng.normal(0, 1, 30).round(1), rng.normal(1, 1, 40).round(1)
        best = 0.0
        for t in sorted(set(m) | set(n)):
            fp = sum(1 for x in n if x <= t) / len(n)
            tp = sum(1 for x in m if x <= t) / len(m)
            if fp <= 0.05:
                best = max(best, tp)
        assert M.tpr_at_fpr(m, n, 0.05) == pytest.approx(best)
        # and against sklearn's ROC curve (members positive, scored by minus the attack score)
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve([1] * len(m) + [0] * len(n), -np.concatenate([m, n]), drop_intermediate=False)
        assert best == pytest.approx(max(t for f, t in zip(fpr, tpr) if f <= 0.05))


def test_attack_scores_from_the_audit_pass_match_token_by_token(random_model, small_bench):
    from obliviate.audit import audit_model

    model, tok = random_model
    fmt = PromptFormat(tok)
    acfg = AuditConfig(generate=False, splits=["forget", "holdout"])
    res = audit_model(model, tok, small_bench, acfg, progress=False)
    rows = res["per_item"]["forget"][:4]
    scores = row_scores(rows, reference_rows=res["per_item"]["holdout"][:4])
    for i, (it, ref) in enumerate(zip(small_bench.forget[:4], small_bench.holdout[:4])):
        enc = fmt.encode(it.question, it.answer)
        lp, zs = _token_logprobs(model, enc.input_ids, enc.prompt_len)
        enc_ref = fmt.encode(ref.question, ref.answer)
        lp_ref, _ = _token_logprobs(model, enc_ref.input_ids, enc_ref.prompt_len)
        loss = -sum(lp) / len(lp)
        target = " " + it.answer
        assert scores["loss"][i] == pytest.approx(loss, rel=1e-5)
        assert scores["zlib"][i] == pytest.approx(loss / len(zlib.compress(target.strip().encode())), rel=1e-5)
        assert scores["min_k"][i] == pytest.approx(_min_k_by_hand(lp, 0.4), rel=1e-5)
        assert scores["min_k_pp"][i] == pytest.approx(_min_k_by_hand(zs, 0.4), rel=1e-4, abs=1e-5)
        assert scores["reference"][i] == pytest.approx(loss - (-sum(lp_ref) / len(lp_ref)), abs=2e-5)


def test_gradnorm_is_the_mean_parameter_gradient_norm_of_one_sample(random_model, small_bench):
    model, tok = random_model
    fmt = PromptFormat(tok)
    items = small_bench.forget[:2]
    got = gradnorm_scores(model, fmt, items)
    for it, g in zip(items, got):
        enc = fmt.encode(it.question, it.answer)
        ids = torch.tensor([enc.input_ids])
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits[0]
        terms = []
        for t in range(enc.prompt_len, len(enc.input_ids)):
            terms.append(torch.log_softmax(logits[t - 1].float(), 0)[enc.input_ids[t]])
        loss = -torch.stack(terms).mean()
        loss.backward()
        norms = []
        for p in model.parameters():
            norms.append(0.0 if p.grad is None else math.sqrt(float((p.grad.double() ** 2).sum())))
        model.zero_grad(set_to_none=True)
        assert g == pytest.approx(sum(norms) / len(norms), rel=1e-4)
    assert all(p.grad is None for p in model.parameters())


def _rows(probs, mink, minkpp, targets):
    return [{"prob": p, "mink_score": a, "minkpp_score": b, "target": t}
            for p, a, b, t in zip(probs, mink, minkpp, targets)]


def test_mia_audit_auc_tpr_and_privleak_per_attack_by_hand():
    targets = ["alpha beta", "gamma", "delta epsilon zeta", "eta"]
    model = {"per_item": {
        "forget": _rows([0.9, 0.8, 0.6, 0.7], [0.1, 0.3, 0.2, 0.4], [0.5, 0.1, 0.2, 0.3], targets),
        "holdout": _rows([0.2, 0.5, 0.65, 0.1], [0.9, 0.25, 0.8, 0.7], [0.6, 0.7, 0.15, 0.9], targets)}}
    oracle = {"per_item": {
        "forget": _rows([0.3, 0.2, 0.4, 0.1], [0.5, 0.6, 0.3, 0.8], [0.2, 0.9, 0.4, 0.6], targets),
        "holdout": _rows([0.25, 0.35, 0.2, 0.3], [0.55, 0.4, 0.7, 0.6], [0.3, 0.5, 0.8, 0.1], targets)}}
    out = mia_audit(model, oracle, fpr=0.01)["attacks"]
    assert set(out) == {"loss", "zlib", "min_k", "min_k_pp", "reference"}

    def loss_of(rows):
        return [-math.log(r["prob"]) for r in rows]

    f_loss, h_loss = loss_of(model["per_item"]["forget"]), loss_of(model["per_item"]["holdout"])
    of_loss, oh_loss = loss_of(oracle["per_item"]["forget"]), loss_of(oracle["per_item"]["holdout"])
    # LOSS: model AUC by pair counting, oracle AUC the same way, privleak = ((1-A) - (1-A_ref)) / (1-A_ref) * 100
    a, a_ref = _auc_by_pairs(f_loss, h_loss), _auc_by_pairs(of_loss, oh_loss)
    assert out["loss"]["auc"] == pytest.approx(a)
    assert out["loss"]["privleak"] == pytest.approx(((1 - a) - (1 - a_ref)) / (1 - a_ref) * 100, rel=1e-6)
    # zlib: each loss divided by the compressed length of its target text
    zl = [len(zlib.compress(t.encode())) for t in targets]
    assert out["zlib"]["auc"] == pytest.approx(_auc_by_pairs([x / z for x, z in zip(f_loss, zl)],
                                                             [x / z for x, z in zip(h_loss, zl)]))
    # reference attack against the oracle: loss(model) - loss(oracle), item by item
    ref_f = [x - y for x, y in zip(f_loss, of_loss)]
    ref_h = [x - y for x, y in zip(h_loss, oh_loss)]
    assert out["reference"]["auc"] == pytest.approx(_auc_by_pairs(ref_f, ref_h))
    # the oracle as its own reference scores 0 everywhere: AUC 0.5, so privleak is measured against 0.5
    a = _auc_by_pairs(ref_f, ref_h)
    assert out["reference"]["privleak"] == pytest.approx(((1 - a) - 0.5) / 0.5 * 100, rel=1e-6)
    # Min-K%: the rows' own scores; TPR at 1% FPR with 4 non-members allows no false positive
    f_mk, h_mk = [0.1, 0.3, 0.2, 0.4], [0.9, 0.25, 0.8, 0.7]
    assert out["min_k"]["auc"] == pytest.approx(_auc_by_pairs(f_mk, h_mk))
    assert out["min_k"]["tpr_at_fpr"] == pytest.approx(2 / 4)  # 0.1 and 0.2 are below the smallest holdout 0.25
    assert out["min_k"]["auc"] == pytest.approx(M.mia_auc(f_mk, h_mk))  # the existing suite metric, reused


def test_gradnorm_joins_the_attacks_when_given():
    rows = _rows([0.5, 0.4], [0.1, 0.2], [0.1, 0.2], ["a b", "c"])
    res = {"per_item": {"forget": rows, "holdout": rows}}
    out = mia_audit(res, res, gradnorm=([0.1, 0.2], [0.3, 0.4]), oracle_gradnorm=([0.3, 0.1], [0.2, 0.4]))["attacks"]
    assert set(out) == set(ATTACKS)
    assert out["gradnorm"]["auc"] == pytest.approx(1.0)          # every holdout norm above every forget norm
    assert out["gradnorm"]["tpr_at_fpr"] == pytest.approx(1.0)
    oracle_auc = _auc_by_pairs([0.3, 0.1], [0.2, 0.4])           # 3 of 4 pairs
    assert out["gradnorm"]["privleak"] == pytest.approx((0 - (1 - oracle_auc)) / (1 - oracle_auc) * 100)


def test_document_scores_match_token_by_token(random_model):
    model, tok = random_model
    texts = ["Nyyth Selis was born in Vastead and writes philosophy.", "The capital of Loria is Kamar."]
    rows = score_documents(model, tok, texts, k=0.4)
    for text, row in zip(texts, rows):
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        lp, zs = _token_logprobs(model, ids, 1)
        assert row["prob"] == pytest.approx(math.exp(sum(lp) / len(lp)), rel=1e-5)
        assert row["mink_score"] == pytest.approx(_min_k_by_hand(lp, 0.4), rel=1e-5)
        assert row["minkpp_score"] == pytest.approx(_min_k_by_hand(zs, 0.4), rel=1e-4, abs=1e-5)


def test_rwku_mia_texts_are_read_as_published_and_scored(random_model):
    import json

    from conftest import RWKU

    if not RWKU.exists():
        pytest.skip("RWKU data not available")
    from obliviate.data.rwku import load_target

    model, tok = random_model
    target = load_target(RWKU, "Stephen King")
    folder = target.folder
    members = json.loads((folder / "forget_mia.json").read_text())
    non = json.loads((folder / "retain_mia.json").read_text())
    assert [d.text for d in target.texts["forget_mia"]] == [r["text"] for r in members]
    assert [d.text for d in target.texts["retain_mia"]] == [r["text"] for r in non]
    out = document_mia(model, tok, target.texts["forget_mia"][:3], target.texts["retain_mia"][:3], max_length=48)
    assert set(out["attacks"]) == {"loss", "zlib", "min_k", "min_k_pp"}

    def loss(doc):   # by hand: the first 48 tokens (BOS included), every token after BOS a target
        lp, _ = _token_logprobs(model, tok(doc.text)["input_ids"][:48], 1)
        return -sum(lp) / len(lp)

    m_loss = [loss(d) for d in target.texts["forget_mia"][:3]]
    n_loss = [loss(d) for d in target.texts["retain_mia"][:3]]
    assert out["attacks"]["loss"]["auc"] == pytest.approx(_auc_by_pairs(m_loss, n_loss))
    assert out["attacks"]["loss"]["member_mean"] == pytest.approx(sum(m_loss) / 3)
