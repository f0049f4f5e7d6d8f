"""``obliviate audit --certify``: the battery of audits that catch fake forgetting, with thresholds, as a certificate.

Each check compares the audited model with the oracle (the model retrained without the forget set, the gold standard)
under the same audit, so the thresholds are margins, not absolute levels that would depend on the model and data. The
checks are data: ``CHECKS`` in ``audit/checks.py`` (name, what it compares, default threshold, passes when, audit,
needs, and the function that turns its audit's evidence into its value and reason), whose table ``docs/certify.md``
shows. Here, one evidence function per audit runs that audit on the models (``_EVIDENCE``), and ``run_battery`` judges
every enabled check the same way against its threshold.

A check whose evidence is missing (no oracle; no target for ``remind``) fails: forgetting is not verified without it.
A check whose data the benchmark does not have (``shared_facts`` without ``shared_factsNN.json``) is listed under
``skipped``. ``refusal_consistency`` with no refusal in the first turn has nothing to keep: value null, passed, and the
reason says so. The verdict is "forgetting verified" only when every check that ran passed.

Cost: every check names the audit it comes from, and carries that audit's cost (checks from one audit share it):
wall-clock seconds and forward passes, counted by a hook on every model involved (audited model, oracle, target, and
their quantised or relearning copies) as the number of sequences through a forward call (a generation step of a batch
of 8 counts 8; training steps count their micro-batch). The top-level ``cost`` sums the audits once each. A base audit
passed in (``certify(..., audits=...)``) is not run again and costs nothing here; ``reused_audits`` names its role.

Progress: ``log`` gets a line when each audit starts and one with its seconds when it ends.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AuditConfig, from_dict, load_yaml
from ..data.benchmark import Benchmark
from ..data.collate import PromptFormat, set_prompt_spec
from ..errors import ConfigError
from ..io import write_json
from .checks import CHECKS, MISSING, Check, Skip, checks_markdown
from .relearn import RelearnConfig
from .remind import RemindConfig

__all__ = ["CHECKS", "CertifyConfig", "Check", "base_audit_config", "certify", "checks_markdown",
           "load_certify_config", "run_battery"]


@dataclass
class CertifyConfig:
    checks: list[str] = field(default_factory=lambda: list(CHECKS))
    thresholds: dict[str, float] = field(default_factory=dict)    # overrides of the defaults in CHECKS
    batch_size: int = 32
    max_new_tokens: int = 32
    max_length: int = 256
    mink_k: float = 0.4
    fpr: float = 0.01
    gradnorm: bool = True
    verbmem_file: str = ""            # MUSE {prompt, gt} records or documents {text}; "" = the forget QA as text
    verbmem_prefix_tokens: int = 32   # for documents; a QA item keeps its prompt and 2 answer tokens
    knowmem_shots: int = 2
    probe_types: list[str] = field(default_factory=lambda: list(_probe_types()))
    quantize_bits: list[int] = field(default_factory=lambda: [8, 4])
    relearn: RelearnConfig = field(default_factory=RelearnConfig)
    remind: RemindConfig = field(default_factory=RemindConfig)
    seed: int = 0

    def threshold(self, name: str) -> float:
        return float(self.thresholds.get(name, CHECKS[name].threshold))

    def validate(self, where: str = "certify config") -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ConfigError(f"{where}: unknown check(s) {unknown} in 'checks' (known: {', '.join(CHECKS)})")
        for name, value in self.thresholds.items():
            if name not in CHECKS:
                raise ConfigError(f"{where}: 'thresholds' names unknown check '{name}' (known: {', '.join(CHECKS)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: thresholds: '{name}' = {value!r} should be a number")
        if any(not isinstance(b, int) or b < 2 or b > 16 for b in self.quantize_bits):
            raise ConfigError(f"{where}: option 'quantize_bits' = {self.quantize_bits!r} must be integers in 2..16")
        unknown = set(self.probe_types) - set(_probe_types())
        if unknown:
            raise ConfigError(f"{where}: option 'probe_types' names unknown type(s) {sorted(unknown)}")
        if not 0 < self.fpr < 1:
            raise ConfigError(f"{where}: option 'fpr' = {self.fpr!r} must be in (0, 1)")
        self.relearn.validate()
        self.remind.validate()


def _probe_types():
    from .probes import SYNTHETIC_TYPES

    return SYNTHETIC_TYPES


def load_certify_config(path: str | Path | None) -> CertifyConfig:
    """Read a certify config (YAML): top-level options of ``CertifyConfig``, ``thresholds`` (check -> number), and the
    ``relearn`` and ``remind`` sections. Unknown keys are errors naming the file and the key."""
    if path is None:
        cfg = CertifyConfig()
        cfg.validate()
        return cfg
    values = load_yaml(path)
    where = str(path)
    sections = {}
    for key, cls in (("relearn", RelearnConfig), ("remind", RemindConfig)):
        if key in values:
            if not isinstance(values[key], dict):
                raise ConfigError(f"{where}: '{key}' must be a mapping of options")
            sections[key] = from_dict(cls, values.pop(key), f"{where}: {key}")
    for key in ("checks", "probe_types", "quantize_bits"):
        if key in values and not isinstance(values[key], list):
            raise ConfigError(f"{where}: option '{key}' must be a list")
    if "thresholds" in values and not isinstance(values["thresholds"], dict):
        raise ConfigError(f"{where}: 'thresholds' must be a mapping of check names to numbers")
    cfg = from_dict(CertifyConfig, values, where)
    for key, value in sections.items():
        setattr(cfg, key, value)
    cfg.validate(where)
    return cfg


# --- cost metering ----------------------------------------------------------------------------------------------------

class _Meter:
    def __init__(self):
        self.passes = 0
        self.seconds = 0.0


@contextmanager
def _measure(models):
    """Count sequences through every forward call of ``models`` (and of copies made of them inside the block)."""
    meter = _Meter()

    def hook(module, args, kwargs):  # a closure: deep copies of the model share it (a bound method would be copied)
        x = kwargs.get("input_ids")
        if x is None and args:
            x = args[0]
        if x is None:
            x = kwargs.get("inputs_embeds")
        meter.passes += int(x.shape[0]) if hasattr(x, "shape") else 1

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in {id(m): m for m in models}.values()]
    t0 = time.time()
    try:
        yield meter
    finally:
        meter.seconds = time.time() - t0
        for h in handles:
            h.remove()


# --- the battery ------------------------------------------------------------------------------------------------------

class _Battery:
    """Runs each audit once per distinct model (an oracle audited as 'model' reuses its own results)."""

    def __init__(self, models: dict, bench: Benchmark, cfg: CertifyConfig, log, cache: dict | None = None,
                 audit_cfg: AuditConfig | None = None):
        self.models = models          # role -> (net, tokenizer, key)
        self.bench = bench
        self.cfg = cfg
        self.log = log
        self.memo: dict = cache if cache is not None else {}
        # what a per-model result depends on besides the model: settings, data, and the target (relearn recovery)
        settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("checks", "thresholds")}
        self.context = _fingerprint(settings, dataclasses.asdict(audit_cfg) if audit_cfg else None,
                                    str(bench.root), bench.forget_split,
                                    models["target"][2] if "target" in models else None)
        self.costs: dict[str, dict] = {}
        self.seen: set = set()
        self.computed = self.reused = 0   # results computed here / taken from the cache (for the progress log)

    def has(self, role: str) -> bool:
        return role in self.models

    def run(self, audit: str, role: str, fn, depends: tuple = ()):
        """``fn(net, tokenizer)`` once per (audit, model, ``depends``: keys of other models the result depends on);
        its cost is counted once per certificate, also when the result comes from the cache of an earlier
        certificate (the cost of producing the evidence)."""
        net, tok, key = self.models[role]
        memo_key = (audit, key, self.context, *depends)
        if memo_key not in self.memo:
            with _measure([m for m, _, _ in self.models.values()]) as meter:
                value = fn(net, tok)
            self.memo[memo_key] = (value, {"seconds": round(meter.seconds, 3), "forward_passes": meter.passes})
            self.computed += 1
        else:
            self.reused += 1
        value, cost = self.memo[memo_key]
        if memo_key not in self.seen:
            self.seen.add(memo_key)
            c = self.costs.setdefault(audit, {"seconds": 0.0, "forward_passes": 0})
            c["seconds"] = round(c["seconds"] + cost["seconds"], 3)
            c["forward_passes"] += cost["forward_passes"]
        return value

    @contextmanager
    def stage(self, name: str, what: str = ""):
        """Log ``name: start`` and, at the end, ``name: N s`` (noting when every result came from the cache)."""
        self.log(f"[certify] {name}: start" + (f" ({what})" if what else ""))
        t0, computed, reused = time.time(), self.computed, self.reused
        yield
        cached = " (from the cache)" if self.computed == computed and self.reused > reused else ""
        self.log(f"[certify] {name}: {time.time() - t0:.1f} s{cached}")


def _fingerprint(*parts) -> str:
    import hashlib

    from ..io import dumps

    return hashlib.sha256(dumps(list(parts), indent=None).encode()).hexdigest()[:16]


def base_audit_config(cfg: CertifyConfig, audit_cfg: AuditConfig | None = None) -> AuditConfig:
    """The settings of the base audit ``certify`` runs (``audit_cfg`` when given, else from the certify config): a
    cached ``audit_model`` result made with them can be passed to ``certify(..., audits=...)``."""
    if audit_cfg is not None:
        return audit_cfg
    return AuditConfig(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, generate=True, mink_k=cfg.mink_k,
                       max_length=cfg.max_length)


def _fmt(tok, cfg):
    return PromptFormat(tok, cfg.max_length)


# --- evidence: what each audit measures, and each check's value -------------------------------------------------------

@dataclass
class _Run:
    """What an evidence function works on: the battery (models, cache, costs), data, settings, base audits."""
    b: _Battery
    bench: Benchmark
    cfg: CertifyConfig
    acfg: AuditConfig
    results: dict

    def fmt(self, tok) -> PromptFormat:
        return _fmt(tok, self.cfg)

    def both(self, audit: str, fn) -> tuple:
        """``fn(net, tokenizer)`` on the audited model, then on the oracle."""
        return self.b.run(audit, "model", fn), self.b.run(audit, "oracle", fn)


def _base_evidence(r: _Run):
    return r.results["model"]["metrics"], r.results["oracle"]["metrics"]


def _mia_evidence(r: _Run):
    if not r.bench.holdout:
        return Skip("the benchmark has no holdout split (MIA non-members)")
    from .mia import gradnorm_scores, mia_audit

    bench, cfg = r.bench, r.cfg
    grads = {}
    if cfg.gradnorm:
        for role in ("model", "oracle"):
            grads[role] = r.b.run("mia", role, lambda net, tok: (gradnorm_scores(net, r.fmt(tok), bench.forget),
                                                                 gradnorm_scores(net, r.fmt(tok), bench.holdout)))
    r.b.costs.setdefault("mia", {"seconds": 0.0, "forward_passes": 0})
    mia = mia_audit(r.results["model"], r.results["oracle"], gradnorm=grads.get("model"),
                    oracle_gradnorm=grads.get("oracle"), fpr=cfg.fpr)
    oracle_mia = mia_audit(r.results["oracle"], r.results["oracle"], gradnorm=grads.get("oracle"),
                           oracle_gradnorm=grads.get("oracle"), fpr=cfg.fpr)
    attacks = mia["attacks"]
    return attacks, oracle_mia["attacks"], {k: {kk: round(vv, 4) for kk, vv in a.items()} for k, a in attacks.items()}


def _verbmem_evidence(r: _Run):
    from .verbmem import verbmem

    cfg = r.cfg

    def run(net, tok):
        cases = _verbmem_cases(tok, r.bench, cfg)
        return verbmem(net, tok, cases, cfg.max_new_tokens if not cfg.verbmem_file else 128, cfg.batch_size)

    return r.both("verbmem", run)


def _knowmem_evidence(r: _Run):
    from .verbmem import knowmem

    cfg, bench = r.cfg, r.bench
    return r.both("knowmem", lambda net, tok: knowmem(net, tok, r.fmt(tok), bench.forget, bench.retain,
                                                      cfg.knowmem_shots, cfg.max_new_tokens, cfg.batch_size, cfg.seed))


def _probes_evidence(r: _Run):
    from .probes import run_probes, synthetic_probes

    cfg = r.cfg

    def run(net, tok):
        fmt = r.fmt(tok)
        probes = synthetic_probes(r.bench.forget, fmt, demos=r.bench.retain, types=tuple(cfg.probe_types),
                                  seed=cfg.seed)
        return run_probes(net, tok, fmt, probes, cfg.batch_size, cfg.max_new_tokens)

    pm, po = r.both("probes", run)
    return pm, po, {k: {"model": pm["by_type"][k], "oracle": po["by_type"].get(k)} for k in pm["by_type"]}


def _relearn_evidence(r: _Run):
    from .relearn import relearn_attack

    results = r.results
    original = [x["prob"] for x in results["target"]["per_item"]["forget"]] if "target" in results else None
    return r.both("relearn", lambda net, tok: relearn_attack(net, tok, r.bench.forget, r.cfg.relearn,
                                                             related=r.bench.retain, original_probs=original))


def _quantization_evidence(r: _Run):
    from .quantize import quantized_forget_audit

    def run(role):
        return r.b.run("quantization", role, lambda net, tok: quantized_forget_audit(
            net, tok, r.bench, tuple(r.cfg.quantize_bits), r.acfg, before=r.results[role]))

    return run("model"), run("oracle")


def _remind_evidence(r: _Run):
    from .remind import landscape, remind_audit

    splits = {"forget": r.bench.forget, "retain": r.bench.retain_eval, "holdout": r.bench.holdout}

    def feats(net, tok):
        return {s: landscape(net, r.fmt(tok), items, r.cfg.remind) for s, items in splits.items() if items}

    ft, fo = r.b.run("remind", "target", feats), r.b.run("remind", "oracle", feats)
    fm = r.b.run("remind", "model", feats)
    return remind_audit(fm["forget"], ft, fo, r.cfg.remind)


def _honesty_evidence(r: _Run):
    from .honesty import honesty_audit

    cfg = r.cfg
    return r.both("honesty", lambda net, tok: honesty_audit(net, tok, r.fmt(tok), r.bench.forget, cfg.max_new_tokens,
                                                            cfg.batch_size, cfg.seed))


def _overlap_evidence(r: _Run):
    from .shared_facts import overlap_audit

    return r.both("overlap", lambda net, tok: overlap_audit(net, tok, r.bench, r.cfg.batch_size,
                                                            2 * r.cfg.max_new_tokens))


def _fluency_evidence(r: _Run):
    """Fluency of the base audit's forget generations of the model and of the oracle, both scored by the oracle; the
    model's per-item values are added to its forget rows (``fluency_*``) for the report's table."""
    from .fluency import annotate_rows, fluency_report

    questions = [it.question for it in r.bench.forget]
    onet, otok, okey = r.b.models["oracle"]
    rows = {role: r.results[role]["per_item"].get("forget") or [] for role in ("model", "oracle")}
    if not all(rows.values()) or not all("generation" in x for rs in rows.values() for x in rs):
        return Skip("the base audit has no generations for the forget questions")

    def run(role):
        gens = [x["generation"] for x in rows[role]]
        return r.b.run("fluency", role, lambda net, tok: fluency_report(gens, onet, otok, questions, r.cfg.batch_size),
                       depends=(okey,))   # scored by this oracle: a cache shared across oracles must not mix them

    fm, fo = run("model"), run("oracle")
    res = r.results["model"]
    res["per_item"] = {**res["per_item"], "forget": annotate_rows([dict(x) for x in rows["model"]], fm)}
    return fm, fo


# audit -> (what it is, for the progress log; its evidence function). Checks of one audit share one evidence call.
_EVIDENCE: dict[str, tuple[str, Callable[[_Run], Any]]] = {
    "audit": ("", _base_evidence),   # the base audits, already run and logged
    "mia": ("membership inference attacks", _mia_evidence),
    "verbmem": ("verbatim memorisation", _verbmem_evidence),
    "knowmem": ("knowledge memorisation", _knowmem_evidence),
    "probes": ("paraphrased and adversarial probes", _probes_evidence),
    "relearn": ("relearning attack", _relearn_evidence),
    "quantization": ("forget audit of quantised weights", _quantization_evidence),
    "remind": ("REMIND loss landscape", _remind_evidence),
    "honesty": ("'I don't know' multiple choice, refusals over two turns", _honesty_evidence),
    "overlap": ("shared knowledge and combined queries", _overlap_evidence),
    "fluency": ("fluency of the forget answers", _fluency_evidence),
}


# --- the battery ------------------------------------------------------------------------------------------------------

def _judged(check: Check, outcome, cfg: CertifyConfig) -> dict:
    """The certificate's entry of ``check`` from its value function's ``Value`` (or ``MISSING``)."""
    t = cfg.threshold(check.name)
    if outcome is MISSING:
        return {"name": check.name, "value": None, "threshold": t, "passed": False,
                "reason": f"not verified: needs {check.missing}", "audit": check.audit}
    value = outcome.value
    finite = value is not None and bool(np.isfinite(value))
    out = {"name": check.name, "value": float(value) if finite else None, "threshold": t,
           "passed": check.judge(value, t) if outcome.passed is None else outcome.passed, "reason": outcome.reason,
           "audit": check.audit}
    if outcome.details:
        out["details"] = outcome.details
    return out


def _base_audits(b: _Battery, acfg: AuditConfig, given: dict) -> dict:
    """The base audit of every model (``given`` ones reused), compared with the oracle's."""
    from .suite import audit_model, compare_to_oracle

    for role, res in given.items():
        if role not in b.models:
            raise ConfigError(f"certify: an audit is given for '{role}', which has no model (roles: "
                              f"{', '.join(b.models)})")
        if not isinstance(res, dict) or not {"metrics", "per_item", "raw"} <= set(res):
            raise ConfigError(f"certify: the audit given for '{role}' is not a result of audit_model (metrics, "
                              f"per_item, raw)")
    res = {}
    for role in b.models:
        if role in given:
            b.log(f"[certify] base audit of {role}: reused")
            res[role] = given[role]
        else:
            with b.stage(f"base audit of {role}"):
                res[role] = b.run("audit", role, lambda net, tok: audit_model(net, tok, b.bench, acfg, progress=False))
    b.costs.setdefault("audit", {"seconds": 0.0, "forward_passes": 0})
    results = {role: {**r, "metrics": dict(r["metrics"]), "raw": r["raw"]} for role, r in res.items()}
    if "oracle" in results:
        for r in results.values():
            compare_to_oracle(r, results["oracle"])
    return results


