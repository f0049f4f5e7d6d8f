"""Calibration of the certificate on independently seeded oracles: the table, its rates recomputed by hand from the
certificates' values, derived thresholds that admit every pair they came from, and certify reading them."""

import json
import math

import pytest
from conftest import SMALL_TINY

from obliviate.audit.calibrate import apply_calibration, derive_threshold, summarize
from obliviate.audit.certify import CertifyConfig
from obliviate.audit.checks import CHECKS
from obliviate.errors import ConfigError

CHECKS_RUN = ["forget_quality", "forget_prob", "utility", "mia_privleak", "verbmem", "fluency"]


@pytest.fixture(scope="module")
def calibration(small_bench_dir, tmp_path_factory):
    from obliviate.models import TinyConfig
    from obliviate.recipes.calibrate import run_calibration

    cfg_file = tmp_path_factory.mktemp("cal") / "certify.yaml"
    cfg_file.write_text("checks: [" + ", ".join(CHECKS_RUN) + "]\nmax_new_tokens: 8\ngradnorm: false\n")
    out = tmp_path_factory.mktemp("calibrate") / "run"
    cal = run_calibration(out, seeds=3, forget_split="forget10", data=small_bench_dir,
                          finetune_cfg=dict(lr=5e-3, epochs=4, batch_size=16, warmup_ratio=0.05, scheduler="linear"),
                          tiny=TinyConfig(**SMALL_TINY), certify_config=cfg_file, log=lambda *a: None)
    return out, cal


