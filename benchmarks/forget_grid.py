"""Choose `obliviate forget`'s method and settings on the built-in targets (never on RWKU's, which stay held out).

    python benchmarks/forget_grid.py [--targets "Albert Einstein,Neil Armstrong,Tokyo"] [--out runs/forget-grid]

Runs ``obliviate forget`` for each (setting, target) in its own run folder (the before-audits and training items are
cached after the first setting), and prints per setting the worst after/before over the targets of each forget kind,
of the neighbours and of the general-knowledge probes, and the mean time. The goal (issue 21): every forget kind down
by half or more (after/before <= 0.5), neighbours >= 0.85, utility >= 0.9. A setting is ``--lr``, ``--max-steps`` and
method hyperparameters, as the command takes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # name -> extra `obliviate forget` options
    "idkdpo-lr1e-4-s12-a2": [],  # the recipe's defaults
    "npo-lr1e-4-s12-a2": ["--method", "NPO", "--hp", "alpha=2"],
    "npo-lr1e-4-s16-a4": ["--method", "NPO", "--max-steps", "16", "--hp", "alpha=4"],
    "altpo-lr1e-4-s12-a2": ["--method", "AltPO", "--hp", "alpha=2", "--hp", "max_new_tokens=64"],
    "altpo-standin-lr1e-4-s12-a2": ["--method", "AltPO", "--hp", "alpha=2", "--hp", "decoding=standin",
                                    "--hp", "max_new_tokens=64"],
    "altpo-standin-lr1e-4-s12-a4": ["--method", "AltPO", "--hp", "alpha=4", "--hp", "decoding=standin",
                                    "--hp", "max_new_tokens=64"],
    "idkdpo-layers4-14-lr1e-4-s12-a2": ["--trainable", r"\.layers\.([4-9]|1[0-4])\.mlp\."],
    "idkdpo-b0.3-lr1e-4-s12-a2": ["--hp", "beta=0.3", "--hp", "alpha=2"],
    # session 9: item rules 4 (neighbour reverse items in the retain stream), with and without the retain preference
    "idkdpo-nrev": [],
    "idkdpo-nrev-rpref1": ["--hp", "retain_pref=1"],
    "idkdpo-nrev-rpref2": ["--hp", "retain_pref=2"],
    "idkdpo-nrev-specific": ["--tokens", "specific"],
    "npo-nrev-specific": ["--method", "NPO", "--tokens", "specific"],
    "idkdpo-nrev-specific-rpref1": ["--tokens", "specific", "--hp", "retain_pref=1"],
}
KINDS = ("cloze", "question", "reverse", "paraphrase", "adversarial")


def ratios(report: dict) -> dict[str, float]:
    """after/before accuracy per forget kind, and of the neighbour and utility sets (before is 1.0 by construction)."""
    m = report["metrics"]
    out = {k: m.get(f"forget_{k}_accuracy") for k in KINDS}
    out.update(neighbor=m.get("neighbor_accuracy"), utility=m.get("utility_accuracy"))
    return {k: v for k, v in out.items() if v is not None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="Albert Einstein,Neil Armstrong,Thomas Edison")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from SETTINGS")
    ap.add_argument("--out", default="runs/forget-grid")
    args = ap.parse_args()
    rows = []
    for name in args.settings.split(","):
        for target in args.targets.split(","):
            out = Path(args.out) / name / target.replace(" ", "_")
            if not (out / "report.json").exists():
                t = time.time()
                cmd = [sys.executable, "-m", "obliviate", "forget", "--target", target, "--out", str(out), "--quiet",
                       *SETTINGS[name]]
                print("$", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
                print(f"  {time.time() - t:.0f} s", flush=True)
            rep = json.loads((out / "report.json").read_text())
            rows.append((name, target, ratios(rep), rep["cost"]["total_s"]))
    print(f"\n{'setting':<24} {'target':<18}" + "".join(f"{k:>12}" for k in (*KINDS, "neighbor", "utility")) + "  time")
    for name, target, r, secs in rows:
        print(f"{name:<24} {target:<18}" + "".join(f"{r[k]:>12.2f}" if k in r else f"{'-':>12}"
                                                   for k in (*KINDS, "neighbor", "utility")) + f"  {secs:.0f} s")
    print("\nworst over targets (forget kinds: max after/before, want <= 0.5; neighbour, utility: min, want >= 0.85, "
          ">= 0.9):")
    for name in dict.fromkeys(n for n, *_ in rows):
        mine = [r for n, _, r, _ in rows if n == name]
        worst = {k: max(r[k] for r in mine if k in r) for k in KINDS if any(k in r for r in mine)}
        worst.update({k: min(r[k] for r in mine) for k in ("neighbor", "utility")})
        ok = all(v <= 0.5 for k, v in worst.items() if k in KINDS) and worst["neighbor"] >= 0.85 and \
            worst["utility"] >= 0.9
        print(f"{name:<24} " + "  ".join(f"{k} {v:.2f}" for k, v in worst.items()) + ("  MEETS" if ok else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
