"""Cost curves: audit and unlearning time and peak memory against forget-set size and model size.

    python benchmarks/cost_curves.py            # the full grid (about 5 min alone on 2 cores)
    python benchmarks/cost_curves.py --quick    # tiny at forget01/05, SmolLM2 at forget01: a check that it runs

Each cell (model x TOFU forget split x job) runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is
its own; the time is the job's wall time after the model is loaded (imports and loading are reported apart as the
process's base RSS). Jobs:

* ``unlearn``: NPO through ``engine.train`` for a fixed number of epochs over the forget set (8 forget + 8 retain items
  per step), reference log-probs included;
* ``audit``: ``audit.audit_model`` with TOFU's splits (forget, retain, holdout, real authors, world facts).

Models and what each cell covers (stated in the printed table):

* ``tiny``: the tiny Llama (``TinyConfig()``, tokenizer trained on TOFU's texts, random weights); TOFU forget01 / 05 /
  10 whole (40 / 200 / 400 forget items), 2 epochs; audit of every split, greedy answers capped at ``--new-tokens``
  (a random model never stops early, so every answer costs the cap).
* ``smollm2``: SmolLM2-135M on a subset to stay affordable on a CPU: ``--facts`` questions of each forget author
  (forget01 / 05 / 10 = 2 / 10 / 20 authors), the first ``--smol-retain`` retain and retain-eval items, 1 epoch; audit
  of the forget, retain and holdout splits only, answers capped at ``--smol-new-tokens``.

Writes ``docs/img/cost_time.png`` and ``docs/img/cost_memory.png`` (``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOFU = Path(os.environ.get("OBLIVIATE_SHARED_DATA", REPO.parent / "shared" / "data")) / "tofu"
SPLITS = {"forget01": 1, "forget05": 5, "forget10": 10}  # percent of TOFU's authors


def _bench(model: str, split: str, facts: int, retain: int):
    """The benchmark a cell runs on: TOFU's split whole (tiny) or cut to ``facts`` questions per author (smollm2)."""
    import dataclasses

    from obliviate.data import load_benchmark

    bench = load_benchmark(TOFU, split)
    if model == "tiny":
        return bench
    cut = [it for i, it in enumerate(bench.forget) if i % 20 < facts]
    holdout = [it for i, it in enumerate(bench.holdout) if i % 20 < facts]
    return dataclasses.replace(bench, forget=cut, holdout=holdout, retain=bench.retain[:retain],
                               retain_eval=bench.retain_eval[:retain], utility={})