def run_battery(models: dict, bench: Benchmark, cfg: CertifyConfig, log=print, cache: dict | None = None,
                audit_cfg: AuditConfig | None = None, audits: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """All enabled checks. ``models`` maps "model", "oracle" and optionally "target" to (net, tokenizer, key);
    ``audits`` maps roles to their base audits made earlier (see ``certify``)."""
    acfg = base_audit_config(cfg, audit_cfg)
    b = _Battery(models, bench, cfg, log, cache, acfg)
    run = _Run(b, bench, cfg, acfg, _base_audits(b, acfg, audits or {}))
    checks: list[dict] = []
    skipped: list[dict] = []
    wanted = [c for c in CHECKS.values() if c.name in cfg.checks]
    for audit in dict.fromkeys(c.audit for c in wanted):   # in registry order, so each audit runs once
        group = [c for c in wanted if c.audit == audit]
        ready = [c for c in group if all(b.has(role) for role in c.needs)]
        evidence = None
        if ready:
            what, gather = _EVIDENCE[audit]
            with b.stage(audit, what) if what else nullcontext():
                evidence = gather(run)
        else:
            log(f"[certify] {audit}: not run (needs {group[0].missing})")
        for c in group:
            outcome = MISSING if c not in ready else evidence if isinstance(evidence, Skip) else \
                c.value(evidence, run)
            if isinstance(outcome, Skip):
                skipped.append({"name": c.name, "reason": outcome.reason})
            else:
                checks.append(_judged(c, outcome, cfg))

    for c in checks:
        c["cost"] = dict(b.costs.get(c["audit"], {"seconds": 0.0, "forward_passes": 0}))
    verdict = "forgetting verified" if checks and all(c["passed"] for c in checks) else "not verified"
    total = {"seconds": round(sum(c["seconds"] for c in b.costs.values()), 3),
             "forward_passes": sum(c["forward_passes"] for c in b.costs.values())}
    cert = {"verdict": verdict, "checks": checks, "skipped": skipped, "cost": total, "audits": b.costs,
            "summary": f"{sum(c['passed'] for c in checks)} of {len(checks)} checks passed"}
    if audits:
        cert["reused_audits"] = [role for role in models if role in audits]
    return cert, run.results


def _verbmem_cases(tok, bench: Benchmark, cfg: CertifyConfig):
    from ..data.formats import read_documents, read_records
    from .verbmem import cut_documents, qa_as_documents, read_verbmem

    if not cfg.verbmem_file:
        return qa_as_documents(_fmt(tok, cfg), bench.forget, 2)
    path = Path(cfg.verbmem_file)
    records = read_records(path)
    if records and isinstance(records[0], dict) and "prompt" in records[0] and "gt" in records[0]:
        return read_verbmem(path, tok)
    return cut_documents(tok, read_documents(path), cfg.verbmem_prefix_tokens, 128)


def certify(model, bench: Benchmark, oracle=None, target=None, cfg: CertifyConfig | None = None,
            out_dir: str | Path | None = None, log=print, cache: dict | None = None,
            audit_cfg: AuditConfig | None = None, load_options: dict | None = None,
            audits: dict[str, dict] | None = None) -> dict:
    """Run the battery on ``model`` (a folder, or a ``(model, tokenizer)`` pair) against ``oracle`` (and ``target``),
    write ``out_dir/certificate.json`` when ``out_dir`` is given. Returns ``{"certificate", "results"}`` with the base
    audits of every model, ready for ``pipeline.audit_report``.

    ``cache`` (a dict kept by the caller) lets certificates of several models against one oracle share the oracle's
    and the target's audits; a model is identified by its resolved folder (or the object, for a pair), so a folder
    whose weights change between calls needs a fresh cache. ``audit_cfg`` sets the base audit (default: the
    certify config's batch size, generation length and Min-K fraction; ``base_audit_config`` gives it).
    ``load_options`` go to ``load_model`` (``allow_pickle``, ``trust_remote_code``). ``audits`` maps roles ("model",
    "oracle", "target") to base audits the caller already holds (``audit_model`` results made with
    ``base_audit_config(cfg, audit_cfg)``): those are not run again; ``reused_audits`` lists their roles."""
    from ..models import load_model

    cfg = cfg or CertifyConfig()
    cfg.validate()
    loaded: dict[str, tuple] = {}
    models = {}
    for role, spec in (("model", model), ("oracle", oracle), ("target", target)):
        if spec is None:
            continue
        if isinstance(spec, tuple):
            net, tok = spec
            key = f"obj:{id(net)}"
        else:
            key = str(Path(spec).resolve()) if Path(spec).exists() else str(spec)
            if key not in loaded:
                loaded[key] = load_model(spec, dtype="auto", **(load_options or {}))
            net, tok = loaded[key]
        if audit_cfg is not None:  # every sub-audit prompts as the base audit does
            set_prompt_spec(tok, audit_cfg.prompt)
        models[role] = (net, tok, key)
    t0 = time.time()
    cert, results = run_battery(models, bench, cfg, log, cache, audit_cfg, audits)
    cert["wall_seconds"] = round(time.time() - t0, 2)
    cert["models"] = {role: (str(spec) if not isinstance(spec, tuple) else "<in memory>")
                      for role, spec in (("model", model), ("oracle", oracle), ("target", target)) if spec is not None}
    cert["benchmark"] = {"root": str(bench.root), "forget_split": bench.forget_split}
    cert["config"] = dataclasses.asdict(cfg)
    cert["thresholds"] = {name: cfg.threshold(name) for name in cfg.checks}
    cert = _finite(cert)
    if out_dir is not None:
        write_json(Path(out_dir) / "certificate.json", cert)
    return {"certificate": cert, "results": results}


def _finite(obj):
    """The certificate as strict JSON: NaN and infinities (an undefined recovery rate, say) become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
