"""Calibration of the certificate: how its checks judge a model that forgot perfectly, an independent oracle.

The certificate compares a model with one oracle; two oracles retrained from different seeds on the same data differ
too (initialisation, data order), and a threshold tighter than that difference fails a perfect unlearner. Given k
oracles (different seeds, same retain data) ``calibrate`` runs the battery for every ordered pair (oracle i audited
against oracle j as the reference, k(k-1) certificates; the base audit of each model runs once, shared through one
cache) and, when given, the target against each oracle. Per check it reports:

* the distribution of the check's value over the oracle pairs (values, mean, sd, min, max);
* ``false_failure_rate``: the share of oracle pairs the current threshold fails;
* ``derived_threshold``: t = a one-sided normal tolerance bound, mean + k sd, with k the factor that covers a share
  1 - 0.05/m of the oracles' values with 95% confidence (``tolerance_factor``), m the number of fitted checks (17 in
  the default certificate). That is Bonferroni's split of ``JOINT`` = 95% (``per_check_coverage``): a new oracle
  then passes all m checks at once with probability >= 95%, however the checks correlate, where 95% per check let
  it fail one of them far more often. The pairs are not independent (each of K oracles is in 2(K-1) of them), so the
  sample size behind k is the number of oracles, not of pairs: with 10 oracles k = 4.66 (2.91 for a single check at
  95%). History, held out on the synthetic benchmark (docs/calibration.md): a bootstrap of mean + 1.645 sd over the
  pairs, 55-70%; the per-check 95% bound, 82-98% at 5 oracles and 88-96% at 10; the joint bound at 10 oracles,
  95-100% at forget01-10, the target still failing. More seeds give a tighter (better-founded) threshold. Two
  exceptions: when every pair gives the same value (no spread: a discrete statistic, or a value that is 0 for every
  oracle) the current threshold is kept if it admits that value;
  and a p-value check (``forget_quality``) keeps its current threshold, a significance level (p-values between
  equivalent models are uniform, so a bound fitted to them only says how spread a uniform variable is: at forget05 of
  the synthetic benchmark the fitted lower bound was 0, a check that can never fail; 10 items give a handful of
  possible values);
* ``target_failure_rate``: the share of target-vs-oracle certificates failing the check, at the current and at the
  derived threshold (a useful threshold keeps failing the target).

Thresholds that scale with the number of items: a check that is a gap between two means over the forget items (every
``<=`` check but ``remind``, whose value is a probability, not a gap) has a sampling spread ~ 1/sqrt(n). The calibration
records its forget-item count n_cal; ``apply_calibration`` uses t x sqrt(n_cal / n) for a benchmark with n forget
items, so a calibration at forget10 can serve forget01 (``scales_with_items`` says which checks scale).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

from ..data.benchmark import Benchmark
from ..errors import ConfigError
from .certify import CertifyConfig, run_battery
from .checks import CHECKS

QUANTILE = 0.95
JOINT = 0.95   # the chance that a new, independently retrained oracle passes every calibrated check at once
NOT_SCALED = {"remind"}
SIGNIFICANCE = {"forget_quality"}   # p-values: uniform between equivalent models, the threshold is a significance level


def scales_with_items(name: str) -> bool:
    """Whether check ``name``'s threshold scales as 1/sqrt(number of forget items) (see the module docstring)."""
    return CHECKS[name].passes == "max" and name not in NOT_SCALED


def tolerance_factor(n: int, coverage: float = QUANTILE, confidence: float = QUANTILE) -> float:
    """k such that mean + k sd of n normal values exceeds the ``coverage`` quantile of their distribution with
    probability ``confidence`` (the one-sided normal tolerance factor: a noncentral t quantile over sqrt(n))."""
    from scipy import stats

    n = max(int(n), 2)
    return float(stats.nct.ppf(confidence, df=n - 1, nc=NormalDist().inv_cdf(coverage) * math.sqrt(n)) / math.sqrt(n))


