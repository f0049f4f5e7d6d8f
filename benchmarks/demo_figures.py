"""The README's demo figures, measured the way a newcomer gets them, and the demo across seeds.

    python benchmarks/demo_figures.py                  # seed 0: `obliviate demo` on a cold cache; prints the table
    python benchmarks/demo_figures.py --write          # ... and rewrites README.md's table and docs/figures/demo.json
    python benchmarks/demo_figures.py --seeds 0 1 2 --write   # ... and docs/figures/demo-seeds.md

With --write each seed's figures are also kept (docs/figures/demo-seedS.json) and the seed table is made from every
kept seed, so seeds can be measured in separate invocations.

Each seed runs `obliviate demo --seed S` as a subprocess in a fresh folder with an empty OBLIVIATE_CACHE (so the
fine-tunes are part of the figure, as on a clean clone), alone on the machine: time it with nothing else running.
Seed 0 is the README's command itself (`obliviate demo`, whose seed is 0). ``tests/test_figures.py`` checks that the
README's table equals ``docs/figures/demo.json`` to the printed precision.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "figures" / "demo.json"
ROWS = ["forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "privleak"]
MODELS = ["target", "oracle", "unlearned"]
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"
SEEDS = REPO / "docs" / "figures" / "demo-seeds.md"


def run_seed(seed: int, root: Path) -> dict:
    """`obliviate demo` (with `--seed` unless 0) in ``root`` on an empty cache: its report's metrics and wall time."""
    env = {**os.environ, "OBLIVIATE_CACHE": str(root / "cache")}
    cmd = [sys.executable, "-m", "obliviate", "demo", "--quiet"] + (["--seed", str(seed)] if seed else [])
    t0 = time.time()
    subprocess.run(cmd, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - t0
    report = json.loads((root / "runs" / "demo" / "report.json").read_text())
    metrics = {"unlearned": report["metrics"], **report["compare"]}
    return {"seed": seed, "seconds": round(seconds, 1), "command": " ".join(cmd[2:]),
            "metrics": {m: {k: metrics[m].get(k) for k in ROWS} for m in MODELS},
            "versions": report.get("versions", {})}


def cell(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if 0 < abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.3f}"


def table(run: dict) -> str:
    lines = ["metric                          target  oracle  unlearned  better",
             "----------------------------  --------  ------  ---------  ----------------"]
    better = {"forget_quality": "higher", "model_utility": "higher", "forget_Q_A_Prob": "lower",
              "forget_Q_A_ROUGE": "lower", "privleak": "closer to 0"}
    for key in ROWS:
        t, o, u = (cell(key, run["metrics"][m][key]) for m in MODELS)
        lines.append(f"{key:<28}  {t:>8}  {o:>6}  {u:>9}  {better[key]}")
    return "\n".join(lines)


def seed_table(runs: list[dict]) -> str:
    """Mean +- sd over seeds of each model's headline metrics, and whether every seed meets the demo's bar."""
    head = "| metric | " + " | ".join(MODELS) + " |\n|---|" + "---|" * len(MODELS)
    rows = []
    for key in ROWS:
        cells = []
        for m in MODELS:
            vals = [r["metrics"][m][key] for r in runs if r["metrics"][m][key] is not None]
            if not vals:
                cells.append("-")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            fmt = ".2e" if 0 < min(abs(v) for v in vals) < 1e-3 else ".3f"
            cells.append(f"{statistics.mean(vals):{fmt}} ± {sd:{fmt}}")
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    bar = []
    for r in runs:
        t, u = r["metrics"]["target"], r["metrics"]["unlearned"]
        fq_ok = u["forget_quality"] >= 100 * t["forget_quality"]
        mu_ok = u["model_utility"] >= 0.85 * t["model_utility"]
        bar.append(f"seed {r['seed']}: forget quality {u['forget_quality'] / max(t['forget_quality'], 1e-300):.3g}x "
                   f"the target's ({'ok' if fq_ok else 'FAIL'}), utility {u['model_utility'] / t['model_utility']:.3f}x "
                   f"({'ok' if mu_ok else 'FAIL'})")
    return head + "\n" + "\n".join(rows) + "\n\n" + "; ".join(bar) + "."


def replace_between(path: Path, start: str, end: str, text: str) -> None:
    s = path.read_text()
    i, j = s.index(start) + len(start), s.index(end)
    path.write_text(s[:i] + "\n" + text + "\n" + s[j:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--write", action="store_true", help="rewrite README.md, docs/figures/demo.json (seed 0) and "
                                                          "docs/figures/demo-seeds.md (several seeds)")
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix=f"demo-seed{seed}-") as tmp:
            runs.append(run_seed(seed, Path(tmp)))
        print(f"seed {seed}: {runs[-1]['seconds']:.0f} s\n{table(runs[-1])}\n", flush=True)
        if args.write:  # each seed's run is kept, so the seed table can be completed by later invocations
            FIGURES.parent.mkdir(parents=True, exist_ok=True)
            (FIGURES.parent / f"demo-seed{seed}.json").write_text(json.dumps(runs[-1], indent=1) + "\n")
    if not args.write:
        if len(runs) > 1:
            print(seed_table(runs))
        return
    first = next((r for r in runs if r["seed"] == 0), None)
    if first is not None:
        FIGURES.write_text(json.dumps(first, indent=1) + "\n")
        replace_between(REPO / "README.md", START, END, "```\n" + table(first) + "\n...\n```")
    runs = [json.loads(f.read_text()) for f in sorted(FIGURES.parent.glob("demo-seed*.json"))]
    if len(runs) > 1:
        print(seed_table(runs))
        SEEDS.write_text("# The demo across seeds\n\n`python benchmarks/demo_figures.py --seeds "
                         + " ".join(str(r["seed"]) for r in runs) + " --write`: `obliviate demo --seed S` on a cold "
                         "cache, each seed an independent initialisation, fine-tune and unlearning. Mean ± sd over "
                         "the seeds; the bar is forget quality >= 100x the target's and utility >= 0.85x the "
                         "target's on every seed.\n\n" + seed_table(runs) + "\n")


if __name__ == "__main__":
    main()
