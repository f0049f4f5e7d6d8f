"""Checks that run before any work is done, so that a bad input stops a run with one clear line and nothing written.

The loaders (``formats``, ``benchmark``) already refuse a file that cannot be read or a record that does not validate;
these checks cover what needs more than one record or more than the data: a prompt that does not fit the model, perturbed
answers a metric needs, an output folder that cannot be written, a ``data:`` path in a config
file. Each raises an ``ObliviateError`` naming the file, the record and the field (docs/errors.md lists them all).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ConfigError, DataError


def model_context(model) -> int | None:
    """The longest sequence the model's config says it handles (``max_position_embeddings`` or an alias), if any."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompts(bench, tokenizer, max_length: int, splits: dict, context: int | None = None) -> None:
    """Every question (and paraphrased question) of ``splits`` (name -> items, e.g. ``{"forget": bench.forget}`` or
    ``bench.eval_splits()``) must leave room for at least one answer token within ``max_length`` and the model's
    context; the first that does not is reported by file, record and field."""
    from .collate import PromptFormat

    fmt = PromptFormat(tokenizer, max_length)  # refuses a tokenizer without EOS
    limit, why = max_length, f"max_length {max_length}"
    if context is not None and context < max_length:
        limit, why = context, f"the model's context of {context} positions"
    for split, items in splits.items():
        for key in ("question", "paraphrased_question"):
            rows = [(i, getattr(it, key)) for i, it in enumerate(items or []) if getattr(it, key)]
            if not rows:
                continue
            texts = [fmt.prompt(q) for _, q in rows]
            ids = tokenizer(texts, add_special_tokens=not fmt.chat)["input_ids"]
            for (i, _), tokens in zip(rows, ids):
                if len(tokens) >= limit:
                    where = bench.where(items[i], f"{split} item {i}")
                    raise DataError(f"{where}: field '{key}' makes a prompt of {len(tokens)} tokens, too long for "
                                    f"{why}: the prompt and at least one answer token must fit")


def check_perturbed(bench, forget_quality: bool, splits=None) -> None:
    """The truth ratio needs perturbed answers for every item of a split or for none; forget quality (an oracle was
    given) needs them for every forget item."""
    for split, items in bench.eval_splits().items():
        if splits is not None and split not in splits:
            continue
        has = [bool(it.perturbed_answers) for it in items]
        if any(has) and not all(has):
            i = has.index(False)
            raise DataError(f"{bench.where(items[i], f'{split} item {i}')}: field 'perturbed_answer' is missing, while "
                            f"other records of the split have it; the truth ratio needs it for every item")
        if split == "forget" and forget_quality and not any(has):
            raise DataError(f"{bench.where(items[0], 'forget item 0')}: field 'perturbed_answer' is missing; forget "
                            f"quality (--oracle) compares truth ratios, which need perturbed answers for every forget "
                            f"item (use {bench.forget_split}_perturbed.json)")


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """The folder a run writes to must be a folder (or creatable as one) that this process can write in.

    Nothing is left behind: when the folder does not exist yet, the probe file goes in its nearest existing parent.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: {option} names a file; the output must be a folder")
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise ConfigError(f"{path}: {option} cannot be created, {probe_dir} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".obliviate-write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{path}: {option} is not writable ({probe_dir}: {e.strerror or type(e).__name__})") from None


def resolve_config_path(config_file: str | Path, key: str, value: str) -> str:
    """A relative path in a config file is relative to the file's folder and may not leave it; absolute paths stand."""
    try:
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        base = Path(config_file).resolve().parent
        full = (base / p).resolve()
    except (ValueError, OSError, RuntimeError) as e:  # a NUL byte, an unknown ~user, a symlink loop
        raise ConfigError(f"{config_file}: option '{key}' = {value!r} is not a usable path ({e})") from None
    if full != base and base not in full.parents:
        raise ConfigError(f"{config_file}: option '{key}' = {value!r} leads outside the config file's folder ({base}); "
                          f"give an absolute path or a path inside that folder")
    return str(full)
