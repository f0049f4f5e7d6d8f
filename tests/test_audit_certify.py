"""`obliviate audit --certify` on the synthetic benchmark: the target fails, the oracle passes, and a model that plain
gradient ascent made look forgetful is caught by relearning, probes or quantisation. Every check reports its cost."""

import dataclasses
import json

import pytest

from obliviate.audit.certify import CHECKS, CertifyConfig, certify, load_certify_config
from obliviate.audit.relearn import RelearnConfig
from obliviate.audit.remind import RemindConfig
from obliviate.errors import ConfigError

# the full battery, lighter than the defaults so three certificates fit in a test run
LIGHT = CertifyConfig(max_new_tokens=16, knowmem_shots=1,
                      probe_types=["paraphrased_question", "in_context", "background_hint", "fill_in_blank"],
                      relearn=RelearnConfig(steps=8, eval_every=4), remind=RemindConfig(rates=[0.1, 0.2], neighbours=4))
GA_CHECKS = ["forget_prob", "probes_prob", "probes_rouge", "relearn_forget", "relearn_related", "quantization"]


def _quiet(*a):
    pass


@pytest.fixture(scope="module")
def shared_cache():
    return {}  # the oracle's and the target's audits, computed once for the three certificates


@pytest.fixture(scope="module")
def target_cert(trained_models, small_bench, shared_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("cert-target")
    res = certify(trained_models["target"], small_bench, oracle=trained_models["oracle"],
                  target=trained_models["target"], cfg=LIGHT, out_dir=out, log=_quiet, cache=shared_cache)
    return res, out


@pytest.fixture(scope="module")
def oracle_cert(target_cert, trained_models, second_oracle, small_bench, shared_cache):
    """An independently retrained oracle (another seed) audited against the oracle: the perfect unlearner, which an
    oracle compared with itself would only imitate (every gap 0 by construction)."""
    return certify(second_oracle, small_bench, oracle=trained_models["oracle"],
                   target=trained_models["target"], cfg=LIGHT, log=_quiet, cache=shared_cache)


@pytest.fixture(scope="module")
def ga_cert(target_cert, trained_models, small_bench, shared_cache, tmp_path_factory):
    from obliviate.config import TrainConfig
    from obliviate.engine import train
    from obliviate.methods import make_method
    from obliviate.models import load_model

    model, tok = load_model(trained_models["target"], dtype="fp32", device="cpu")
    cfg = TrainConfig(lr=1e-3, max_steps=10, batch_size=4, scheduler="constant")
    model = train(model, tok, make_method("GradAscent"), {"forget": small_bench.forget}, cfg,
                  tmp_path_factory.mktemp("ga"), progress=False)
    return certify((model.eval(), tok), small_bench, oracle=trained_models["oracle"], target=trained_models["target"],
                   cfg=dataclasses.replace(LIGHT, checks=GA_CHECKS), log=_quiet, cache=shared_cache)


def _by_name(cert):
    return {c["name"]: c for c in cert["checks"]}


# what the target remembers and an independently retrained oracle does not: the checks of forgotten knowledge
KNOWLEDGE = {"forget_quality", "forget_prob", "verbmem", "knowmem", "probes_prob", "relearn_forget", "relearn_related",
             "quantization", "remind"}


def test_target_fails_and_an_independent_oracle_passes_the_knowledge_checks(target_cert, oracle_cert):
    target = target_cert[0]["certificate"]
    oracle = oracle_cert["certificate"]
    assert target["verdict"] == "not verified"
    failed = {c["name"] for c in target["checks"] if not c["passed"]}
    # the target remembers, and every family of audit sees it
    assert KNOWLEDGE | {"mia_privleak", "mia_tpr"} <= failed
    o, t = _by_name(oracle), _by_name(target)
    # another seed's oracle is a different model: the gaps are not zero (as they are for an oracle against itself) ...
    assert o["forget_prob"]["value"] != 0 and o["forget_quality"]["value"] < 1.0
    # ... but it passes every check of forgotten knowledge, and those of utility, fluency and honesty
    for name in KNOWLEDGE | {"utility", "probes_rouge", "fluency", "honesty_idk", "refusal_consistency"}:
        assert o[name]["passed"], (name, o[name]["value"], o[name]["reason"])
    # membership attacks between two oracles on 10 forget / 10 holdout items differ far less than the target's, but
    # not always within the default |privleak| <= 20 (40 here): that threshold is uncalibrated (docs/calibration.md)
    assert o["mia_privleak"]["value"] < 0.6 * t["mia_privleak"]["value"]
    ran = {c["name"] for c in oracle["checks"]} | {s["name"] for s in oracle["skipped"]}
    assert ran == set(CHECKS)
    assert [s["name"] for s in oracle["skipped"]] == ["shared_facts"]   # the default benchmark has no shared facts
    assert t["mia_privleak"]["value"] == pytest.approx(100.0)            # AUC 1: privleak -100 against the oracle's
    assert t["remind"]["value"] > 0.7 and o["remind"]["value"] < 0.3


def test_certificate_file_and_costs(target_cert):
    res, out = target_cert
    def strict(constant):
        raise AssertionError(f"certificate.json holds {constant}: not strict JSON")

    cert = json.loads((out / "certificate.json").read_text(), parse_constant=strict)
    assert cert["verdict"] in ("forgetting verified", "not verified")
    assert cert["verdict"] == ("forgetting verified" if all(c["passed"] for c in cert["checks"]) else "not verified")
    for c in cert["checks"]:
        assert {"name", "value", "threshold", "passed", "reason", "cost"} <= set(c)
        assert set(c["cost"]) == {"seconds", "forward_passes"}
        assert c["cost"]["seconds"] > 0 and c["cost"]["forward_passes"] > 0, c["name"]
        assert c["threshold"] == CHECKS[c["name"]].threshold and c["reason"]
        assert c["cost"] == cert["audits"][c["audit"]]
    assert cert["cost"]["forward_passes"] == sum(a["forward_passes"] for a in cert["audits"].values())
    # the base audit's forward passes include at least every teacher-forced sequence of target and oracle
    scored = sum(r["cost"]["scored_sequences"] for role, r in res["results"].items() if role != "target")
    assert cert["audits"]["audit"]["forward_passes"] > scored
    # gradient norms: one forward per forget and holdout item, for the model and the oracle
    n = 2 * (10 + 10)
    assert cert["audits"]["mia"]["forward_passes"] == n


def test_gradient_ascent_looks_forgetful_but_is_caught(ga_cert, target_cert, oracle_cert):
    target = _by_name(target_cert[0]["certificate"])
    ga = ga_cert["certificate"]
    g = _by_name(ga)
    # plain GA for a few steps: the forget answers' probability dropped well below the target's ...
    assert g["forget_prob"]["details"]["model"] < 0.5 * target["forget_prob"]["details"]["model"]
    # ... yet relearning, probes or quantisation catch it
    caught = {n for n in ("relearn_forget", "relearn_related", "probes_prob", "probes_rouge", "quantization")
              if not g[n]["passed"]}
    assert caught and ga["verdict"] == "not verified"
    # relearning on half of each author's facts brings the other half back ("jogging"), far beyond what the same
    # attack teaches the oracle, which never saw them and stays near its starting point
    rel = g["relearn_forget"]["details"]
    gain_ga = rel["model"]["after"] - rel["model"]["before"]
    gain_oracle = rel["oracle_control"]["after"] - rel["oracle_control"]["before"]
    assert gain_ga > gain_oracle + 0.1
    assert rel["oracle_control"]["recovery_rate"] < 0.15 and rel["model"]["recovery_rate"] > 0.2
    assert not g["relearn_forget"]["passed"]
    assert ga["cost"]["forward_passes"] > 0 and all(c["cost"]["forward_passes"] > 0 for c in ga["checks"])


def test_missing_evidence_fails_the_check(trained_models, small_bench):
    from obliviate.config import AuditConfig

    cfg = dataclasses.replace(LIGHT, checks=["forget_prob", "remind"])
    out = certify(trained_models["oracle"], small_bench, cfg=cfg, log=_quiet, audit_cfg=AuditConfig(generate=False))
    cert = out["certificate"]
    assert cert["verdict"] == "not verified"
    assert all(not c["passed"] and "needs" in c["reason"] for c in cert["checks"])


def test_config_file_errors_name_the_file_and_the_key(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("checks: [forget_prob, relearn_forget]\nthresholds: {forget_prob: 0.1}\nrelearn: {steps: 3}\n")
    cfg = load_certify_config(good)
    assert cfg.checks == ["forget_prob", "relearn_forget"] and cfg.threshold("forget_prob") == 0.1
    assert cfg.relearn.steps == 3 and cfg.threshold("relearn_forget") == CHECKS["relearn_forget"].threshold
    for text, match in [("bogus: 1\n", r"c.yaml: unknown option 'bogus'"),
                        ("checks: [forget_prob, vibes]\n", r"c.yaml: unknown check\(s\) \['vibes'\]"),
                        ("thresholds: {vibes: 1}\n", r"c.yaml: 'thresholds' names unknown check 'vibes'"),
                        ("thresholds: {forget_prob: high}\n", r"c.yaml: thresholds: 'forget_prob' = 'high'"),
                        ("relearn: {steps: zero}\n", r"c.yaml: relearn: option 'steps'"),
                        ("remind: {where: middle}\n", r"remind: option 'where'"),
                        ("quantize_bits: [8, 1]\n", r"c.yaml: option 'quantize_bits'")]:
        good.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_certify_config(good)


def test_cli_writes_the_certificate_and_exits_by_verdict(trained_models, second_oracle, small_bench_dir, tmp_path):
    from obliviate.cli import main

    cfg = tmp_path / "certify.yaml"
    cfg.write_text("checks: [forget_prob, forget_quality, utility]\n")
    common = ["--data", str(small_bench_dir), "--oracle", str(trained_models["oracle"]), "--certify-config", str(cfg),
              "--no-generate", "--quiet"]
    rc = main(["audit", "--model", str(second_oracle), "--out", str(tmp_path / "o"), *common])
    cert = json.loads((tmp_path / "o" / "certificate.json").read_text())
    assert rc == 0 and cert["verdict"] == "forgetting verified" and len(cert["checks"]) == 3
    assert (tmp_path / "o" / "report.json").exists()
    rc = main(["audit", "--model", str(trained_models["target"]), "--out", str(tmp_path / "t"), *common])
    cert = json.loads((tmp_path / "t" / "certificate.json").read_text())
    assert rc == 1 and cert["verdict"] == "not verified"
    assert main(["audit", "--model", str(trained_models["target"]), "--out", str(tmp_path / "x"), *common[:4],
                 "--certify-config", str(tmp_path / "missing.yaml"), "--quiet"]) == 2


def test_shared_facts_check_runs_on_an_overlap_benchmark(trained_models, second_oracle, tmp_path):
    from conftest import SMALL_SYNTH

    from obliviate.config import AuditConfig
    from obliviate.data import SynthConfig, load_benchmark
    from obliviate.data.overlap_bench import write_overlap_benchmark

    bench = load_benchmark(write_overlap_benchmark(tmp_path / "o", SynthConfig(**SMALL_SYNTH)), "forget10")
    cfg = dataclasses.replace(LIGHT, checks=["shared_facts", "combined_forget_half", "combined_retain_half"])
    cert = certify(second_oracle, bench, oracle=trained_models["oracle"], cfg=cfg, log=_quiet,
                   audit_cfg=AuditConfig(generate=False))["certificate"]
    assert not cert["skipped"] and [c["name"] for c in cert["checks"]] == cfg.checks
    shared = _by_name(cert)["shared_facts"]
    d = shared["details"]
    assert shared["value"] == pytest.approx(d["oracle"]["rougeL_recall"] - d["model"]["rougeL_recall"])
    assert shared["passed"] == (shared["value"] <= CHECKS["shared_facts"].threshold) and d["model"]["n"] == 2
    assert shared["cost"]["forward_passes"] > 0
