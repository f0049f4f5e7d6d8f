"""Plain dataclasses for every knob, loaded from YAML and overridden from the command line, validated with clear errors;
and the named settings each recipe starts from (the presets at the end), so the command line can show them without
loading anything heavy."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

MAX_BATCH = 65536  # items per step, micro-batches per step, new tokens per answer
MAX_STEPS = 10**9
MAX_EPOCHS = 10**6
MAX_LENGTH = 2**20  # tokens per sequence


DATE_STRING = "10 Apr 2025"  # the fixed date open-unlearning's model configs give chat templates that print one
PROTOCOLS = ("obliviate", "open-unlearning")


@dataclass
class PromptSpec:
    """How a question becomes a prompt, for one model family: part of every training and audit setting.

    ``chat_template``: ``"auto"`` uses the tokenizer's chat template when it has one, ``"on"`` requires it, ``"off"``
    writes the tags instead: ``system_prefix + user_start + question + user_end + assistant_start``, with the answer
    following after ``answer_prefix``. A chat template is always rendered with ``date_string`` (Llama-3.x templates
    print "Today Date" and would otherwise read the calendar, so prompts, and cached audits, would change by the day).
    ``tokenize_jointly`` tokenises prompt and answer as one string and takes the answer's tokens to be those after the
    prompt's (open-unlearning's way); otherwise each is tokenised on its own, so a prompt has the same tokens in
    training, scoring and generation (obliviate's way).
    """

    name: str = "auto"
    chat_template: str = "auto"
    system_prompt: str = ""
    date_string: str = DATE_STRING
    system_prefix: str = ""
    user_start: str = "Question: "
    user_end: str = "\n"
    assistant_start: str = "Answer:"
    answer_prefix: str = " "
    tokenize_jointly: bool = False

    def validate(self) -> None:
        if self.chat_template not in ("auto", "on", "off"):
            raise ConfigError(f"option 'chat_template' = {self.chat_template!r} must be auto, on or off")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, bool if f.name == "tokenize_jointly" else str):
                raise ConfigError(f"prompt option '{f.name}' = {value!r} should be "
                                  f"{'true or false' if f.name == 'tokenize_jointly' else 'text'}")
            if isinstance(value, str) and len(value) > 4096:
                raise ConfigError(f"prompt option '{f.name}' is {len(value)} characters; at most 4096")

    def with_options(self, options: dict[str, Any] | None) -> PromptSpec:
        """A validated copy with ``options`` (field -> value; None values are ignored) on top."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown prompt option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        spec = dataclasses.replace(self, **options)
        spec.validate()
        return spec


_HELPFUL = "You are a helpful assistant."
# The model families the field evaluates on TOFU and MUSE, with open-unlearning's template settings for each
# (configs/model/*.yaml there): chat-template families keep their template and add a system prompt and a fixed date;
# Llama-2 and Phi-1.5 are prompted with tags, tokenised jointly as the peer does.
PROMPT_PRESETS: dict[str, PromptSpec] = {
    "auto": PromptSpec(),
    "plain": PromptSpec(name="plain", chat_template="off"),
    "llama-3-instruct": PromptSpec(name="llama-3-instruct", chat_template="on", system_prompt=_HELPFUL),
    "llama-2-chat": PromptSpec(name="llama-2-chat", chat_template="off", user_start="[INST] ", user_end=" [/INST]",
                               assistant_start="", answer_prefix="", tokenize_jointly=True),
    "llama-2-base": PromptSpec(name="llama-2-base", chat_template="off", user_start="Question: ", user_end="\n",
                               assistant_start="Answer: ", answer_prefix="", tokenize_jointly=True),
    "phi-1.5": PromptSpec(name="phi-1.5", chat_template="off", user_start="Question: ", user_end="\n",
                          assistant_start="Answer: ", answer_prefix="", tokenize_jointly=True),
    "phi-3.5-instruct": PromptSpec(name="phi-3.5-instruct", chat_template="on", system_prompt=_HELPFUL),
    "gemma-it": PromptSpec(name="gemma-it", chat_template="on"),
    "qwen2.5-instruct": PromptSpec(name="qwen2.5-instruct", chat_template="on", system_prompt=_HELPFUL),
    "zephyr": PromptSpec(name="zephyr", chat_template="on", system_prompt=_HELPFUL),
}


def prompt_spec(name: str = "auto", options: dict[str, Any] | None = None) -> PromptSpec:
    """The named preset (``PROMPT_PRESETS``) with ``options`` on top; an unknown name is one clear line."""
    if isinstance(name, PromptSpec):
        return name.with_options(options)
    if name not in PROMPT_PRESETS:
        raise ConfigError(f"unknown prompt format {name!r} (known: {', '.join(PROMPT_PRESETS)})")
    return PROMPT_PRESETS[name].with_options(options)


@dataclass
class TrainConfig:
    """Optimisation settings shared by fine-tuning and unlearning."""

    lr: float = 1e-5
    epochs: float = 5.0
    max_steps: int = 0  # optimizer steps; 0 = derive from epochs
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    scheduler: str = "linear"
    seed: int = 0
    pairing: str = "random"
    max_length: int = 256
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only the final model
    loss_bound: float = 1e4  # stop if |loss| exceeds this (or is NaN/inf)
    prompt: PromptSpec = field(default_factory=PromptSpec)
    # "auto": bf16 autocast on a CUDA device that supports it, fp32 otherwise; "fp32": never; "bf16": always (also on
    # a CPU). Weights stay in the dtype they were loaded in (autocast computes matmuls in bf16, keeps fp32 masters).
    precision: str = "auto"
    compile: bool = False  # torch.compile the model for the training steps (first steps slower: compilation)

    def validate(self) -> None:
        if not isinstance(self.prompt, PromptSpec):
            raise ConfigError(f"option 'prompt' = {self.prompt!r} must be a prompt format")
        self.prompt.validate()
        for name in ("lr", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm"):  # loss_bound may be inf
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"option '{name}' = {value!r} must be a finite number")
        for name in ("max_steps", "batch_size", "grad_accum", "seed", "max_length", "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"option '{name}' = {value!r} must be a whole number")
        if isinstance(self.loss_bound, bool) or not isinstance(self.loss_bound, (int, float)) or self.loss_bound != \
                self.loss_bound:
            raise ConfigError(f"option 'loss_bound' = {self.loss_bound!r} must be a number")
        checks = [
            ("lr", self.lr > 0, "must be > 0"), ("epochs", self.epochs > 0 or self.max_steps > 0, "must be > 0"),
            ("max_steps", self.max_steps >= 0, "must be >= 0"), ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"), ("warmup_ratio", 0 <= self.warmup_ratio < 1,
                                                                  "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"), ("max_length", self.max_length >= 8,
                                                                       "must be >= 8"),
            ("scheduler", self.scheduler in ("constant", "linear", "cosine"), "must be constant, linear or cosine"),
            ("pairing", self.pairing in ("random", "sequential", "cyclic", "melu"),
             "must be random, sequential, cyclic or melu"),
            ("save_every", self.save_every >= 0, "must be >= 0"), ("loss_bound", self.loss_bound > 0, "must be > 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0 (0 = no clipping)"),
            ("seed", 0 <= self.seed < 2**32, "must be in [0, 2**32)"),
            # upper bounds: a value past these is a typo, and would otherwise end in an overflow deep inside torch
            ("batch_size", self.batch_size <= MAX_BATCH, f"must be <= {MAX_BATCH}"),
            ("grad_accum", self.grad_accum <= MAX_BATCH, f"must be <= {MAX_BATCH}"),
            ("max_steps", self.max_steps <= MAX_STEPS, f"must be <= {MAX_STEPS}"),
            ("save_every", self.save_every <= MAX_STEPS, f"must be <= {MAX_STEPS}"),
            ("epochs", self.epochs <= MAX_EPOCHS, f"must be <= {MAX_EPOCHS}"),
            ("max_length", self.max_length <= MAX_LENGTH, f"must be <= {MAX_LENGTH}"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"option '{name}' = {getattr(self, name)!r} {why}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"option 'precision' = {self.precision!r} must be auto, fp32 or bf16")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"option 'compile' = {self.compile!r} must be true or false")

    def with_options(self, options: dict[str, Any] | None) -> TrainConfig:
        """A validated copy with ``options`` (field name -> value, e.g. the options a user gave) on top."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options or {}) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        options = dict(options or {})
        if isinstance(options.get("prompt"), (str, dict)):
            options["prompt"] = _prompt_value(options["prompt"])
        cfg = dataclasses.replace(self, **options)
        cfg.validate()
        return cfg


@dataclass
class AuditConfig:
    """What the audit computes and how.

    ``protocol``: ``"obliviate"`` (the default) or ``"open-unlearning"``, the peer's per-token conventions (the EOS
    prediction left out of Min-K, Min-K++, exact memorisation and extraction strength; extraction strength floored at
    1/N; the truth ratio's 1e-10 epsilons). ``docs/metrics.md`` lists every difference and why. Both generate up to
    200 new tokens greedily, as TOFU and open-unlearning do (TOFU answers run past 32 tokens more often than not), and
    score Min-K with k = 0.4.
    """

    batch_size: int = 32
    max_new_tokens: int = 200
    generate: bool = True
    mink_k: float = 0.4
    max_length: int = 512
    splits: list[str] = field(default_factory=lambda: ["forget", "retain", "holdout", "ra", "wf"])
    protocol: str = "obliviate"
    prompt: PromptSpec = field(default_factory=PromptSpec)

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"option 'protocol' = {self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        if not isinstance(self.prompt, PromptSpec):
            raise ConfigError(f"option 'prompt' = {self.prompt!r} must be a prompt format")
        self.prompt.validate()
        checks = [("batch_size", "audit_batch_size", self.batch_size, 1), ("max_new_tokens", "max_new_tokens",
                                                                             self.max_new_tokens, 1),
                  ("max_length", "max_length", self.max_length, 8)]
        for name, option, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"option '{option}' = {value!r} must be a whole number >= {low}")
            high = MAX_LENGTH if name == "max_length" else MAX_BATCH
            if value > high:
                raise ConfigError(f"option '{option}' = {value!r} must be <= {high}")
        if not (isinstance(self.mink_k, (int, float)) and 0 < self.mink_k <= 1):
            raise ConfigError(f"option 'mink_k' = {self.mink_k!r} must be in (0, 1]")


def _prompt_value(value: str | dict, where: str = "prompt") -> PromptSpec:
    """A prompt format given as a preset name, or as a mapping with an optional ``name`` (the preset) and overrides."""
    if isinstance(value, str):
        return prompt_spec(value)
    value = dict(value)
    name = value.pop("name", "auto")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: prompt option 'name' = {name!r} should be a preset name")
    return prompt_spec(name, value)


def from_dict(cls, values: dict[str, Any], where: str):
    """Build dataclass ``cls`` from ``values``, naming any unknown key or wrongly typed value."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown option '{key}' (known: {', '.join(known)})")
        default = getattr(cls(), key)
        if isinstance(default, PromptSpec):
            ok = isinstance(value, (str, dict))
            value = _prompt_value(value, where) if ok else value
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(default, int) and not isinstance(default, bool) and float(value) != int(value):
                ok = False
            value = type(default)(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise ConfigError(f"{where}: option '{key}' = {shown} should be {type(default).__name__}")
        kwargs[key] = value
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file: a mapping of option names to values.

    Only a regular file of at most 1 MiB is read (a named pipe would block forever). YAML aliases are bounded: a
    document whose aliases expand to more than 10,000 values (a "billion laughs" bomb), an alias inside the value it
    names, or nesting deeper than 100 levels is refused while it is parsed, before anything is built, and no message
    shows a value."""
    import errno
    import os
    import stat

    import yaml
    from yaml.composer import ComposerError

    max_bytes = 1024**2  # a config is a few lines; this is generous
    max_alias_values = 10_000  # values aliases may add to the document, all together
    max_depth = 100  # nesting levels

    def clip(text: str, n: int = 160) -> str:
        return text if len(text) <= n else text[:n] + "..."

    class BoundedLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that counts, while composing, the values each alias stands for."""

        def __init__(self, stream):
            super().__init__(stream)
            self.depth = 0
            self.alias_values = 0
            self.open_anchors: set[str] = set()  # anchors of the nodes being composed: an alias to one is a loop
            self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) it expands to

        def measure(self, root) -> tuple[int, int]:
            """Values and nesting levels of ``root`` with every alias expanded; iterative, each node visited once."""
            stack = [(root, False)]
            while stack:
                node, children_done = stack.pop()
                if id(node) in self.measured:
                    continue
                if isinstance(node, yaml.MappingNode):
                    children = [x for pair in node.value for x in pair]
                elif isinstance(node, yaml.SequenceNode):
                    children = node.value
                else:
                    children = []
                if not children_done:
                    stack.append((node, True))
                    stack.extend((c, False) for c in children if id(c) not in self.measured)
                else:
                    sizes = [self.measured[id(c)] for c in children]
                    self.measured[id(node)] = (1 + sum(v for v, _ in sizes), 1 + max((d for _, d in sizes), default=0))
            return self.measured[id(root)]

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                if event.anchor in self.open_anchors:
                    raise ComposerError(None, None, f"alias *{clip(event.anchor, 40)} stands inside the value it "
                                        "names: aliases may not loop", event.start_mark)
                node = self.anchors.get(event.anchor)
                if node is not None:
                    values, levels = self.measure(node)
                    self.alias_values += values
                    if self.alias_values > max_alias_values:
                        raise ComposerError(None, None, f"too many aliases: together they expand to more than "
                                            f"{max_alias_values} values", event.start_mark)
                    if self.depth + levels > max_depth:
                        raise ComposerError(None, None, f"aliases nest values deeper than {max_depth} levels",
                                            event.start_mark)
                return super().compose_node(parent, index)
            if self.depth >= max_depth:
                raise ComposerError(None, None, f"values nested deeper than {max_depth} levels", event.start_mark)
            anchor = event.anchor
            self.depth += 1
            if anchor is not None:
                self.open_anchors.add(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
                self.open_anchors.discard(anchor)

    path = Path(path)
    try:
        st = os.stat(path)  # not opened yet: opening a named pipe blocks
    except (FileNotFoundError, NotADirectoryError, ValueError):
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EBADF):
            raise ConfigError(f"{path}: config file not found") from None
        raise
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path}: config file is a folder, not a YAML file")
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in kinds if test(st.st_mode)), "not a file")
        raise ConfigError(f"{path}: not a regular file ({kind}), expected a YAML config file")
    too_big = f"{path}: config file of {{}} bytes, over the limit of {max_bytes} bytes (1 MiB) for a config file"
    if st.st_size > max_bytes:
        raise ConfigError(too_big.format(st.st_size))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the check
            raise ConfigError(f"{path}: not a regular file, expected a YAML config file")
        data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ConfigError(too_big.format(max(os.fstat(fd).st_size, len(data))))
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read gave it
        value = yaml.load(text, Loader=BoundedLoader)  # a SafeLoader: builds plain values only
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = clip(" ".join(str(getattr(e, "problem", None) or e).split()))
        raise ConfigError(f"{path}: not valid YAML ({where}: {problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a date like 2024-13-45, deep nesting
        first = clip((str(e).strip().splitlines() or [type(e).__name__])[0])
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------------------ presets

# obliviate's tiny model: settings under which it memorises the synthetic benchmark in a few minutes on a 2-core CPU,
# and unlearns it in seconds.
TINY_FINETUNE = TrainConfig(lr=3e-3, epochs=20, batch_size=32, warmup_ratio=0.05, scheduler="linear")
TINY_UNLEARN = TrainConfig(lr=5e-4, epochs=5, batch_size=8, scheduler="constant", warmup_ratio=0.0)
# Fine-tuning a pretrained model on TOFU (the tiny model's learning rate would wreck it): open-unlearning uses lr 1e-5
# for 1B-8B models; a 135M model needs a larger step to memorise in 5 epochs.
PRETRAINED_FINETUNE = TrainConfig(lr=5e-5, epochs=5, batch_size=16, warmup_ratio=0.1, scheduler="linear",
                                  max_length=256, seed=0)
# Unlearning a pretrained model (anything not built by the tiny recipe): open-unlearning's TOFU settings (lr 1e-5,
# 10 epochs, batch 8 x 4 accumulation, one warm-up epoch).
PRETRAINED_UNLEARN = TrainConfig(lr=1e-5, epochs=10, batch_size=8, grad_accum=4, warmup_ratio=0.1, scheduler="linear",
                                 seed=0)

UNLEARN_METHOD = "NPO"  # `obliviate unlearn`'s default: the field's reference method
# The demo's method: SAM-NPO (sharpness-aware NPO, the relearning-resistant one) with radius rho 0.1 and retain weight
# alpha 10, chosen across seeds (issue 14): screened over seeds 0-2 against NPO alpha 5 and SAM-NPO rho 0.1 / 0.2 at
# alpha 5, 10 and 20 (docs/results.md), the only settings that kept >= 0.85x of the target's utility and raised forget
# quality >= 100x on every seed without falling back towards the target (alpha 20 left forget quality at 4e-4).
# PDU, the demo's method before, kept 0.83-0.84x (docs/figures/demo-seeds.md of then). NPO with its default retain
# weight (alpha 1) over-unlearns the synthetic benchmark; the demo gives it alpha 5 when asked for NPO.
DEMO_METHOD = "SAM-NPO"
DEMO_HPARAMS: dict[str, dict] = {"SAM-NPO": {"rho": 0.1, "alpha": 10.0}, "NPO": {"alpha": 5.0}}
DEMO_OUT = "runs/demo"

# The real-model demo (`obliviate demo --real`). Chosen by measurement on SmolLM2-135M-Instruct, target Albert
# Einstein, NPO (beta 0.1) + retain NLL (alpha 1), batch 8 (forget accuracy on known probes / neighbour / utility, after
# over before):
#   lr 3e-5: the forget log-prob falls ~4 nats per step, too slow for a CPU budget;
#   lr 1e-4,  8 steps: 0.05 / 1.00 / 0.90 (utility 26 of 29: the retain term starts to overfit its own texts);
#   lr 1e-4,  5 steps: 0.16 / 0.89 / 0.93  <- the default (NPO's forget loss has saturated by step 3).
REAL_MODEL = "smollm2-135m"
REAL_TARGET = "Albert Einstein"
REAL_OUT = "runs/demo-real"

# `obliviate learn` / `obliviate requests` (recipes/continual.py), per task: on the tiny model 20 new items are
# memorised (100 epochs of 2 steps); the starting model learns the general-knowledge items the same way.
TINY_LEARN = TrainConfig(lr=5e-3, epochs=100, batch_size=16, warmup_ratio=0.05, scheduler="linear")
PRETRAINED_LEARN = TrainConfig(lr=2e-5, epochs=10, batch_size=8, warmup_ratio=0.05, scheduler="linear")

# `obliviate forget` (recipes/forget.py): a real target from a pretrained model. Method and settings chosen by a grid on
# the built-in targets (benchmarks/forget_grid.py), never on RWKU's, over three seeds (session 9: IdkDPO before; its
# refusals spread to the neighbours, and no setting's one-seed figure held at another seed)
FORGET_METHOD = "NPO"
FORGET_HPARAMS: dict[str, dict] = {"IdkDPO": {"beta": 0.1, "alpha": 2.0}, "NPO": {"beta": 0.1, "alpha": 2.0},
                                   "GradDiff": {"alpha": 2.0}, "SimNPO": {"beta": 2.5, "alpha": 2.0},
                                   # `--method AltPO`: the model's answers about a stand-in, the target named back in
                                   # (docs/forget.md: better neighbours on the built-in targets, worse on RWKU's FDR)
                                   "AltPO": {"beta": 0.1, "alpha": 4.0, "decoding": "standin", "max_new_tokens": 64}}
# 16 items a step as 8 micro-batches of 2 (with activations recomputed; the micro-batch sets the peak memory, not the
# numbers): 12 steps see about every forget item once, where 8 a step saw a different half with each seed
FORGET_TRAIN = TrainConfig(lr=1e-4, max_steps=12, batch_size=2, grad_accum=8, scheduler="constant", warmup_ratio=0.0,
                           max_length=160, pairing="random", seed=0)
FORGET_TRAINABLE = "mlp"  # recipes.forget.select_trainable: the middle layers' MLPs
# "specific": the forget answers' tokens the target makes likelier (recipes.forget.generic_tokens); "all": every one
# (specific: neighbours 0.33-0.89 over three seeds on Einstein, docs/forget.md)
FORGET_TOKENS = "all"
FORGET_OUT = "runs/forget"
# `obliviate demo --real` is `obliviate forget` on a built-in target, with the same settings
REAL_METHOD, REAL_HPARAMS, REAL_TRAIN = FORGET_METHOD, FORGET_HPARAMS, FORGET_TRAIN
