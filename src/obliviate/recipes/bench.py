"""``obliviate bench``: many methods (and hyperparameter grids) on one benchmark, fixed seeds, one results table.

The target and the oracle are fine-tuned once (``pipeline.finetune``, cached) and audited once; every run unlearns from
the same target with ``pipeline.unlearn``, is audited with ``pipeline.audit`` and compared with the oracle
(``audit.compare_to_oracle``). Each run lives in ``out/runs/<method>-<key>``; a run whose folder already holds a
completed model for the same settings is not run again, so an interrupted bench picks up where it stopped
(``force=True`` reruns everything). A method that fails (bad hyperparameter, diverged loss) gets a row saying why.

Writes ``out/bench.json`` (every row and the settings), ``out/results.md`` (the table), ``out/report.html``, and,
when asked, a Markdown file elsewhere (``markdown``): the part of that file above the line ``<!-- bench:end -->`` is
replaced and what follows it (a hand-written reading) is kept.

Columns: forget quality (KS test of forget truth ratios against the oracle's; higher is better), model utility
(harmonic mean of the utility metrics; higher), privleak (Min-K% AUC against the oracle's, in %; closer to 0),
forget ROUGE-L recall and forget answer probability (lower), seconds per optimizer step (training methods) and
seconds for the whole unlearning run (load to save, including set-up such as reference caches or factors).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..audit import compare_to_oracle
from ..audit.blur import TIERS, blur_for_model, tier_drops
from ..config import AuditConfig, TrainConfig
from ..data.benchmark import Benchmark
from ..errors import ConfigError, ObliviateError
from ..io import dumps, write_json

# Settings under which each method does something sensible on the demo's tiny model (4 layers, hidden 192) and the
# synthetic benchmark; used for that model unless ``presets=False``. Keys "train.X" set TrainConfig fields.
TINY_PRESETS: dict[str, dict] = {
    "NPO": {"alpha": 5.0},
    "RMU": {"layer": 2, "alpha": 1.0, "steering_coeff": 2.0},
    "ReVa": {"layer": 2, "alpha": 1.0, "steering_coeff": 2.0},
    "ReGLU": {"rank": 8, "rol_rank": 16, "train.lr": 1e-3},
    "KFADE": {"trust_region": "measured", "step_size": 0.01, "steps": 5, "kl_samples": 32},
    "GU": {"last_layers": 0},
    "Scope": {"inner_hp": "alpha=5"},
    "OFMU": {"forget_loss": "ga", "rho": 0.1},
}
MARKER = "<!-- bench:end -->"
BLUR_MAX_ITEMS = 100  # queries per BLUR tier in a bench (answer probabilities only: one pass per tier)
TABLE_COLUMNS = [("forget_quality", "forget quality ↑"), ("model_utility", "model utility ↑"),
                 ("privleak", "privleak →0"), ("forget_rouge", "forget ROUGE ↓"), ("forget_prob", "forget prob ↓"),
                 ("time_per_step_s", "s/step"), ("unlearn_s", "run s")]


@dataclass
class BenchRun:
    """One row to produce: a method, its hyperparameters, TrainConfig overrides and the seed."""

    method: str
    hparams: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    seed: int = 0
    grid_keys: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        shown = {k: v for k, v in {**self.hparams, **{f"train.{k}": v for k, v in self.train.items()}}.items()
                 if k in self.grid_keys}
        extra = ",".join(f"{k}={v}" for k, v in shown.items())
        seed = f" seed={self.seed}" if "seed" in self.grid_keys and "seed" not in shown else ""  # once, not twice
        return f"{self.method}{' ' + extra if extra else ''}{seed}"

    def key(self) -> str:
        return hashlib.sha256(dumps([self.method, self.hparams, self.train, self.seed], indent=None).encode()
                              ).hexdigest()[:10]


def _split_settings(method: str, settings: dict) -> tuple[dict, dict]:
    """Method hyperparameters and TrainConfig overrides ("train.lr") from one mapping, checked by name."""
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    hp, tr = {}, {}
    for k, v in settings.items():
        if k.startswith("train."):
            name = k[len("train."):]
            if name not in train_fields:
                raise ConfigError(f"bench: {method}: unknown training option '{name}' (known: {', '.join(train_fields)})")
            default = getattr(TrainConfig(), name)
            try:
                tr[name] = type(default)(v) if not isinstance(default, str) else str(v)
            except (TypeError, ValueError):
                raise ConfigError(f"bench: {method}: training option '{name}' = {v!r} is not a number") from None
        else:
            hp[k] = v
    return hp, tr


def plan(methods: list[str], hparams: dict[str, dict] | None = None, grids: dict[str, dict[str, list]] | None = None,
         seeds: list[int] = (0,), presets: dict[str, dict] | None = None) -> list[BenchRun]:
    """Expand methods x grid points x seeds into runs; validates every method and hyperparameter before anything runs.

    ``hparams[method]`` fixes values, ``grids[method]`` maps a key to the list of values to try (cartesian product over
    keys), ``presets[method]`` gives defaults that both override. Method names match as ``method_key`` does.
    """
    from ..methods import METHODS, hyperparameters, make_method
    from ..methods.base import method_key

    hparams = {method_key(k): v for k, v in (hparams or {}).items()}
    grids = {method_key(k): v for k, v in (grids or {}).items()}
    presets = {method_key(k): v for k, v in (presets or {}).items()}
    unknown = [m for m in list(hparams) + list(grids) if m not in {method_key(x) for x in methods}]
    if unknown:
        raise ConfigError(f"bench: settings given for method(s) not in the run list: {', '.join(sorted(set(unknown)))}")
    runs = []
    for name in methods:
        cls = METHODS.get(method_key(name))
        if cls is None:
            make_method(name)  # raises the standard "unknown method" error
        fixed = {**presets.get(method_key(name), {}), **hparams.get(method_key(name), {})}
        grid = grids.get(method_key(name), {})
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            settings = {**fixed, **dict(zip(keys, combo))}
            hp, tr = _split_settings(cls.name, settings)
            for seed in seeds:
                full_hp = dict(hp)
                if "seed" in hyperparameters(cls) and "seed" not in hp:
                    full_hp["seed"] = seed
                make_method(cls.name, **full_hp)  # validate now, not after an hour of other runs
                runs.append(BenchRun(cls.name, full_hp, tr, seed,
                                     tuple(keys) + (("seed",) if len(seeds) > 1 else ())))
    return runs


def _finished(run_dir: Path, config: dict) -> bool:
    """Whether ``run_dir`` holds a completed run of exactly these settings."""
    try:
        done = json.loads((run_dir / "bench_run.json").read_text())
        status = json.loads((run_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return False
    return status == "completed" and done.get("config") == json.loads(dumps(config)) and (run_dir / "model").is_dir()


def _time_per_step(run_dir: Path) -> tuple[float | None, int]:
    from ..report.training_log import read_metrics

    lines = [x for x in read_metrics(run_dir / "metrics.jsonl") if "elapsed_s" in x]
    if not lines:
        return None, 0
    last = lines[-1]
    return last["elapsed_s"] / max(last["step"], 1), int(last["step"])


def _row_metrics(metrics: dict) -> dict:
    return {"forget_quality": metrics.get("forget_quality"), "model_utility": metrics.get("model_utility"),
            "privleak": metrics.get("privleak"), "forget_rouge": metrics.get("forget_Q_A_ROUGE"),
            "forget_prob": metrics.get("forget_Q_A_Prob"), "retain_prob": metrics.get("retain_Q_A_Prob")}


def run_bench(bench: Benchmark, runs: list[BenchRun], out_dir: str | Path, train_cfg: TrainConfig | dict | None = None,
              audit_cfg: AuditConfig | None = None, model: str = "tiny", finetune_cfg: TrainConfig | None = None,
              tiny=None, force: bool = False, markdown: str | Path | None = None, command: str = "",
              models: dict[str, Path] | None = None, progress: bool = True, log=print, workers: int = 1,
              data_args: dict | None = None) -> list[dict]:
    """Run every ``BenchRun`` from the benchmark's target; write bench.json, results.md (and report.html).

    ``train_cfg``: a TrainConfig, or options on top of the unlearning preset for ``model`` (``pipeline.train_defaults``);
    ``finetune_cfg`` likewise for fine-tuning. ``models`` ({"target": dir, "oracle": dir}) skips fine-tuning and uses
    those models instead. ``workers`` > 1 unlearns that many runs at once, each in its own process (``spread_runs``;
    ``data_args`` are the ``pipeline.load_data`` arguments that rebuild the benchmark there); finished runs are reused
    and audited here as always.
    """
    from ..engine.run_folder import run_folder
    from ..pipeline import audit, finetune, train_config, unlearn

    out = Path(out_dir)
    with run_folder(out, {"--data": bench.root}):  # obliviate's folder, one bench at a time
        base = train_config("unlearn", model, train_cfg)
        acfg = audit_cfg or AuditConfig()
        models = models or finetune(bench, model, cfg=finetune_cfg, tiny=tiny, progress=progress, log=log)
        refs = {name: audit(models[name], bench, acfg, progress=progress, log=log) for name in ("target", "oracle")}
        for r in refs.values():
            compare_to_oracle(r, refs["oracle"])
        rows = [{"method": name, "reference": True, **_row_metrics(refs[name]["metrics"]), "status": "ok"}
                for name in ("target", "oracle")]
        blur_ref = _blur(models["target"], bench, acfg)  # BLUR's overlap tiers: every run's drop from the target's
        rows[1]["blur"] = tier_drops(blur_ref, _blur(models["oracle"], bench, acfg))
        t_bench = time.time()
        if workers > 1:
            spread_runs(bench, runs, out, base, models["target"], workers, data_args, force, log)
        for i, run in enumerate(runs):
            cfg, run_dir, config = _run_setup(run, base, out, models["target"])
            row = {"method": run.label, "base_method": run.method,
                   "settings": ",".join(f"{k}={v}" for k, v in run.hparams.items()),
                   "train": {k: getattr(cfg, k) for k in ("lr", "epochs", "max_steps", "batch_size", "scheduler")},
                   "seed": run.seed, "hparams": run.hparams, "run_dir": str(run_dir)}
            log(f"[obliviate] bench {i + 1}/{len(runs)}: {run.label}")
            done = run_dir / "bench_run.json"
            try:
                if not force and _finished(run_dir, config):
                    unlearn_s = json.loads(done.read_text())["unlearn_s"]
                    log(f"[obliviate] {run.label}: using the finished run in {run_dir}")
                else:
                    done.unlink(missing_ok=True)
                    t0 = time.time()
                    unlearn(models["target"], bench, run.method, run.hparams, cfg, run_dir, progress=progress, log=log)
                    unlearn_s = time.time() - t0
                    write_json(done, {"config": config, "unlearn_s": unlearn_s})
                result = audit(run_dir / "model", bench, acfg, progress=progress, log=log)
                compare_to_oracle(result, refs["oracle"])
                per_step, steps = _time_per_step(run_dir)
                row.update(_row_metrics(result["metrics"]))
                row["blur"] = tier_drops(blur_ref, _blur(run_dir / "model", bench, acfg))
                row.update({"steps": steps, "time_per_step_s": per_step, "unlearn_s": round(unlearn_s, 2), "status": "ok"})
            except Exception as e:  # one broken run must not end the bench; its row says why
                why = str(e) if isinstance(e, ObliviateError) else f"{type(e).__name__}: {e}"
                log(f"[obliviate] {run.label}: failed: {why}")
                row.update({"status": f"failed: {why}"})
            rows.append(row)
            _write_outputs(out, rows, bench, base, acfg, model, command, markdown, time.time() - t_bench, final=False)
        _write_outputs(out, rows, bench, base, acfg, model, command, markdown, time.time() - t_bench, final=True)
        return rows


def _run_setup(run: BenchRun, base: TrainConfig, out: Path, target) -> tuple[TrainConfig, Path, dict]:
    """A run's training settings, its folder, and the config that marks it finished (``bench_run.json``)."""
    cfg = dataclasses.replace(base, **{**run.train, "seed": run.seed})
    config = {"method": run.method, "hparams": run.hparams, "train": dataclasses.asdict(cfg), "model": str(target)}
    return cfg, out / "runs" / f"{run.method}-{run.key()}", config


