"""The steps every command is made of, each a plain function a user can call from Python: load the data, fine-tune
target and oracle, unlearn, audit (cached), report; and the command-level flows (``unlearn_and_audit``,
``audit_models``, ``certify_model``) that the command line calls, one per command, after parsing its options.

Trained models and audits are cached by a hash of everything that determines them (data files, model, settings), so a
second run skips straight to what changed. Training settings given as a dict are options on top of the preset for the
model (``train_defaults``): the tiny recipe's for obliviate's tiny model, open-unlearning's for any other.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from .audit import audit_model, compare_to_oracle
from .cache import cache_key, cache_root, weights_fingerprint
from .config import PRETRAINED_FINETUNE, PRETRAINED_UNLEARN, TINY_FINETUNE, TINY_UNLEARN, AuditConfig, TrainConfig
from .data.benchmark import Benchmark
from .data.collate import PLAIN_TEMPLATE, set_prompt_spec
from .engine import train
from .engine.distributed import all_agree, barrier, join_processes, launched
from .engine.run_folder import check_run_folder, run_folder
from .errors import ConfigError, DataWarning
from .io import dumps, write_json
from .methods import make_method
from .models import TinyConfig, load_model, save_model, tiny_from_texts
from .report import build_report, format_table, write_report

DEFAULT_DATA = "runs/data/fictional-authors"
PRETRAIN_REPEAT = 3  # general knowledge is seen this many times per epoch: it plays the part of pre-training
RECIPE_VERSION = 1  # bump when fine-tuning changes in a way the cache key cannot see
AUDIT_CACHE_VERSION = 2  # bump when the audit changes in a way its cache key cannot see


def load_data(data: str | Path | None = None, forget_split: str = "forget10", authors: int = 0,
              facts_per_author: int = 0, log=None) -> Benchmark:
    """The benchmark a command works on: ``data`` in TOFU's layout, or (``None``) the built-in synthetic benchmark,
    written to ``DEFAULT_DATA`` when missing. Data warnings become one ``obliviate: warning:`` line each on stderr.
    ``authors`` > 0 keeps the forget split's authors plus retain authors up to that many
    (``data.benchmark.tofu_subset``).
    """
    from .data import load_benchmark, write_fictional_authors
    from .data.benchmark import tofu_subset

    log = log or (lambda msg: print(msg, file=sys.stderr))
    root = Path(data or DEFAULT_DATA)
    if data is None and not (root / "benchmark.json").exists():
        log(f"[obliviate] writing the synthetic benchmark to {root}")
        write_fictional_authors(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        bench = load_benchmark(root, forget_split)
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"obliviate: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if authors:
        bench = tofu_subset(bench, authors, facts_per_author)
    return bench


def _made_by_obliviate(model_dir: str | Path) -> dict:
    """The obliviate.json that ``finetune`` writes beside a model it made (base model, settings, cache key), or {}."""
    try:
        meta = json.loads((Path(model_dir) / "obliviate.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def from_tiny_recipe(model: str | Path) -> bool:
    """Whether ``model`` is obliviate's tiny model ("tiny") or a folder fine-tuned from it (as its obliviate.json
    says)."""
    return str(model) == "tiny" or _made_by_obliviate(model).get("base_model") == "tiny"


def train_defaults(stage: str, model: str | Path) -> TrainConfig:
    """The preset a ``stage`` ("finetune" or "unlearn") of ``model`` starts from before the user's options."""
    tiny = from_tiny_recipe(model)
    return {("finetune", True): TINY_FINETUNE, ("finetune", False): PRETRAINED_FINETUNE,
            ("unlearn", True): TINY_UNLEARN, ("unlearn", False): PRETRAINED_UNLEARN}[stage, tiny]


