"""Choose `obliviate forget`'s method and settings on the built-in targets (never on RWKU's, which stay held out).

    python benchmarks/forget_grid.py [--targets "Albert Einstein,Neil Armstrong,Tokyo"] [--seeds 0,1,2]
                                     [--out runs/forget-grid]

Runs ``obliviate forget`` for each (setting, target) in its own run folder (the before-audits and training items are
cached after the first setting), and prints per setting the worst after/before over the targets of each forget kind,
of the neighbours and of the general-knowledge probes, and the mean time. The goal (issue 21): every forget kind down
by half or more (after/before <= 0.5), neighbours >= 0.85, utility >= 0.9. A setting is ``--lr``, ``--max-steps`` and
method hyperparameters, as the command takes them.

Run every setting with several ``--seeds``: on SmolLM2 the order of the items alone moved Einstein's neighbour figure
from 0.89 to 0.33 (NPO on the specific tokens, seeds 0 and 1; docs/forget.md), so one seed compares nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

A4 = ["--grad-accum", "4"]  # 8 items a step, the recipe's default until session 9
SETTINGS = {  # name -> extra `obliviate forget` options
    "idkdpo-lr1e-4-s12-a2": ["--method", "IdkDPO", "--tokens", "all", *A4],  # the default until session 9
    "npo-lr1e-4-s12-a2": ["--method", "NPO", "--hp", "alpha=2", *A4],
    "npo-lr1e-4-s16-a4": ["--method", "NPO", "--max-steps", "16", "--hp", "alpha=4", *A4],
    "altpo-lr1e-4-s12-a2": ["--method", "AltPO", "--hp", "alpha=2", "--hp", "max_new_tokens=64", *A4],
    "altpo-standin-lr1e-4-s12-a2": ["--method", "AltPO", "--hp", "alpha=2", "--hp", "decoding=standin",
                                    "--hp", "max_new_tokens=64", *A4],
    "altpo-standin-lr1e-4-s12-a4": ["--method", "AltPO", "--hp", "alpha=4", "--hp", "decoding=standin",
                                    "--hp", "max_new_tokens=64", *A4],
    "idkdpo-layers4-14-lr1e-4-s12-a2": ["--method", "IdkDPO", "--trainable", r"\.layers\.([4-9]|1[0-4])\.mlp\.", *A4],
    "idkdpo-b0.3-lr1e-4-s12-a2": ["--method", "IdkDPO", "--hp", "beta=0.3", "--hp", "alpha=2", *A4],
    # session 9 (item rules 4: neighbours asked in reverse in the retain stream); the session-8 rows above ran with
    # item rules 3
    "idkdpo-nrev": ["--method", "IdkDPO", "--tokens", "all", *A4],
    "idkdpo-nrev-rpref1": ["--method", "IdkDPO", "--tokens", "all", "--hp", "retain_pref=1", *A4],
    "idkdpo-nrev-specific": ["--method", "IdkDPO", "--tokens", "specific", *A4],
    "idkdpo-nrev-specific-rpref1": ["--method", "IdkDPO", "--tokens", "specific", "--hp", "retain_pref=1", *A4],
    "npo-nrev": ["--method", "NPO", "--tokens", "all", *A4],
    "npo-nrev-specific": ["--method", "NPO", "--tokens", "specific", *A4],
    "npo-nrev-specific-a4": ["--method", "NPO", "--tokens", "specific", "--hp", "alpha=4", *A4],
    "npo-nrev-ga8": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8"],  # the default since session 9
    # session 10 (item rules 5): only the model's right answers to the general questions are retained, 85 of them
    "npo-right": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8"],
    # session 11: the target-specific tokens only, now with 16 items a step (session 9 tried them with 8)
    "npo-right-specific": ["--method", "NPO", "--tokens", "specific", "--grad-accum", "8"],
    # the learning rate decayed linearly to 0 over the 12 steps (constant until session 11)
    "npo-right-linear": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8", "--scheduler", "linear"],
    # half the learning rate
    "npo-right-lr5e-5": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8", "--lr", "5e-5"],
    # bf16 autocast of the training steps: 1.29x faster unlearning, 2.78 GB peak (over the bar)
    "npo-right-bf16": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8", "--precision", "bf16"],
    # KL to the starting model as the retain loss (a frozen copy of the trained weights: 2.55 GB peak, over the bar)
    "npo-right-kl": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8", "--hp", "retain_loss=kl"],
    # the control: the default run with the forget term off (gamma 0), the retain stream alone, the same steps
    "control-gamma0": ["--method", "NPO", "--tokens", "all", "--grad-accum", "8", "--hp", "gamma=0"],
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
    ap.add_argument("--seeds", default="0",
                    help="comma-separated training seeds (--seed: the order of the items; the items stay the same); "
                         "each (setting, target) runs once per seed, and the worst is over seeds too")
    ap.add_argument("--out", default="runs/forget-grid")
    args = ap.parse_args()
    rows = []
    for name in args.settings.split(","):
        for target in args.targets.split(","):
            for seed in (int(x) for x in args.seeds.split(",")):
                out = Path(args.out) / (name if seed == 0 else f"{name}-seed{seed}") / target.replace(" ", "_")
                if not (out / "report.json").exists():
                    t = time.time()
                    cmd = [sys.executable, "-m", "obliviate", "forget", "--target", target, "--out", str(out),
                           "--quiet", "--seed", str(seed), *SETTINGS[name]]
                    print("$", " ".join(cmd), flush=True)
                    subprocess.run(cmd, check=True)
                    print(f"  {time.time() - t:.0f} s", flush=True)
                rep = json.loads((out / "report.json").read_text())
                rows.append((name, f"{target} s{seed}", ratios(rep), rep["cost"]["total_s"]))
    print(f"\n{'setting':<24} {'target, seed':<21}" + "".join(f"{k:>12}" for k in (*KINDS, "neighbor", "utility"))
          + "  time")
    for name, target, r, secs in rows:
        print(f"{name:<24} {target:<21}" + "".join(f"{r[k]:>12.2f}" if k in r else f"{'-':>12}"
                                                   for k in (*KINDS, "neighbor", "utility")) + f"  {secs:.0f} s")
    print("\nworst over targets and seeds (forget kinds: max after/before, want <= 0.5; neighbour, utility: min, want "
          ">= 0.85, >= 0.9):")
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