def spread_runs(bench: Benchmark, runs: list[BenchRun], out: Path, base: TrainConfig, target, workers: int,
                data_args: dict | None, force: bool = False, log=print) -> None:
    """Unlearn the runs not finished yet on ``workers`` processes at once: worker w takes pending runs w, w + W, ...
    in a fresh ``python -m obliviate.recipes.bench --worker`` (the benchmark rebuilt from ``data_args``; on a machine
    with GPUs worker w sees only GPU w mod #GPUs; on CPUs each takes its share of the cores, ``obliviate.threads``).
    Each finished run writes its ``bench_run.json``; a run a worker could not finish is left to the sequential loop,
    which retries it and reports its failure in its row."""
    import os
    import subprocess

    import torch

    if data_args is None:
        raise ConfigError("bench: --workers needs the data options that rebuild the benchmark in each worker")
    jobs = []
    for run in runs:
        cfg, run_dir, config = _run_setup(run, base, out, target)
        if force or not _finished(run_dir, config):
            jobs.append({"method": run.method, "hparams": run.hparams, "train": dataclasses.asdict(cfg),
                         "run_dir": str(run_dir), "config": config})
    if not jobs:
        return
    job_file = out / "bench_jobs.json"
    write_json(job_file, {"data": data_args, "forget_split": bench.forget_split, "target": str(target),
                          "jobs": jobs})
    n = min(workers, len(jobs))
    gpus = torch.cuda.device_count()
    log(f"[obliviate] bench: {len(jobs)} runs on {n} worker processes")
    procs = []
    for w in range(n):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(w % gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "obliviate.recipes.bench", "--worker", str(job_file),
                                       str(w), str(n)], env=env))
    for proc in procs:
        proc.wait()