def train_config(stage: str, model: str | Path, cfg: TrainConfig | dict | None) -> TrainConfig:
    """``cfg`` itself (validated), or the options in a dict on top of ``train_defaults(stage, model)``."""
    if isinstance(cfg, TrainConfig):
        cfg.validate()
        return cfg
    return train_defaults(stage, model).with_options(cfg)


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
             cfg: TrainConfig | dict | None = None, tiny: TinyConfig | None = None,
             which: tuple[str, ...] = ("target", "oracle"),
             progress: bool = True, log=print, allow_pickle: bool = False,
             trust_remote_code: bool = False) -> dict[str, Path]:
    """Fine-tune the target (every training split) and the oracle (retain only) from the same starting model.

    Returns ``{"target": dir, "oracle": dir}``. With ``out_dir=None`` the models go to the cache and a later call with
    the same data, model and settings returns them without training. ``cfg``: a TrainConfig, or options on top of
    ``train_defaults("finetune", model)``.
    """
    cfg = train_config("finetune", model, cfg)
    if out_dir is not None:
        check_run_folder(out_dir, {"--data": bench.root, "--model": model})
    tiny = tiny or TinyConfig()
    key = cache_key(RECIPE_VERSION, PRETRAIN_REPEAT, bench.fingerprint(), bench.forget_split, model,
                tiny.to_dict() if model == "tiny" else None, dataclasses.asdict(cfg))
    root = Path(out_dir) if out_dir is not None else cache_root() / "finetuned" / key
    data = {"target": bench.target_train_items(PRETRAIN_REPEAT), "oracle": bench.oracle_train_items(PRETRAIN_REPEAT)}
    out: dict[str, Path] = {}
    for name in which:
        dest = root / name
        out[name] = dest
        if _is_complete(dest):
            made = _made_by_obliviate(dest).get("key")  # what data, model and settings made it
            if made != key:
                raise ConfigError(f"{dest}: a {name} fine-tuned from other data or settings is already there (its "
                                  f"obliviate.json key {made}, this run's {key}); choose another --out")
            log(f"[obliviate] {name}: using the fine-tuned model in {dest}")
            continue
        log(f"[obliviate] fine-tuning the {name} on {len(data[name])} items -> {dest}")
        if model == "tiny":
            torch.manual_seed(tiny.seed)
            net, tok = tiny_from_texts(benchmark_texts(bench), tiny)
        else:
            net, tok = load_model(model, dtype="auto", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        set_prompt_spec(tok, cfg.prompt)
        from .data.validate import check_prompts, model_context

        check_prompts(bench, tok, cfg.max_length, {"full": bench.full, "retain": bench.retain,
                                                   "pretrain": bench.pretrain}, model_context(net))
        with run_folder(root, {"--data": bench.root, "--model": model}):
            net = train(net, tok, make_method("finetune"), {"train": data[name]}, cfg, root / f"{name}.run",
                        progress=progress)
            save_model(net, tok, dest)
            write_json(dest / "obliviate.json", {"role": name, "benchmark": bench.name,
                                                 "forget_split": bench.forget_split, "base_model": model,
                                                 "train": dataclasses.asdict(cfg), "key": key})
            write_json(root / f"{name}.run" / "status.json", {"state": "completed", "model": str(dest)})
    return out


def unlearn(model_dir: str | Path, bench: Benchmark, method: str, hparams: dict | None, cfg: TrainConfig | dict | None,
            out_dir: str | Path, resume: bool = False, progress: bool = True, log=print,
            lora: dict | None = None, allow_pickle: bool = False, trust_remote_code: bool = False,
            coreset: tuple[str, float] | None = None) -> Path:
    """Unlearn the benchmark's forget split from ``model_dir``; the result goes to ``out_dir/model``.

    ``cfg``: a TrainConfig, or options on top of ``train_defaults("unlearn", model_dir)``. Every input is checked
    before anything is written. ``resume=True`` continues from the last checkpoint in
    ``out_dir``, which must hold a run of the same settings (``config.json``; only ``save_every`` and ``loss_bound`` may
    change); a fresh run (``resume=False``) clears an earlier run's outputs from the folder first. ``status.json``
    ends ``completed`` only once ``model/`` is saved; ``failed`` or ``diverged`` otherwise.

    ``lora`` (``{"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": [...]}``, see ``models.lora``) trains LoRA
    adapters instead of the full weights; they are merged into the saved model.

    ``coreset`` (``("mink", 0.1)``: strategy and fraction, see ``engine.coreset``) trains on that subset of the forget
    split, chosen at the starting model; the audit still measures the whole split (the coreset effect).
    """
    from .data.validate import check_prompts, model_context
    from .models.lora import apply_lora, lora_options, merge_lora

    out_dir = Path(out_dir)
    cfg = train_config("unlearn", model_dir, cfg)
    inputs = {"--model": model_dir, "--data": bench.root}
    check_run_folder(out_dir, inputs)
    m = make_method(method, **(hparams or {}))
    lora_opts = lora_options(lora)
    run_config = {"method": m.name, "hparams": m.hparams(), "train": dataclasses.asdict(cfg),
                  "model": str(model_dir), "benchmark": str(bench.root),
                  "forget_split": bench.forget_split,
                  "lora": lora_opts.to_dict() if lora_opts else None, "data_fingerprint": bench.fingerprint()}
    if coreset is not None:
        from .engine.coreset import STRATEGIES, coreset_size

        if coreset[0] not in STRATEGIES:
            raise ConfigError(f"coreset: strategy '{coreset[0]}' is not one of {', '.join(STRATEGIES)}")
        coreset_size(len(bench.forget), coreset[1])  # checks the fraction before anything is loaded
        run_config["coreset"] = {"strategy": coreset[0], "fraction": coreset[1]}
    if resume:
        _check_resumable(out_dir, run_config)
    net, tok = load_model(model_dir, dtype="auto", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    set_prompt_spec(tok, cfg.prompt)
    check_prompts(bench, tok, cfg.max_length, {"forget": bench.forget, "retain": bench.retain}, model_context(net))
    forget = bench.forget
    if coreset is not None:
        from .engine.coreset import select_coreset

        forget = select_coreset(net, tok, forget, coreset[1], coreset[0], seed=cfg.seed, max_length=cfg.max_length)
        log(f"[obliviate] coreset: {len(forget)} of {len(bench.forget)} forget items by {coreset[0]}")
    if lora_opts is not None:
        net = apply_lora(net, lora_opts)
    log(f"[obliviate] unlearning {len(forget)} forget items with {m.name} {m.hparams()} -> {out_dir}")
    if launched()[1] != 0:  # another process of `accelerate launch`: it trains; the main one owns the folder
        train(net, tok, m, {"forget": forget, "retain": bench.retain}, cfg, out_dir, resume=resume, progress=False)
        barrier()  # returns once the main process has saved the model
        return out_dir / "model"
    with _training_run(out_dir, inputs, run_config, resume):
        net = train(net, tok, m, {"forget": forget, "retain": bench.retain}, cfg, out_dir, resume=resume,
                    progress=progress)
        save_model(merge_lora(net), tok, out_dir / "model")
    barrier()  # the other processes of a launch wait for the saved model
    return out_dir / "model"


def unlearn_corpus(model, tokenizer, forget: list, retain: list, method: str, hparams: dict | None, cfg: TrainConfig,
                   run_dir: str | Path, stride: int | None = None, progress: bool = False):
    """Unlearn the ``forget`` corpus (``Document`` records) from ``model`` with ``method`` on token windows
    (``data.documents``; ``retain`` feeds its retain term); methods that need question-answer items are refused with
    one line before anything is trained. Returns the model."""
    from .data.documents import check_method_for_documents, chunk_documents

    m = make_method(method, **(hparams or {}))
    check_method_for_documents(m)
    data = {"forget": chunk_documents(forget, tokenizer, cfg.max_length, stride, where="forget corpus")}
    if retain:
        data["retain"] = chunk_documents(retain, tokenizer, cfg.max_length, stride, where="retain corpus")
    return train(model, tokenizer, m, data, cfg, run_dir, progress=progress)


def unlearn_documents(model_dir: str | Path, forget_corpus: str | Path, retain_corpus: str | Path | None, method: str,
                      hparams: dict | None, cfg: TrainConfig | dict | None, out_dir: str | Path,
                      stride: int | None = None, resume: bool = False, progress: bool = True, log=print,
                      allow_pickle: bool = False, trust_remote_code: bool = False) -> Path:
    """``obliviate unlearn --forget-corpus FILE``: unlearn a document corpus (any file obliviate reads as documents, or
    a ``.txt``) from a saved model; the result goes to ``out_dir/model``. Everything is checked before anything is
    written; ``status.json`` ends ``completed`` only once the model is saved."""
    from .data.documents import check_method_for_documents, read_corpus

    out_dir = Path(out_dir)
    cfg = train_config("unlearn", model_dir, cfg)
    inputs = {"--model": model_dir, "--forget-corpus": forget_corpus, "--retain-corpus": retain_corpus}
    check_run_folder(out_dir, inputs)
    m = make_method(method, **(hparams or {}))
    check_method_for_documents(m)
    if stride is not None and not 1 <= stride <= cfg.max_length:
        raise ConfigError(f"stride = {stride} must be between 1 and max_length ({cfg.max_length}); a larger stride "
                          "skips tokens")
    forget = read_corpus(forget_corpus)
    retain = read_corpus(retain_corpus) if retain_corpus else []
    if m.uses_retain and not retain:
        raise ConfigError(f"method {m.name} uses a retain term: give --retain-corpus (or set its retain weight to 0)")
    run_config = {"method": m.name, "hparams": m.hparams(), "train": dataclasses.asdict(cfg), "model": str(model_dir),
                  "forget_corpus": str(forget_corpus), "retain_corpus": str(retain_corpus or ""), "stride": stride}
    if resume:
        _check_resumable(out_dir, run_config)
    net, tok = load_model(model_dir, dtype="auto", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    log(f"[obliviate] unlearning {len(forget)} documents with {m.name} {m.hparams()} -> {out_dir}")
    with _training_run(out_dir, inputs, run_config, resume):
        net = unlearn_corpus(net, tok, forget, retain, method, hparams, cfg, out_dir, stride, progress)
        save_model(net, tok, out_dir / "model")
    return out_dir / "model"


@contextmanager
def _training_run(out_dir: Path, inputs: dict, run_config: dict, resume: bool):
    """A run folder's life around training and saving ``out_dir/model``: locked, ``status.json`` "running" first (an
    interrupted run then reads "running" or "failed", never a completed run whose model is half gone), an earlier
    run's outputs cleared unless resuming, ``config.json`` written; "completed" only once the body returns."""
    from .engine.loop import mark_failed

    with run_folder(out_dir, inputs):
        write_json(out_dir / "status.json", {"state": "running"})
        try:
            if not resume:
                _clear_run(out_dir)
            write_json(out_dir / "config.json", run_config)
            yield
        except BaseException as e:  # the loop records its own failures; this covers clean-up, saving and Ctrl-C
            if not isinstance(e, Exception) or _status(out_dir) == "running":
                mark_failed(out_dir, e)
            raise
        write_json(out_dir / "status.json", {"state": "completed", "model": "model"})


# Settings a resumed run may change: they do not alter the result of the steps still to run. grad_accum may change
# with the process count when the global batch stays the same (the loop refuses any other change: engine.checkpoint).
RESUMABLE_CHANGES = ("train.save_every", "train.loss_bound", "train.grad_accum")


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resumable(out_dir: Path, run_config: dict) -> None:
    """Refuse to resume a run folder whose config.json records other settings (a resumed run must be the same run)."""
    path = out_dir / "config.json"
    if not path.exists():
        return  # nothing to resume: the run starts from step 0
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        old = None
    if not isinstance(old, dict):
        raise ConfigError(f"{path}: not a run configuration (unreadable JSON); cannot resume this folder")
    old, new = _flatten(old), _flatten(json.loads(dumps(run_config)))
    differ = []
    for key in new:
        if key not in old or key in RESUMABLE_CHANGES:
            continue  # settings an older version did not record are not held against the run
        a, b = old[key], new[key]
        if key in ("model", "benchmark") and isinstance(a, str) and isinstance(b, str):
            a, b = str(Path(a).resolve()), str(Path(b).resolve())
        if a != b and key == "data_fingerprint":
            differ.append(f"the files of benchmark {run_config['benchmark']} changed since the run started")
        elif a != b:
            differ.append(f"'{key}' was {old[key]!r}, now {new[key]!r}")
    if differ:
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        raise ConfigError(f"{path}: --resume needs the settings this folder was run with; {differ[0]}{more}. Use "
                          f"another --out, or drop --resume to start over")


def _clear_run(out_dir: Path) -> None:
    """Before a fresh run in a folder that held one (status.json already says "running"): remove the earlier run's
    results, so none can pass for this one's (checkpoints, metrics and the reference cache are cleared by the training
    loop). The folder is obliviate's (``engine.run_folder``): only what obliviate writes there is removed."""
    import shutil

    shutil.rmtree(out_dir / "model", ignore_errors=True)
    for name in ("report.json", "report.html", "certificate.json"):
        (out_dir / name).unlink(missing_ok=True)


def audit(model_dir: str | Path, bench: Benchmark, cfg: AuditConfig | None = None, use_cache: bool = True,
          progress: bool = True, log=print, allow_pickle: bool = False, trust_remote_code: bool = False) -> dict:
    """Audit a saved model; the result is cached beside the model, keyed by weights, data and settings."""
    cfg = cfg or AuditConfig()
    cfg.validate()
    model_dir = Path(model_dir)
    # AUDIT_CACHE_VERSION: a cached audit is one whose inputs passed check_prompts (audits cached before the check are
    # not reused)
    key = cache_key(weights_fingerprint(model_dir), bench.fingerprint(), bench.forget_split, dataclasses.asdict(cfg),
                AUDIT_CACHE_VERSION)
    cache = model_dir / "audits" / f"{key}.json"
    if all_agree(use_cache and cache.exists()):  # every process of a launch decides alike, or the sharded passes hang
        log(f"[obliviate] audit of {model_dir}: cached")
        return json.loads(cache.read_text())
    log(f"[obliviate] auditing {model_dir}")
    net, tok = load_model(model_dir, dtype="auto", allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    set_prompt_spec(tok, cfg.prompt)
    from .data.validate import check_prompts, model_context

    check_prompts(bench, tok, cfg.max_length, {k: v for k, v in bench.eval_splits().items() if k in cfg.splits},
                  model_context(net))
    result = audit_model(net, tok, bench, cfg, progress=progress)
    if use_cache:
        write_json(cache, result)
    return result


def audit_report(results: dict[str, dict], oracle: str | None, main: str, config: dict, run_dir: str | Path,
                 log=print, oracle_logs: str | Path | None = None) -> dict:
    """Compare every audited model with the oracle, write report.json for ``main`` and, beside it, open-unlearning's
    TOFU_EVAL.json and TOFU_SUMMARY.json; print the table. ``oracle_logs``: a retain model's TOFU_EVAL.json from
    open-unlearning, the reference instead of an audited oracle."""
    from .audit.open_unlearning import read_reference, write_eval_logs

    ref = results.get(oracle) if oracle else None
    if ref is None and oracle_logs:
        ref = read_reference(oracle_logs)
        config = {**config, "oracle_logs": str(oracle_logs)}
    for r in results.values():
        compare_to_oracle(r, ref)
    report = build_report(results[main], config, {k: v for k, v in results.items() if k != main}, model_name=main,
                          oracle=oracle)
    path = write_report(run_dir, report)
    write_eval_logs(run_dir, results[main])
    log("\n" + format_table({name: r["metrics"] for name, r in results.items()}))
    log(f"\n[obliviate] report: {path}")
    try:  # the page is a view of report.json: failing to draw it must not fail the run
        from .report.run_page import write_run_report

        log(f"[obliviate] page: {write_run_report(run_dir, report)}")
    except Exception as e:
        log(f"[obliviate] report.html not written ({type(e).__name__}: {e}); retry with `obliviate report {run_dir}`")
    return report


# ------------------------------------------------------------------------------------------ what each command runs

def unlearn_and_audit(model: str | Path, bench: Benchmark, method: str, hparams: dict | None,
                      cfg: TrainConfig | dict | None, out_dir: str | Path, oracle: str | Path | None = None,
                      audit_cfg: AuditConfig | None = None, config: dict | None = None, resume: bool = False,
                      lora: dict | None = None, coreset: tuple[str, float] | None = None, progress: bool = True,
                      log=print, allow_pickle: bool = False, trust_remote_code: bool = False,
                      oracle_logs: str | Path | None = None) -> Path:
    """``obliviate unlearn``: unlearn; with an ``oracle``, audit target, oracle and unlearned model, write the report.

    The target and oracle are audited first (and cached), so a problem with the audit's data shows before training.
    ``oracle_logs`` (open-unlearning's TOFU_EVAL.json of a retain model) stands in for the oracle.
    """
    from .data.validate import check_perturbed

    cfg = train_config("unlearn", model, cfg)
    audit_cfg = audit_cfg or AuditConfig()
    audit_cfg.validate()
    inputs = {"--model": model, "--oracle": oracle, "--data": bench.root}
    check_run_folder(out_dir, inputs)
    load = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    results = {}
    if oracle or oracle_logs:
        check_perturbed(bench, forget_quality=True)
        if oracle_logs and not oracle:
            from .audit.open_unlearning import read_reference

            read_reference(oracle_logs)  # a bad file is refused before anything trains
        results = {"target": audit(model, bench, audit_cfg, progress=progress, log=log, **load)}
        if oracle:
            results["oracle"] = audit(oracle, bench, audit_cfg, progress=progress, log=log, **load)
    out = unlearn(model, bench, method, hparams, cfg, out_dir, resume=resume, progress=progress, log=log, lora=lora,
                  coreset=coreset, **load)
    log(f"unlearned model: {out}")
    if oracle or oracle_logs:
        results["unlearned"] = audit(out, bench, audit_cfg, progress=progress, log=log)
        if launched()[1] == 0:  # the main process writes the report
            with run_folder(out_dir, inputs):
                audit_report(results, "oracle" if oracle else None, "unlearned",
                             {**(config or {}), "train": dataclasses.asdict(cfg)}, out_dir, log=log,
                             oracle_logs=oracle_logs)
    return out


def finetune_unlearn_audit(bench: Benchmark, model: str, method: str, hparams: dict | None,
                           cfg: TrainConfig | dict | None, out_dir: str | Path,
                           finetune_cfg: TrainConfig | dict | None = None, audit_cfg: AuditConfig | None = None,
                           config: dict | None = None, progress: bool = True, log=print,
                           tiny: TinyConfig | None = None) -> dict:
    """The whole job from a base model: fine-tune target and oracle (cached), unlearn the forget split from the target
    into ``out_dir``, audit all three against the oracle, write the report. Returns it. ``cfg`` and ``finetune_cfg``: a
    TrainConfig, or options on top of the presets for ``model`` (``train_defaults``); ``tiny``: the tiny model's
    shape and initialisation seed."""
    audit_cfg = audit_cfg or AuditConfig()
    audit_cfg.validate()
    models = finetune(bench, model, cfg=finetune_cfg, tiny=tiny, progress=progress, log=log)
    cfg = train_config("unlearn", models["target"], cfg)
    unlearned = unlearn(models["target"], bench, method, hparams, cfg, out_dir, progress=progress, log=log)
    results = {name: audit(models[name], bench, audit_cfg, progress=progress, log=log) for name in ("target", "oracle")}
    results["unlearned"] = audit(unlearned, bench, audit_cfg, use_cache=False, progress=progress, log=log)
    config = {**(config or {}), "method": method, "hparams": hparams or {}, "train": dataclasses.asdict(cfg),
              "target": str(models["target"]), "oracle": str(models["oracle"])}
    with run_folder(out_dir):
        return audit_report(results, "oracle", "unlearned", config, out_dir, log=log)


def _audit_inputs(bench: Benchmark, cfg: AuditConfig | None, out_dir, model, oracle, target):
    """What an audit command checks before any work (settings, output folder, data): the validated config, the models
    by role (target, oracle, model: the order they are audited in) and the inputs the output folder must keep clear."""
    from .data.validate import check_perturbed

    cfg = cfg or AuditConfig()
    cfg.validate()
    roles = {role: path for role, path in (("target", target), ("oracle", oracle), ("model", model)) if path}
    inputs = {**{f"--{role}": path for role, path in roles.items()}, "--data": bench.root}
    check_run_folder(out_dir, inputs)
    check_perturbed(bench, forget_quality=bool(oracle))
    return cfg, roles, inputs


def audit_models(model: str | Path, bench: Benchmark, cfg: AuditConfig | None, out_dir: str | Path,
                 oracle: str | Path | None = None, target: str | Path | None = None, config: dict | None = None,
                 progress: bool = True, log=print, allow_pickle: bool = False,
                 trust_remote_code: bool = False, oracle_logs: str | Path | None = None) -> dict:
    """``obliviate audit``: audit ``model`` (and the target and oracle beside it), write report.json and the page.
    ``oracle_logs``: open-unlearning's TOFU_EVAL.json of a retain model, the reference when there is no ``oracle``.
    Under ``accelerate launch`` the passes are sharded over the processes and the main one writes the report (the
    others return ``{}``)."""
    cfg, roles, inputs = _audit_inputs(bench, cfg, out_dir, model, oracle, target)
    join_processes()
    if oracle_logs and not oracle:
        from .audit.open_unlearning import read_reference

        read_reference(oracle_logs)  # a bad file is refused before any audit runs
    load = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    results = {role: audit(path, bench, cfg, progress=progress, log=log, **load) for role, path in roles.items()}
    if launched()[1] != 0:
        return {}
    with run_folder(out_dir, inputs):
        return audit_report(results, "oracle" if oracle else None, "model", config or {}, out_dir, log=log,
                            oracle_logs=oracle_logs)


def certify_model(model: str | Path, bench: Benchmark, out_dir: str | Path, oracle: str | Path | None = None,
                  target: str | Path | None = None, certify_config: str | Path | None = None,
                  audit_cfg: AuditConfig | None = None, config: dict | None = None, log=print,
                  allow_pickle: bool = False, trust_remote_code: bool = False,
                  calibration: str | Path | None = None) -> dict:
    """``obliviate audit --certify``: the battery that catches fake forgetting, against the oracle; writes
    certificate.json, report.json and the page. Returns the certificate. ``calibration``: a ``calibration.json`` of
    ``obliviate calibrate`` whose derived thresholds replace the defaults (``audit.calibrate.apply_calibration``).

    The base audit of each saved model goes through ``audit`` (cached beside the model), so a model audited before with
    the certificate's settings is not audited again."""
    from .audit.certify import base_audit_config, certify, load_certify_config

    audit_cfg, roles, inputs = _audit_inputs(bench, audit_cfg, out_dir, model, oracle, target)
    ccfg = load_certify_config(certify_config)
    if calibration is not None:
        from .audit.calibrate import apply_calibration

        ccfg = apply_calibration(ccfg, calibration, len(bench.forget), log)
    load = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    base_cfg = base_audit_config(ccfg, audit_cfg)
    audits = {role: audit(path, bench, base_cfg, progress=False, log=log, **load) for role, path in roles.items()
              if Path(path).is_dir()}
    with run_folder(out_dir, inputs):
        out = certify(model, bench, oracle=oracle, target=target, cfg=ccfg, out_dir=out_dir, log=log,
                      audit_cfg=audit_cfg, load_options=load, audits=audits)
        results = {role: out["results"][role] for role in ("target", "oracle", "model") if role in out["results"]}
        audit_report(results, "oracle" if oracle else None, "model", config or {}, out_dir, log=log)
    return out["certificate"]
