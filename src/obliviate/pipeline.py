"""The recipes behind the command line: fine-tune target and oracle, unlearn, audit, and the demo that chains them.

Each recipe is a plain function a user can call from Python; the CLI only parses options and calls these.
Trained models and audits are cached by a hash of everything that determines them (data files, model, settings), so a
second demo run skips straight to unlearning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from .audit import audit_model, compare_to_oracle
from .config import AuditConfig, TrainConfig
from .data.benchmark import Benchmark
from .data.collate import PLAIN_TEMPLATE
from .engine import train
from .io import dumps, write_json
from .methods import make_method
from .models import TinyConfig, load_model, save_model, tiny_from_texts
from .report import build_report, format_table, write_report

# Settings under which the default tiny model memorises the synthetic benchmark in a few minutes on a 2-core CPU.
DEMO_FINETUNE = TrainConfig(lr=3e-3, epochs=20, batch_size=32, warmup_ratio=0.05, scheduler="linear")
DEMO_UNLEARN = TrainConfig(lr=5e-4, epochs=5, batch_size=8, scheduler="constant", warmup_ratio=0.0)
DEMO_METHOD = "NPO"
# The demo weights the retain term more than NPO's default (alpha 1): measured on the synthetic benchmark, alpha 5 keeps
# model utility within 0.8x of the target's while forget quality rises by nine orders of magnitude.
DEMO_HPARAMS = {"NPO": {"alpha": 5.0}}
PRETRAIN_REPEAT = 3  # general knowledge is seen this many times per epoch: it plays the part of pre-training
RECIPE_VERSION = 1  # bump when fine-tuning changes in a way the cache key cannot see


def cache_root() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE", Path.home() / ".cache" / "obliviate"))


def _hash(*parts) -> str:
    return hashlib.sha256(dumps(list(parts), indent=None).encode()).hexdigest()[:16]


def benchmark_texts(bench: Benchmark) -> list[str]:
    """Every text a benchmark holds, in prompt form, for training a tiny model's tokenizer."""
    texts = []
    for items in [bench.full, bench.pretrain, bench.forget, bench.retain, bench.retain_eval, bench.holdout,
                  *bench.utility.values()]:
        for it in items:
            texts.append(PLAIN_TEMPLATE.format(question=it.question))
            texts += [q for q in (it.paraphrased_question,) if q]
            texts += [" " + a for a in (it.answer, it.paraphrased_answer, *it.perturbed_answers) if a]
    return texts


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").exists() and (model_dir / "obliviate.json").exists()


def finetune(bench: Benchmark, model: str = "tiny", out_dir: str | Path | None = None,
             cfg: TrainConfig | None = None, tiny: TinyConfig | None = None, which: tuple[str, ...] = ("target", "oracle"),
             progress: bool = True, log=print) -> dict[str, Path]:
    """Fine-tune the target (every training split) and the oracle (retain only) from the same starting model.

    Returns ``{"target": dir, "oracle": dir}``. With ``out_dir=None`` the models go to the cache and a later call with
    the same data, model and settings returns them without training.
    """
    cfg = cfg or DEMO_FINETUNE
    tiny = tiny or TinyConfig()
    key = _hash(RECIPE_VERSION, PRETRAIN_REPEAT, bench.fingerprint(), bench.forget_split, model,
                tiny.to_dict() if model == "tiny" else None, dataclasses.asdict(cfg))
    root = Path(out_dir) if out_dir is not None else cache_root() / "finetuned" / key
    data = {"target": bench.target_train_items(PRETRAIN_REPEAT), "oracle": bench.oracle_train_items(PRETRAIN_REPEAT)}
    out: dict[str, Path] = {}
    for name in which:
        dest = root / name
        out[name] = dest
        if _is_complete(dest):
            log(f"[obliviate] {name}: using the fine-tuned model in {dest}")
            continue
        log(f"[obliviate] fine-tuning the {name} on {len(data[name])} items -> {dest}")
        if model == "tiny":
            torch.manual_seed(tiny.seed)
            net, tok = tiny_from_texts(benchmark_texts(bench), tiny)
        else:
            net, tok = load_model(model, dtype="auto")
        net = train(net, tok, make_method("finetune"), {"train": data[name]}, cfg, root / f"{name}.run",
                    progress=progress)
        save_model(net, tok, dest)
        write_json(dest / "obliviate.json", {"role": name, "benchmark": bench.name, "forget_split": bench.forget_split,
                                             "base_model": model, "train": dataclasses.asdict(cfg), "key": key})
    return out


def unlearn(model_dir: str | Path, bench: Benchmark, method: str, hparams: dict | None, cfg: TrainConfig,
            out_dir: str | Path, resume: bool = False, progress: bool = True, log=print) -> Path:
    """Unlearn the benchmark's forget split from ``model_dir``; the result goes to ``out_dir/model``."""
    out_dir = Path(out_dir)
    m = make_method(method, **(hparams or {}))
    net, tok = load_model(model_dir, dtype="auto")
    log(f"[obliviate] unlearning {len(bench.forget)} forget items with {m.name} {m.hparams()} -> {out_dir}")
    write_json(out_dir / "config.json", {"method": m.name, "hparams": m.hparams(), "train": dataclasses.asdict(cfg),
                                         "model": str(model_dir), "benchmark": str(bench.root),
                                         "forget_split": bench.forget_split})
    net = train(net, tok, m, {"forget": bench.forget, "retain": bench.retain}, cfg, out_dir, resume=resume,
                progress=progress)
    save_model(net, tok, out_dir / "model")
    write_json(out_dir / "status.json", {"state": "completed"})
    return out_dir / "model"


def _weights_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(model_dir.glob("*.safetensors")):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def audit(model_dir: str | Path, bench: Benchmark, cfg: AuditConfig | None = None, use_cache: bool = True,
          progress: bool = True, log=print) -> dict:
    """Audit a saved model; the result is cached beside the model, keyed by weights, data and settings."""
    cfg = cfg or AuditConfig()
    model_dir = Path(model_dir)
    key = _hash(_weights_fingerprint(model_dir), bench.fingerprint(), bench.forget_split, dataclasses.asdict(cfg))
    cache = model_dir / "audits" / f"{key}.json"
    if use_cache and cache.exists():
        log(f"[obliviate] audit of {model_dir}: cached")
        return json.loads(cache.read_text())
    log(f"[obliviate] auditing {model_dir}")
    net, tok = load_model(model_dir, dtype="auto")
    result = audit_model(net, tok, bench, cfg, progress=progress)
    if use_cache:
        write_json(cache, result)
    return result


def audit_report(results: dict[str, dict], oracle: str | None, main: str, config: dict, run_dir: str | Path,
                 log=print) -> dict:
    """Compare every audited model with the oracle, write report.json for ``main``, print the table."""
    ref = results.get(oracle) if oracle else None
    for r in results.values():
        compare_to_oracle(r, ref)
    report = build_report(results[main], config, {k: v for k, v in results.items() if k != main}, model_name=main,
                          oracle=oracle)
    path = write_report(run_dir, report)
    log("\n" + format_table({name: r["metrics"] for name, r in results.items()}))
    log(f"\n[obliviate] report: {path}")
    try:  # the page is a view of report.json: failing to draw it must not fail the run
        from .report.html import write_run_report

        log(f"[obliviate] page: {write_run_report(run_dir, report)}")
    except Exception as e:
        log(f"[obliviate] report.html not written ({type(e).__name__}: {e}); retry with `obliviate report {run_dir}`")
    return report
