"""The certificate's checks as data: the registry ``CHECKS``, the table of docs/certify.md rendered from it, the config
that names its checks, and ``certify``'s progress log and reuse of base audits the caller already holds."""

import dataclasses
import math
import re
from pathlib import Path

import pytest

from obliviate.audit.certify import (
    _EVIDENCE,
    CHECKS,
    CertifyConfig,
    Check,
    base_audit_config,
    certify,
)
from obliviate.audit.checks import (
    END,
    START,
    checks_markdown,
    registry,
    with_checks_table,
    write_checks_table,
)
from obliviate.config import AuditConfig
from obliviate.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "certify.md"
REGENERATE = "python3 -c 'from obliviate.audit.checks import write_checks_table as w; w(\"docs/certify.md\")'"


def _doc_table(text: str) -> str:
    return text.split(START + "\n", 1)[1].split(END, 1)[0]


def _rows(table: str) -> dict[str, list[str]]:
    """check name -> the cells of its row (a \\| inside a cell is not a separator)."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells
    return rows


def test_the_doc_table_is_the_registry():
    text = DOC.read_text()
    assert _doc_table(text) == checks_markdown(), f"docs/certify.md's table of checks is stale: run {REGENERATE}"
    assert with_checks_table(text) == text
    assert list(_rows(_doc_table(text))) == list(CHECKS)


def test_a_changed_registry_renders_a_different_table(tmp_path):
    text = DOC.read_text()
    changed = dict(CHECKS, knowmem=dataclasses.replace(CHECKS["knowmem"], threshold=0.2))
    table = checks_markdown(changed)
    assert table != _doc_table(text) and with_checks_table(text, changed) != text
    assert _rows(table)["knowmem"][4] == "0.2" and _rows(_doc_table(text))["knowmem"][4] == "0.1"
    added = registry(*CHECKS.values(), Check("new_check", "a new value vs the oracle's", 0.3, "max", "mia"))
    assert list(_rows(checks_markdown(added))) == [*CHECKS, "new_check"]
    # the writer puts the registry's table back into a document whose table drifted
    stale = tmp_path / "certify.md"
    stale.write_text(with_checks_table(text, changed))
    assert write_checks_table(stale) and stale.read_text() == text and not write_checks_table(stale)
    with pytest.raises(ValueError, match="checks:start"):
        with_checks_table("no markers here")


def test_registry_config_and_doc_agree():
    cfg = CertifyConfig()
    assert cfg.checks == list(CHECKS)                       # the default: every registered check, in registry order
    rows = _rows(_doc_table(DOC.read_text()))
    for name, check in CHECKS.items():
        assert check.name == name and cfg.threshold(name) == check.threshold
        _, audit, compares, passes, default, needs = rows[name]
        assert float(default) == check.threshold, name
        assert passes == ("`<=`" if check.passes == "max" else "`>=`") and audit == f"`{check.audit}`"
        assert compares.replace("\\|", "|") == check.compares and needs == ", ".join(check.needs)
    assert CertifyConfig(thresholds={"knowmem": 0.3}).threshold("knowmem") == 0.3
    # every check has its value function, every audit its evidence function, and nothing else is registered
    assert all(callable(c.value) for c in CHECKS.values())
    assert set(_EVIDENCE) == {c.audit for c in CHECKS.values()}
    with pytest.raises(ConfigError, match="unknown check"):
        CertifyConfig(checks=["forget_prob", "vibes"]).validate()


def test_a_check_judges_its_value():
    low, high = CHECKS["forget_prob"], CHECKS["utility"]
    assert low.passes == "max" and high.passes == "min"
    assert low.judge(0.05, 0.05) and not low.judge(0.06, 0.05)
    assert high.judge(0.8, 0.8) and not high.judge(0.79, 0.8)
    assert not any(c.judge(v, 0.5) for c in (low, high) for v in (None, math.nan, math.inf))
    assert CHECKS["remind"].needs == ("oracle", "target") and "classifier" in CHECKS["remind"].missing
    assert CHECKS["verbmem"].missing == "an oracle (--oracle)"
    with pytest.raises(ValueError, match="'max' or 'min'"):
        Check("x", "y", 0.1, "below", "mia")
    with pytest.raises(ValueError, match="role"):
        Check("x", "y", 0.1, "max", "mia", needs=("teacher",))
    with pytest.raises(ValueError, match="twice"):
        registry(CHECKS["knowmem"], CHECKS["knowmem"])


# --- certify: progress and reused base audits (real tiny models) ------------------------------------------------------

CHEAP = CertifyConfig(checks=["forget_quality", "forget_prob", "utility", "mia_privleak", "mia_tpr", "knowmem"],
                      max_new_tokens=8, knowmem_shots=1, gradnorm=False)


def _values(cert):
    return [(c["name"], c["value"], c["passed"], c["reason"], c.get("details")) for c in cert["checks"]]


@pytest.fixture(scope="module")
def fresh(trained_models, small_bench):
    """A certificate computed from scratch, and its progress log."""
    log = []
    out = certify(trained_models["target"], small_bench, oracle=trained_models["oracle"], cfg=CHEAP, log=log.append,
                  audit_cfg=AuditConfig(generate=False))
    return out, log


def test_progress_lines_for_every_audit(fresh):
    out, log = fresh
    for i, role in enumerate(("model", "oracle")):   # the base audits, then each audit of the battery: a start line,
        assert log[2 * i] == f"[certify] base audit of {role}: start"          # then an end line with its seconds
        assert re.fullmatch(rf"\[certify\] base audit of {role}: \d+\.\d s", log[2 * i + 1])
    for audit in ("mia", "knowmem"):
        start = log.index(next(x for x in log if x.startswith(f"[certify] {audit}: start (")))
        assert re.fullmatch(rf"\[certify\] {audit}: \d+\.\d s", log[start + 1])
    assert "reused_audits" not in out["certificate"]


def test_reused_base_audits_are_not_recomputed(fresh, trained_models, small_bench):
    from obliviate.audit import audit_model
    from obliviate.models import load_model

    acfg = AuditConfig(generate=False)
    assert base_audit_config(CHEAP, acfg) is acfg
    default = base_audit_config(CHEAP, None)
    assert (default.batch_size, default.max_new_tokens, default.mink_k, default.max_length, default.generate) == (
        CHEAP.batch_size, CHEAP.max_new_tokens, CHEAP.mink_k, CHEAP.max_length, True)
    held = {role: audit_model(*load_model(trained_models[role], dtype="auto"), small_bench,
                              base_audit_config(CHEAP, acfg), progress=False) for role in ("target", "oracle")}
    before = {role: dict(r["metrics"]) for role, r in held.items()}
    log = []
    out = certify(trained_models["target"], small_bench, oracle=trained_models["oracle"], cfg=CHEAP, log=log.append,
                  audit_cfg=acfg, audits={"model": held["target"], "oracle": held["oracle"]})
    cert = out["certificate"]
    # the same certificate as computed from scratch ...
    assert _values(cert) == _values(fresh[0]["certificate"]) and cert["skipped"] == fresh[0]["certificate"]["skipped"]
    # ... without running the base audits: reused, logged as such, no forward pass counted for them
    assert "[certify] base audit of model: reused" in log and "[certify] base audit of oracle: reused" in log
    assert not any(line.startswith("[certify] base audit of") and line.endswith("start") for line in log)
    assert cert["audits"]["audit"] == {"seconds": 0.0, "forward_passes": 0}
    assert fresh[0]["certificate"]["audits"]["audit"]["forward_passes"] > 0
    assert cert["audits"]["knowmem"]["forward_passes"] > 0
    assert cert["reused_audits"] == ["model", "oracle"]
    assert {role: r["metrics"] for role, r in held.items()} == before      # the caller's audits are left as they were
    # the given audit is what the checks read
    shifted = {**held["target"], "metrics": {**held["target"]["metrics"], "forget_Q_A_Prob": 0.75}}
    cfg = dataclasses.replace(CHEAP, checks=["forget_prob"])
    value = certify(trained_models["target"], small_bench, oracle=trained_models["oracle"], cfg=cfg, log=log.append,
                    audit_cfg=acfg, audits={"model": shifted, "oracle": held["oracle"]})["certificate"]["checks"][0]
    assert value["value"] == pytest.approx(0.75 - held["oracle"]["metrics"]["forget_Q_A_Prob"])


def test_audits_given_without_the_model_or_in_another_shape_are_errors(trained_models, small_bench):
    cfg = dataclasses.replace(CHEAP, checks=["forget_prob", "remind"])
    log = []
    with pytest.raises(ConfigError, match="'oracle', which has no model"):
        certify(trained_models["target"], small_bench, cfg=cfg, log=log.append, audits={"oracle": {}})
    with pytest.raises(ConfigError, match="not a result of audit_model"):
        certify(trained_models["target"], small_bench, cfg=cfg, log=log.append, audits={"model": {"metrics": {}}})
    # with no oracle, nothing but the base audit runs, and the log says which audits did not run and why
    log.clear()
    cert = certify(trained_models["target"], small_bench, cfg=cfg, log=log.append,
                   audit_cfg=AuditConfig(generate=False))["certificate"]
    assert [c["reason"] for c in cert["checks"]] == [
        "not verified: needs an oracle (--oracle)",
        "not verified: needs the target and the oracle (--target, --oracle) to train its classifier"]
    assert log[2:] == ["[certify] audit: not run (needs an oracle (--oracle))",
                       f"[certify] remind: not run (needs {CHECKS['remind'].missing})"]