def test_calibration_table_and_rates(calibration):
    out, cal = calibration
    assert json.loads((out / "calibration.json").read_text())["checks"].keys() == cal["checks"].keys()
    table = (out / "calibration.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(cal["checks"]) == CHECKS_RUN   # one row per check
    assert len(cal["pairs"]) == 3 * 2 and all(i != j for i, j in cal["pairs"])
    for name, r in cal["checks"].items():
        c = CHECKS[name]
        assert len(r["values"]) == 6 and len(r["target_values"]) == 3
        for key in ("false_failure_rate", "derived_false_failure_rate", "target_failure_rate",
                    "target_failure_rate_derived"):
            assert 0.0 <= r[key] <= 1.0
        # the false-failure rate by hand: values on the wrong side of the threshold
        fails = [not (v <= r["threshold"] if c.passes == "max" else v >= r["threshold"]) for v in r["values"]]
        assert r["false_failure_rate"] == pytest.approx(sum(fails) / 6)
        # the derived threshold admits every oracle pair it was derived from
        for v in r["values"]:
            assert (v <= r["derived_threshold"]) if c.passes == "max" else (v >= r["derived_threshold"])
        assert r["derived_false_failure_rate"] == 0.0
        assert r["mean"] == pytest.approx(sum(r["values"]) / 6)
    # different seeds give different oracles: the gaps between them are not all zero
    assert any(v != 0 for v in cal["checks"]["forget_prob"]["values"])
    # the target remembers the forget set: it fails the forget-probability check against every oracle
    assert cal["checks"]["forget_prob"]["target_failure_rate"] == 1.0


def test_derived_threshold_by_hand():
    """mean + k sd with k the one-sided normal tolerance factor (95% coverage, 95% confidence) of published tables:
    5.144 for 4 values, 4.203 for 5, 7.656 for 3."""
    values = [0.01, 0.03, 0.02, 0.05]
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert derive_threshold(values, "max") == pytest.approx(mean + 5.144 * sd, rel=1e-3)
    assert derive_threshold(values, "max", n_eff=5) == pytest.approx(mean + 4.203 * sd, rel=1e-3)
    assert derive_threshold([0.01, 0.0100001], "max", n_eff=5) >= 0.0100001  # never below the largest value
    assert derive_threshold([0.9, 0.8, 0.95], "min") <= 0.8
    assert derive_threshold([0.2, 0.6], "min", bounds=(0.0, 1.0)) >= 0.0
    assert derive_threshold([None, float("nan")], "max") is None
    cert = {"checks": [{"name": "forget_prob", "value": 0.2, "threshold": 0.05, "passed": False}]}
    assert summarize([cert, cert], [], 10)["checks"]["forget_prob"]["false_failure_rate"] == 1.0


def test_certify_reads_calibrated_thresholds(calibration, tmp_path):
    out, cal = calibration
    path = out / "calibration.json"
    cfg = apply_calibration(CertifyConfig(), path, cal["n_items"], log=lambda *a: None)
    for name in CHECKS_RUN:
        assert cfg.threshold(name) == pytest.approx(cal["checks"][name]["derived_threshold"])
    # a quarter of the items: gap thresholds double (1/sqrt(n)); a p-value threshold does not scale
    quarter = apply_calibration(CertifyConfig(), path, cal["n_items"] // 4 or 1, log=lambda *a: None)
    factor = math.sqrt(cal["n_items"] / (cal["n_items"] // 4 or 1))
    assert quarter.threshold("forget_prob") == pytest.approx(cal["checks"]["forget_prob"]["derived_threshold"] * factor)
    assert quarter.threshold("forget_quality") == pytest.approx(cal["checks"]["forget_quality"]["derived_threshold"])
    kept = apply_calibration(CertifyConfig(thresholds={"forget_prob": 0.5}), path, 10, log=lambda *a: None)
    assert kept.threshold("forget_prob") == 0.5                         # an explicit threshold wins
    old = tmp_path / "old.json"  # written before forget quality kept its significance level: 0 is not applied
    old.write_text('{"checks": {"forget_quality": {"derived_threshold": 0.0}}, "n_items": 10}')
    assert apply_calibration(CertifyConfig(), old, 10, log=lambda *a: None).threshold("forget_quality") == 0.05
    bad = tmp_path / "bad.json"
    bad.write_text('{"checks": {"forget_prob": {"derived_threshold": "x"}}, "n_items": 10}')
    with pytest.raises(ConfigError, match="bad.json.*forget_prob.*derived_threshold"):
        apply_calibration(CertifyConfig(), bad, 10)


def test_cli_refuses_one_seed_and_a_bad_calibration_file(tmp_path, capsys, small_bench_dir):
    from obliviate.cli import main

    assert main(["calibrate", "--seeds", "1", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds 1" in err and not (tmp_path / "c").exists()
    bad = tmp_path / "cal.json"
    bad.write_text("{not json")
    (tmp_path / "m").mkdir()
    code = main(["audit", "--model", str(tmp_path / "m"), "--data", str(small_bench_dir), "--calibration", str(bad),
                 "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cal.json" in err


def test_no_spread_keeps_the_threshold_and_a_p_value_keeps_its_significance_level():
    def cert(name, value, threshold, passed):
        return {"checks": [{"name": name, "value": value, "threshold": threshold, "passed": passed}]}

    same = [cert("fluency", 0.0, 0.05, True)] * 4          # every oracle pair: no non-words
    assert summarize(same, [], 10)["checks"]["fluency"]["derived_threshold"] == 0.05
    pvals = [cert("forget_quality", p, 0.05, True) for p in (0.79, 0.79, 0.4, 0.97)]
    assert summarize(pvals, [], 10)["checks"]["forget_quality"]["derived_threshold"] == 0.05
    wide = [cert("forget_quality", p, 0.05, True) for p in (0.06, 0.9, 0.5, 0.07)]  # a bound fitted here falls to 0
    assert summarize(wide, [], 10)["checks"]["forget_quality"]["derived_threshold"] == 0.05
    spread = [cert("forget_prob", v, 0.05, True) for v in (0.01, -0.01, 0.004, -0.004)]  # 4 pairs: 3 oracles
    sd = math.sqrt((0.01 ** 2 * 2 + 0.004 ** 2 * 2) / 3)
    assert summarize(spread, [], 10)["checks"]["forget_prob"]["derived_threshold"] == pytest.approx(7.656 * sd,
                                                                                                  rel=1e-3)


def test_thresholds_cover_a_new_oracle_on_every_check_at_once():
    """With m fitted checks each threshold covers 1 - 0.05/m of the oracles' values (Bonferroni), so that a new oracle
    passes all m with probability >= 95%: k from the noncentral t (scipy here; the factor itself is checked against
    published tables above), 4 pairs = 3 oracles. A p-value check is not fitted and does not count. Held-out rates
    use the coverage the file records (95% per check for files written before)."""
    from scipy import stats

    from obliviate.audit.calibrate import held_out_pass_rate

    def cert(values):
        return {"checks": [{"name": n, "value": v, "threshold": 0.05, "passed": True} for n, v in values.items()]}

    spread = (0.01, -0.01, 0.004, -0.004)
    certs = [cert({"forget_prob": v, "verbmem": v, "forget_quality": 0.5}) for v in spread]
    sd = math.sqrt((0.01 ** 2 * 2 + 0.004 ** 2 * 2) / 3)
    k = stats.nct.ppf(0.95, df=2, nc=stats.norm.ppf(1 - 0.05 / 2) * math.sqrt(3)) / math.sqrt(3)
    cal = summarize(certs, [], 10)
    assert cal["coverage"] == pytest.approx(0.975)
    assert cal["checks"]["forget_prob"]["derived_threshold"] == pytest.approx(k * sd, rel=1e-6)
    assert k * sd > 7.656 * sd                                  # wider than one check's 95% bound
    # held out (3 oracles, 2 pairs fitted each time: k = 26.26 at 95%, 43.92 at 1 - 0.05/17), worked out by hand:
    # a out -> (b,c), (c,b) = 10, 14: t = 12 + k sqrt(8) = 86.3 or 136.2, so (a,c) = 100 fails only the first;
    # c out -> (a,b), (b,a) = 10, 14: the same for (a,c); b out -> (a,c), (c,a) = 100, 10: wide, all pass
    pairs = [["a", "b"], ["a", "c"], ["b", "a"], ["b", "c"], ["c", "a"], ["c", "b"]]
    old = {"oracles": ["a", "b", "c"], "pairs": pairs,
           "checks": {"mia_privleak": {"passes": "max", "threshold": 20.0, "values": [10, 100, 14, 10, 10, 14]}}}
    assert held_out_pass_rate(old) == pytest.approx(10 / 12)
    assert held_out_pass_rate({**old, "coverage": 1 - 0.05 / 17}) == 1.0


def test_held_out_pass_rate_by_hand():
    """Three oracles, six ordered pairs, one membership check (threshold 20): leaving each oracle out, thresholds come
    from the other two oracles' pairs and judge the four pairs of the one left out. Worked out by hand:
    a out -> (b,c), (c,b) = 10, 10: no spread, the threshold stays 20; (a,c) = 30 fails, 3 of 4 pass;
    b out -> (a,c), (c,a) = 30, 10: the derived threshold admits at least 30; all 4 of b's pairs (10) pass;
    c out -> (a,b), (b,a) = 10, 10: 20 again; (a,c) = 30 fails, 3 of 4. In all 10 of 12. A check without values
    (refusal consistency) counts as passed; fewer than three oracles give None."""
    from obliviate.audit.calibrate import held_out_pass_rate

    pairs = [["a", "b"], ["a", "c"], ["b", "a"], ["b", "c"], ["c", "a"], ["c", "b"]]
    cal = {"oracles": ["a", "b", "c"], "pairs": pairs,
           "checks": {"mia_privleak": {"passes": "max", "threshold": 20.0, "values": [10, 30, 10, 10, 10, 10]},
                      "refusal_consistency": {"passes": "min", "threshold": 0.5, "values": [None] * 6}}}
    assert held_out_pass_rate(cal) == pytest.approx(10 / 12)
    cal["checks"]["mia_privleak"]["values"][1] = 15  # within 20 everywhere: every held-out pair passes
    assert held_out_pass_rate(cal) == 1.0
    assert held_out_pass_rate({**cal, "oracles": ["a", "b"], "pairs": pairs[:1]}) is None