def per_check_coverage(n_checks: int, joint: float = JOINT) -> float:
    """The coverage each of ``n_checks`` thresholds needs for all of them to cover a new oracle with probability at
    least ``joint`` (Bonferroni: 1 - (1 - joint) / n_checks), whatever the checks' correlation."""
    return 1.0 - (1.0 - joint) / max(int(n_checks), 1)


def derive_threshold(values: list, passes: str, n_eff: int | None = None, q: float = QUANTILE,
                     bounds: tuple[float, float] | None = None, coverage: float | None = None) -> float | None:
    """The threshold derived from a check's values between independent oracles (module docstring): mean + k sd
    (mean - k sd for a check that passes when >=), k = ``tolerance_factor(n_eff, coverage, q)`` (``n_eff``: the
    number of independent oracles behind the values, default their count; ``coverage`` default ``q``), widened to
    admit every value; None without any finite value."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return None
    w = (1.0 if passes == "max" else -1.0) * v
    sd = float(w.std(ddof=1)) if len(w) > 1 else 0.0
    t = max(float(w.mean()) + tolerance_factor(n_eff or len(w), coverage or q, q) * sd, float(w.max()))
    t = t if passes == "max" else -t
    if bounds is not None:
        t = min(max(t, bounds[0]), bounds[1])
    return float(t) + 0.0   # no -0.0


def oracles_of_pairs(n_pairs: int) -> int:
    """k, from the k(k-1) ordered pairs of k oracles."""
    return max(2, round((1 + math.sqrt(1 + 4 * n_pairs)) / 2))


def _derive(name: str, values: list, threshold: float | None, n_eff: int, coverage: float = QUANTILE) -> float | None:
    """``derive_threshold`` with the per-check rules: a p-value check (forget quality) keeps its significance level;
    no spread between the oracles (every value equal and passing) keeps the current threshold."""
    c = CHECKS[name]
    derived = derive_threshold(values, c.passes, n_eff, bounds=(0.0, 1.0) if name in SIGNIFICANCE else None,
                               coverage=coverage)
    if derived is None or threshold is None:
        return derived
    if name in SIGNIFICANCE:
        return threshold               # a significance level: not a spread to fit (it fell to 0 on 50 items)
    finite = [x for x in values if x is not None]
    if len(set(finite)) == 1 and c.judge(finite[0], threshold):
        return threshold               # no spread between the oracles: nothing to derive a margin from
    return derived


def held_out_pass_rate(cal: dict) -> float | None:
    """The whole certificate's pass rate between oracles at thresholds derived **without** them: for each oracle k,
    thresholds are derived from the pairs of the other oracles only and judge every pair that involves k (k audited
    against another, another against k). The derived thresholds admit every pair they were derived from by
    construction, so their in-sample pass rate is 100%; this is the rate a new, independently retrained oracle can
    expect. Needs at least 3 oracles (None otherwise). A pair whose check has no value counts as passing it."""
    labels, pairs = cal.get("oracles", []), cal.get("pairs", [])
    if len(labels) < 3:
        return None
    coverage = cal.get("coverage", QUANTILE)   # files written before the joint rule: 95% per check
    passed = total = 0
    for k in labels:
        fit = [i for i, pair in enumerate(pairs) if k not in pair]
        held = [i for i, pair in enumerate(pairs) if k in pair]
        ok = [True] * len(held)
        for name, row in cal["checks"].items():
            t = _derive(name, [row["values"][i] for i in fit], row["threshold"], len(labels) - 1, coverage)
            for j, i in enumerate(held):
                v = row["values"][i]
                if v is not None and t is not None and not CHECKS[name].judge(v, t):
                    ok[j] = False
        passed += sum(ok)
        total += len(held)
    return passed / total


def _entries(certs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for cert in certs:
        for c in cert["checks"]:
            out.setdefault(c["name"], []).append(c)
    return out


def _judge(name: str, entry: dict, threshold: float | None) -> bool:
    """Whether ``entry`` (a certificate's check) passes ``threshold``; a value-less entry keeps its own verdict."""
    if entry["value"] is None or threshold is None:
        return bool(entry["passed"])
    return CHECKS[name].judge(entry["value"], threshold)


def summarize(pair_certs: list[dict], target_certs: list[dict], n_items: int) -> dict:
    """The per-check calibration table from the oracle-pair certificates and the target's certificates."""
    pairs, targets = _entries(pair_certs), _entries(target_certs)
    checks = {}
    names = [n for n in CHECKS if n in pairs]
    coverage = per_check_coverage(len([n for n in names if n not in SIGNIFICANCE]))
    for name in names:
        entries = pairs[name]
        c = CHECKS[name]
        values = [e["value"] for e in entries]
        finite = [x for x in values if x is not None]
        threshold = entries[0]["threshold"]
        derived = _derive(name, values, threshold, oracles_of_pairs(len(entries)), coverage)
        t_entries = targets.get(name, [])
        row = {"passes": c.passes, "threshold": threshold, "n_pairs": len(entries), "values": values,
               "mean": float(np.mean(finite)) if finite else None,
               "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
               "min": min(finite) if finite else None, "max": max(finite) if finite else None,
               "false_failure_rate": sum(not e["passed"] for e in entries) / len(entries),
               "derived_threshold": derived,
               "derived_false_failure_rate": sum(not _judge(name, e, derived) for e in entries) / len(entries),
               "scales_with_items": scales_with_items(name),
               "target_values": [e["value"] for e in t_entries],
               "target_failure_rate": (sum(not e["passed"] for e in t_entries) / len(t_entries)
                                       if t_entries else None),
               "target_failure_rate_derived": (sum(not _judge(name, e, derived) for e in t_entries) / len(t_entries)
                                               if t_entries else None)}
        checks[name] = row

    def whole(certs, derived: bool):
        if not certs:
            return None
        ok = [all(_judge(e["name"], e, checks[e["name"]]["derived_threshold"]) if derived else e["passed"]
                  for e in cert["checks"] if e["name"] in checks) for cert in certs]
        return sum(ok) / len(ok)

    return {"n_items": n_items, "quantile": QUANTILE, "coverage": coverage, "joint_coverage": JOINT,
            "derivation": "normal tolerance bound, n = oracles, per-check coverage 1 - (1 - joint) / checks",
            "checks": checks,
            "oracle_pass_rate": {"current": whole(pair_certs, False), "derived": whole(pair_certs, True)},
            "target_pass_rate": {"current": whole(target_certs, False), "derived": whole(target_certs, True)}}


def calibrate(oracles: dict[str, tuple], bench: Benchmark, cfg: CertifyConfig | None = None,
              target: tuple | None = None, log=print) -> dict:
    """Run the battery of every ordered pair of ``oracles`` (label -> (model, tokenizer), at least two) and of the
    ``target`` (model, tokenizer) against each oracle; returns ``summarize``'s table plus the pairs it ran."""
    if len(oracles) < 2:
        raise ConfigError(f"calibrate: needs at least 2 independently trained oracles, got {len(oracles)}")
    cfg = cfg or CertifyConfig()
    cfg.validate()
    cache: dict = {}
    models = {label: (net, tok, f"oracle:{label}") for label, (net, tok) in oracles.items()}
    roles_target = {"target": (*target, "target")} if target is not None else {}
    pair_certs, target_certs, pairs = [], [], []
    quiet = (lambda *a: None)
    for i, j in itertools.permutations(models, 2):
        log(f"[calibrate] oracle {i} audited against oracle {j}")
        cert, _ = run_battery({"model": models[i], "oracle": models[j], **roles_target}, bench, cfg, quiet, cache)
        pair_certs.append(cert)
        pairs.append([i, j])
    if target is not None:
        for j in models:
            log(f"[calibrate] target audited against oracle {j}")
            cert, _ = run_battery({"model": roles_target["target"], "oracle": models[j], **roles_target}, bench, cfg,
                                  quiet, cache)
            target_certs.append(cert)
    out = summarize(pair_certs, target_certs, len(bench.forget))
    out["pairs"] = pairs
    out["oracles"] = list(models)
    out["oracle_pass_rate"]["held_out"] = held_out_pass_rate(out)
    out["forget_split"] = bench.forget_split
    out["certify_config"] = dataclasses.asdict(cfg)
    return out


def calibration_markdown(cal: dict) -> str:
    """The calibration table: per check its threshold, false-failure rate on oracle pairs, derived threshold, and
    the target's failure rate at both."""
    def f(x, spec=".3g"):
        return "-" if x is None else format(x, spec)

    lines = [f"Calibration on {cal.get('forget_split', '?')} ({cal['n_items']} forget items), "
             f"{len(cal.get('oracles', []))} oracles, {len(cal.get('pairs', []))} ordered pairs.", "",
             "| check | passes when | threshold | oracle pairs: mean (sd) | false-failure rate | derived threshold | "
             "false-failure rate (derived) | target failure rate | target failure rate (derived) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in cal["checks"].items():
        lines.append(f"| `{name}` | {'`<=`' if r['passes'] == 'max' else '`>=`'} | {f(r['threshold'])} | "
                     f"{f(r['mean'])} ({f(r['sd'])}) | {f(r['false_failure_rate'], '.0%')} | "
                     f"{f(r['derived_threshold'])}{' (scales)' if r['scales_with_items'] else ''} | "
                     f"{f(r['derived_false_failure_rate'], '.0%')} | {f(r['target_failure_rate'], '.0%')} | "
                     f"{f(r['target_failure_rate_derived'], '.0%')} |")
    o, t = cal["oracle_pass_rate"], cal["target_pass_rate"]
    lines += ["", f"Whole certificate passed by oracle pairs: {f(o['current'], '.0%')} (current thresholds), "
                  f"{f(o['derived'], '.0%')} (derived, judged on the pairs they came from); by the target: "
                  f"{f(t['current'], '.0%')} / {f(t['derived'], '.0%')}.",
              "", f"Held out (thresholds derived without each oracle, judging its pairs): "
                  f"{f(o.get('held_out'), '.0%')} of oracle pairs pass the whole certificate."]
    return "\n".join(lines) + "\n"


def calibrated_thresholds(cal: dict, n_items: int) -> dict[str, float]:
    """check -> the derived threshold for a benchmark with ``n_items`` forget items (scaled where the check scales)."""
    out = {}
    for name, r in cal["checks"].items():
        t = r.get("derived_threshold")
        if name not in CHECKS or t is None or name in SIGNIFICANCE:  # a significance level is never calibrated
            continue
        if r.get("scales_with_items") and n_items != cal["n_items"]:
            t = t * math.sqrt(cal["n_items"] / n_items)
        out[name] = float(t)
    return out


def apply_calibration(cfg: CertifyConfig, path: str | Path, n_items: int, log=print) -> CertifyConfig:
    """``cfg`` with the thresholds of the calibration file ``path`` (``calibration.json``) for a benchmark of
    ``n_items`` forget items; thresholds the user set in ``cfg`` explicitly are kept."""
    try:
        cal = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the calibration file ({e})") from None
    if not isinstance(cal, dict) or not isinstance(cal.get("checks"), dict) or not isinstance(cal.get("n_items"), int):
        raise ConfigError(f"{path}: not a calibration.json written by `obliviate calibrate` (needs 'checks' and "
                          f"'n_items')")
    for name, r in cal["checks"].items():
        t = r.get("derived_threshold") if isinstance(r, dict) else "?"
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            raise ConfigError(f"{path}: checks: '{name}': 'derived_threshold' = {t!r} should be a number")
    thresholds = calibrated_thresholds(cal, n_items)
    thresholds.update(cfg.thresholds)
    log(f"[certify] thresholds from {path} (calibrated on {cal['n_items']} forget items, used for {n_items}): "
        + ", ".join(f"{k} {v:.3g}" for k, v in thresholds.items()))
    out = dataclasses.replace(cfg, thresholds=thresholds)
    out.validate(str(path))
    return out