def _worker(job_file: str, rank: int, world: int) -> None:
    """One worker of ``spread_runs``: unlearn jobs rank, rank + world, ... and mark each finished."""
    from ..pipeline import load_data, unlearn
    from ..threads import start

    start()
    spec = json.loads(Path(job_file).read_text())
    bench = load_data(**spec["data"])
    for job in spec["jobs"][rank::world]:
        run_dir = Path(job["run_dir"])
        (run_dir / "bench_run.json").unlink(missing_ok=True)
        t0 = time.time()
        try:
            unlearn(spec["target"], bench, job["method"], job["hparams"], TrainConfig().with_options(job["train"]),
                    run_dir, progress=False, log=lambda *a: None)
        except Exception as e:  # the parent's loop retries it and reports the failure in its row
            print(f"obliviate bench worker {rank}: {job['method']}: {e}", file=sys.stderr)
            continue
        write_json(run_dir / "bench_run.json", {"config": job["config"], "unlearn_s": time.time() - t0})


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.1e}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: list[dict]) -> str:
    head = ["method", "settings", *(title for _, title in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(TABLE_COLUMNS)) + "|"]
    for r in rows:
        name = f"*{r['method']}* (reference)" if r.get("reference") else r["method"]
        if r.get("status", "ok") != "ok":
            lines.append(f"| {name} | {r.get('settings', '')} | {r['status']} |" + " |" * (len(TABLE_COLUMNS) - 1))
            continue
        settings = (r.get("settings") or "").replace("|", "\\|") or "defaults"
        if r.get("reference"):
            settings = "before unlearning" if r["method"] == "target" else "retrained without the forget set"
        cells = [name, settings, *(_fmt(r.get(k)) for k, _ in TABLE_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _blur(model_dir, bench: Benchmark, acfg: AuditConfig) -> dict[str, float]:
    return blur_for_model(model_dir, bench, acfg.batch_size, acfg.prompt, max_items=BLUR_MAX_ITEMS)


def blur_table(rows: list[dict]) -> list[str]:
    """Lines of the BLUR tier table: each run's drop in answer probability from the target's, per tier."""
    tiers = [t for t in TIERS if any(t in (r.get("blur") or {}) for r in rows)]
    if not tiers:
        return []
    lines = ["Drop in answer probability from the target's on BLUR's overlap tiers (audit.blur; forget tiers should "
             "drop to the oracle's drop, the others stay near 0):", "",
             "| method | " + " | ".join(tiers) + " |", "|---|" + "---:|" * len(tiers)]
    for r in rows:
        if r.get("blur"):
            lines.append(f"| {r['method']} | " + " | ".join(_fmt(r["blur"].get(t, {}).get("drop")) for t in tiers)
                         + " |")
    return lines + [""]


def results_markdown(rows, bench: Benchmark, cfg: TrainConfig, acfg: AuditConfig, model: str, command: str,
                     seconds: float) -> str:
    n = sum(1 for r in rows if not r.get("reference"))
    train = (f"lr {cfg.lr}, {cfg.epochs:g} epochs" if not cfg.max_steps else f"lr {cfg.lr}, {cfg.max_steps} steps")
    return "\n".join([
        f"# Bench: {bench.name} ({bench.forget_split})",
        "",
        f"{n} runs on model `{model}`, unlearning from the same fine-tuned target: {train}, batch size {cfg.batch_size}, "
        f"{cfg.scheduler} schedule, seed(s) as listed; audit with{'out' if not acfg.generate else ''} generation. "
        f"Bench time {seconds / 60:.1f} min.",
        "",
        f"Regenerate with: `{command}`" if command else "",
        "",
        markdown_table(rows),
        "",
        *(["Drops on BLUR's overlap tiers: `blur.md` (and each row's `blur` in bench.json).", ""]
          if blur_table(rows) else []),
        "forget quality: KS-test p-value of forget truth ratios against the oracle's (higher is better; the oracle is 1). "
        "model utility: harmonic mean of retain and general-knowledge probability, ROUGE and truth ratio (higher). "
        "privleak: relative Min-K% membership AUC against the oracle's, in % (closer to 0). "
        "s/step: seconds per optimizer step; run s: the whole unlearning run (set-up, reference caches, factors "
        "included). Settings list every hyperparameter changed from the method's defaults.",
        "",
    ])


def _write_outputs(out: Path, rows, bench, cfg, acfg, model, command, markdown, seconds, final: bool) -> None:
    from ..io import write_text

    write_json(out / "bench.json", {"benchmark": str(bench.root), "forget_split": bench.forget_split, "model": model,
                                    "train": dataclasses.asdict(cfg), "audit": dataclasses.asdict(acfg),
                                    "command": command, "seconds": round(seconds, 1), "complete": final, "rows": rows})
    text = results_markdown(rows, bench, cfg, acfg, model, command, seconds)
    write_text(out / "results.md", text)
    if blur_table(rows):
        write_text(out / "blur.md", "\n".join([f"# BLUR overlap tiers: {bench.name} ({bench.forget_split})", "",
                                               *blur_table(rows)]))
    if not final:
        return
    if markdown:
        path = Path(markdown)
        tail = ""
        if path.exists():
            old = path.read_text(encoding="utf-8")
            if MARKER in old:
                tail = old[old.index(MARKER) + len(MARKER):]
        write_text(path, text + "\n" + MARKER + (tail if tail else "\n"))
    from ..report.bench_page import render_bench_report

    flat = [{k: v for k, v in r.items() if not isinstance(v, dict) and k not in ("run_dir",)} for r in rows]
    render_bench_report(out, flat)


if __name__ == "__main__":  # python -m obliviate.recipes.bench --worker JOB_FILE RANK WORLD (spread_runs)
    if sys.argv[1:2] == ["--worker"] and len(sys.argv) == 5:
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