def _cell(args) -> None:
    """One measurement in this process, printed as one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from obliviate.config import AuditConfig, TrainConfig
    from obliviate.models import load_model

    model, tok = load_model(args.model_dir, dtype="float32", device="cpu")
    bench = _bench(args.model, args.split, args.facts, args.smol_retain)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args.job == "unlearn":
        from obliviate.engine import train
        from obliviate.methods import make_method

        cfg = TrainConfig(lr=1e-5, epochs=args.epochs, batch_size=8, scheduler="constant", seed=0)
        with tempfile.TemporaryDirectory() as run:
            train(model, tok, make_method("NPO"), {"forget": bench.forget, "retain": bench.retain}, cfg, run,
                  progress=False)
            steps = sum(1 for line in Path(run, "metrics.jsonl").read_text().splitlines() if line.strip())
        extra = {"steps": steps}
    else:
        from obliviate.audit import audit_model

        splits = ["forget", "retain", "holdout"] + (["ra", "wf"] if args.model == "tiny" else [])
        audit_model(model, tok, bench, AuditConfig(max_new_tokens=args.new_tokens, splits=splits), progress=False)
        extra = {"items": sum(len(v) for k, v in bench.eval_splits().items() if k in splits)}
    seconds = time.perf_counter() - t0
    print(json.dumps({"model": args.model, "split": args.split, "job": args.job, "forget_items": len(bench.forget),
                      "seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "base_rss_mib": base_rss, **extra}))


def _run_cell(model: str, model_dir: Path, split: str, job: str, args) -> dict:
    new_tokens = args.new_tokens if model == "tiny" else args.smol_new_tokens
    epochs = args.epochs if model == "tiny" else 1
    cmd = [sys.executable, __file__, "--cell", "--model", model, "--model-dir", str(model_dir), "--split", split,
           "--job", job, "--threads", str(args.threads), "--facts", str(args.facts), "--new-tokens", str(new_tokens),
           "--epochs", str(epochs), "--smol-retain", str(args.smol_retain)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OBLIVIATE_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"cell {model} {split} {job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], out_dir: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    for key, ylabel, name in (("seconds", "wall time (s)", "cost_time.png"),
                              ("peak_rss_mib", "peak RSS (MiB)", "cost_memory.png")):
        fig = Figure(figsize=(7.5, 3.2), dpi=144, layout="constrained")
        FigureCanvasAgg(fig)
        for ax, model in zip(fig.subplots(1, 2), ("tiny", "smollm2")):
            for job, color in (("audit", "#2c6fbb"), ("unlearn", "#c0392b")):
                pts = sorted((SPLITS[r["split"]], r[key]) for r in rows if r["model"] == model and r["job"] == job)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=job)
            ax.set_title({"tiny": "tiny Llama (2.2 M), whole splits",
                          "smollm2": "SmolLM2-135M, subset (see docs)"}[model], fontsize=9)
            ax.set_xlabel("forget set (% of TOFU authors)", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_xticks(list(SPLITS.values()))
            ax.set_ylim(bottom=0)
            ax.grid(True, color="#e3e3e3", linewidth=0.6)
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=8)
        path = out_dir / name
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp)
        tmp.replace(path)
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="forget01 and forget05 only, shorter answers")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--epochs", type=float, default=2.0, help="NPO epochs on the tiny model (SmolLM2: 1)")
    p.add_argument("--facts", type=int, default=1, help="SmolLM2: questions kept per forget author")
    p.add_argument("--smol-retain", type=int, default=8, help="SmolLM2: retain (and retain-eval) items kept")
    p.add_argument("--new-tokens", type=int, default=64, help="tiny: greedy answer length cap in the audit")
    p.add_argument("--smol-new-tokens", type=int, default=32, help="SmolLM2: greedy answer length cap")
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--out", default=str(REPO / "docs" / "img"), help="folder for the PNGs")
    p.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--split", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cell:
        _cell(args)
        return
    if args.quick:
        args.new_tokens, args.smol_new_tokens, args.epochs, args.facts, args.smol_retain = 16, 8, 1.0, 1, 4
    splits = ["forget01", "forget05"] if args.quick else list(SPLITS)
    t_start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        dirs = {}
        for model in args.models.split(","):
            if model == "tiny":
                sys.path.insert(0, str(HERE))
                from step_speed import tiny_model_dir

                dirs["tiny"] = tiny_model_dir(Path(d))
            else:
                from obliviate.models.smollm2 import ensure_converted

                dirs["smollm2"] = ensure_converted()
        for model, model_dir in dirs.items():
            for split in splits[:1] if args.quick and model == "smollm2" else splits:
                for job in ("unlearn", "audit"):
                    rows.append(_run_cell(model, model_dir, split, job, args))
                    r = rows[-1]
                    print(f"  {model:8}{split:10}{job:8}{r['seconds']:8.1f} s{r['peak_rss_mib']:8.0f} MiB", flush=True)
    print(f"\ncost curves, {args.threads} thread(s), load {_load()}; tiny: whole TOFU splits, NPO {args.epochs:g} "
          f"epochs, audit of all splits, answers <= {args.new_tokens} tokens; smollm2: {args.facts} question(s) "
          f"per forget author, {args.smol_retain} retain items, NPO 1 epoch, audit of forget/retain/holdout, "
          f"answers <= {args.smol_new_tokens} tokens")
    print(f"{'model':9}{'split':10}{'forget items':>13}{'job':>9}{'time s':>9}{'peak RSS MiB':>14}{'after load':>12}"
          f"{'detail':>14}")
    for r in rows:
        detail = f"{r['steps']} steps" if r["job"] == "unlearn" else f"{r['items']} items"
        print(f"{r['model']:9}{r['split']:10}{r['forget_items']:>13}{r['job']:>9}{r['seconds']:>9.1f}"
              f"{r['peak_rss_mib']:>14.0f}{r['base_rss_mib']:>12.0f}{detail:>14}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in plot(rows, out):
        print(f"wrote {path}")
    print(f"total {time.time() - t_start:.0f} s")


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] if Path("/proc/loadavg").exists() else "?"


if __name__ == "__main__":
    main()
