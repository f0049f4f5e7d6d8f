"""``report.json`` (the contract every later tool reads) and the table printed to the terminal."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path

from ..io import dumps, write_json

# (metric, what "better" means) in the order the terminal table shows them
DIRECTIONS: dict[str, str] = {
    "forget_quality": "higher",
    "model_utility": "higher",
    "forget_Q_A_Prob": "lower",
    "forget_Q_A_ROUGE": "lower",
    "forget_truth_ratio": "closer to oracle",
    "forget_truth_ratio_prob_mean": "closer to oracle",
    "privleak": "closer to 0",
    "mia_min_k": "closer to oracle",
    "extraction_strength": "lower",
    "exact_memorization": "lower",
    "forget_nonword_share": "closer to oracle",
    "forget_ngram_entropy": "closer to oracle",
    "retain_Q_A_Prob": "higher",
    "retain_Q_A_ROUGE": "higher",
    "retain_truth_ratio": "higher",
    "ra_Q_A_Prob_normalised": "higher",
    "wf_Q_A_Prob_normalised": "higher",
}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("obliviate", "torch", "transformers", "accelerate", "tokenizers", "scipy", "rouge-score", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(dumps(config, indent=None).encode()).hexdigest()[:12]


def build_report(result: dict, config: dict, compare: dict[str, dict] | None = None, model_name: str = "model",
                 oracle: str | None = None) -> dict:
    """Assemble report.json: ``metrics`` and ``per_item`` of the audited model, other models' metrics under ``compare``,
    every model's per-item score lists (forget truth ratios, membership scores) under ``distributions``, the other
    models' forget-split rows under ``compare_per_item`` (for before/after drill-downs) and the reference model's name
    under ``oracle`` (None without one)."""
    compare = compare or {}
    return {
        "model": model_name,
        "oracle": oracle if oracle in compare else None,
        "metrics": result["metrics"],
        "compare": {name: r["metrics"] for name, r in compare.items()},
        "compare_per_item": {name: {"forget": r["per_item"]["forget"]} for name, r in compare.items()
                             if "forget" in r.get("per_item", {})},
        "distributions": {name: r.get("raw", {}) for name, r in {model_name: result, **compare}.items()},
        "directions": DIRECTIONS,
        "per_item": result["per_item"],
        "protocol": result.get("protocol", "obliviate"),
        "prompt_format": result.get("prompt_format"),
        "cost": result.get("cost", {}),
        "config": config,
        "config_hash": config_hash(config),
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_report(run_dir: str | Path, report: dict) -> Path:
    path = Path(run_dir) / "report.json"
    write_json(path, report)
    return path


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.2e}"
        return f"{v:.3f}"
    return str(v)


def format_table(columns: dict[str, dict], keys: list[str] | None = None) -> str:
    """A plain-text table: one row per metric, one column per model, and each metric's direction of 'better'."""
    keys = keys or [k for k in DIRECTIONS if any(k in m for m in columns.values())]
    names = list(columns)
    head = ["metric", *names, "better"]
    rows = [[k, *(_fmt(columns[n].get(k)) for n in names), DIRECTIONS.get(k, "")] for k in keys]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def load_report(path: str | Path) -> dict:
    from ..errors import DataError

    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: report not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno})") from None
