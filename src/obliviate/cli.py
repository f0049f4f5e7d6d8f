"""obliviate's command line: ``data synth``, ``finetune``, ``unlearn``, ``audit``, ``demo``, ``methods``, ``report``.

Every command takes ``--config FILE.yaml`` (keys are the long option names with dashes or underscores); options given on
the command line override the file. Errors a user can cause print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .errors import ConfigError, ObliviateError

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
    g.add_argument("--pairing", default="random", choices=["random", "sequential", "cyclic"],
                   help="how retain items are paired with forget items (default random, as TOFU)")
    g.add_argument("--max-length", type=int, default=256, help="longest tokenised prompt + answer")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (for --resume)")
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


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit")
    g.add_argument("--max-new-tokens", type=int, default=64, help="greedy generation length for ROUGE (default 64)")
    g.add_argument("--no-generate", action="store_true", help="skip generations (no ROUGE; much faster)")
    g.add_argument("--audit-batch-size", type=int, default=32)


def _audit_config(args):
    from .config import AuditConfig

    return AuditConfig(batch_size=args.audit_batch_size, max_new_tokens=args.max_new_tokens, generate=not args.no_generate,
                       max_length=getattr(args, "max_length", 256))


def _benchmark(args):
    from .data import load_benchmark, write_fictional_authors

    root = Path(args.data or DEFAULT_DATA)
    if args.data is None and not (root / "benchmark.json").exists():
        print(f"[obliviate] writing the synthetic benchmark to {root}", file=sys.stderr)
        write_fictional_authors(root)
    return load_benchmark(root, args.forget_split)


def _hparams(args) -> dict:
    hp = dict(getattr(args, "config_hparams", None) or {})
    hp.update(dict(args.hp or []))
    return hp


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import DEMO_FINETUNE, DEMO_METHOD, DEMO_UNLEARN

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
    ft.add_argument("--model", default="tiny", help="'tiny' (a small Llama built here), a model folder, a .gguf file or "
                                                    "a hub id")
    ft.add_argument("--out", default=None, help="folder for target/ and oracle/ (default: the cache)")
    ft.add_argument("--only", choices=["target", "oracle"], help="train just one of the two")
    _add_train_options(ft, DEMO_FINETUNE)

    un = command("unlearn", "unlearn the forget split from a model",
                 "Run an unlearning method on a model: forget the forget split, keep the retain split.")
    _add_data_options(un)
    un.add_argument("--model", required=True, help="model folder to unlearn from (e.g. a fine-tuned target)")
    un.add_argument("--method", default=DEMO_METHOD, help=f"method name (see `obliviate methods`; default {DEMO_METHOD})")
    un.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE", help="method hyperparameter, repeatable")
    un.add_argument("--out", default="runs/unlearn", help="run folder (default runs/unlearn)")
    un.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    un.add_argument("--oracle", help="oracle model folder: audit after unlearning and compare")
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
    _add_audit_options(au)

    demo = command("demo", "the whole job on the built-in benchmark",
                   "Synthetic benchmark -> tiny target and oracle (trained once, then cached) -> unlearning (NPO on "
                   "forget10 by default) -> audit of all three -> report.json and a table.")
    demo.add_argument("--method", default=DEMO_METHOD, help=f"unlearning method (default {DEMO_METHOD})")
    demo.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE", help="method hyperparameter, repeatable")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument("--forget-split", default="forget10")
    _add_train_options(demo, DEMO_UNLEARN)
    _add_audit_options(demo)

    command("methods", "list the unlearning methods", "List every registered method with its hyperparameters.")
    rep = command("report", "rebuild a run's report.html",
                  "Redraw RUN_DIR/report.html (plots, tables, per-item drill-down, certificate verdicts) from the "
                  "report.json, metrics.jsonl and certificate.json already in RUN_DIR; nothing is rerun.")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding report.json")
    return parser


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse once to find --config, load it as defaults, parse again so explicit options override it."""
    from .config import load_yaml

    args = parser.parse_args(argv)
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
            hparams = value
            continue
        if dest not in dests or dest in ("config", "help"):
            raise ConfigError(f"{args.config}: unknown option '{key}' for `obliviate {args.command}`")
        defaults[dest] = value
    sub.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.config_hparams = hparams
    return args


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
    paths = finetune(bench, args.model, args.out, _train_config(args, None), which=which, progress=not args.quiet)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_unlearn(args) -> int:
    from .pipeline import audit, audit_report, unlearn

    bench = _benchmark(args)
    cfg = _train_config(args, None)
    out = unlearn(args.model, bench, args.method, _hparams(args), cfg, args.out, resume=args.resume,
                  progress=not args.quiet)
    print(f"unlearned model: {out}")
    if args.oracle:
        acfg = _audit_config(args)
        results = {"target": audit(args.model, bench, acfg, progress=not args.quiet),
                   "oracle": audit(args.oracle, bench, acfg, progress=not args.quiet),
                   "unlearned": audit(out, bench, acfg, progress=not args.quiet)}
        audit_report(results, "oracle", "unlearned", {"command": "unlearn", **vars_for_report(args)}, args.out)
    return 0


def vars_for_report(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func",)}


def cmd_audit(args) -> int:
    from .pipeline import audit, audit_report

    bench = _benchmark(args)
    acfg = _audit_config(args)
    results = {}
    if args.target:
        results["target"] = audit(args.target, bench, acfg, progress=not args.quiet)
    if args.oracle:
        results["oracle"] = audit(args.oracle, bench, acfg, progress=not args.quiet)
    results["model"] = audit(args.model, bench, acfg, progress=not args.quiet)
    audit_report(results, "oracle" if args.oracle else None, "model", {"command": "audit", **vars_for_report(args)},
                 args.out)
    return 0


def cmd_demo(args) -> int:
    from .pipeline import DEMO_HPARAMS, audit, audit_report, finetune, unlearn

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

    for cls in sorted(unlearning_methods().values(), key=lambda c: c.name.lower()):
        doc = (sys.modules[cls.__module__].__doc__ or cls.name).strip().splitlines()[0]
        hp = ", ".join(f"{k}={v}" for k, v in hyperparameters(cls).items()) or "no hyperparameters"
        print(f"{cls.name:<12} {doc}\n{'':<12} {hp}")
    return 0


def cmd_report(args) -> int:
    from .report.html import write_run_report

    print(write_run_report(args.run_dir))
    return 0


COMMANDS = {"finetune": cmd_finetune, "unlearn": cmd_unlearn, "audit": cmd_audit, "demo": cmd_demo,
            "methods": cmd_methods, "report": cmd_report}


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
        print(f"obliviate: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("obliviate: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
