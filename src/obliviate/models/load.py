"""Load any Hugging Face causal LM: a local folder, a hub id (when online), or a GGUF file.

``load_model`` returns ``(model, tokenizer)`` with a pad token set, the dtype chosen for the device (bf16 on a GPU that
supports it, fp32 on a CPU, where bf16 is slower), weights from safetensors (pickle checkpoints only with
``allow_pickle=True``), and remote code off unless asked for.

What it refuses, each with one ``ModelError`` line and never a traceback:

- anything it would unpickle without ``allow_pickle``: every weight file the folder would load is checked before
  transformers runs, the shards a ``*.index.json`` names and the file config.json's ``transformers_weights`` names
  included, and ``torch.load`` refuses while transformers loads (the guard for hub ids); an index or
  ``transformers_weights`` naming a file outside the folder (``../x``, ``/abs``) is refused even with ``allow_pickle``;
- weights that do not cover the architecture: any parameter transformers would initialise at random (missing from the
  weights, or of another shape) or tensors of layers config.json does not declare. A tied output head is not missing.
  Other tensors the architecture has no place for (a value head, another task's head) are ignored with one
  ``obliviate: warning:`` line: every parameter still came from the weights;
- a tokenizer whose token ids reach past the embedding matrix (a smaller tokenizer is normal: embeddings are padded).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from ..errors import ModelError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                "adapter_model.safetensors")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TRUST_HINT = "convert to safetensors or pass --allow-pickle if you trust the file"


def _quiet_transformers() -> None:
    """transformers' own per-file progress bars are noise next to obliviate's; its warnings stay."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ModelError(f"dtype '{dtype}' is not one of {', '.join(table)}")
    return table[dtype]


def decoder_blocks(model) -> tuple[str, torch.nn.ModuleList]:
    """(qualified name, module list) of the model's decoder blocks, found as the ModuleList of num_hidden_layers."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and (n is None or len(m) == n):
            return name, m
    raise ModelError("cannot find the model's decoder blocks (no ModuleList of config.num_hidden_layers modules)")


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give a tokenizer without a pad token one (EOS doubles as pad; labels are built explicitly so EOS stays a target)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError("tokenizer: has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def _inside(name) -> bool:
    """Whether ``name`` (from an index or config.json) is a plain relative path that stays inside the model folder."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return not (posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts
                or ".." in windows.parts)


def _index_shards(path: Path, index: str) -> list[str]:
    """The shard files ``index`` (a ``*.index.json`` in ``path``) names, each checked to be a path inside ``path`` (a
    missing shard is left to transformers: a folder downloaded without the ``.bin`` files keeps their index)."""
    try:
        data = json.loads((path / index).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{path}: {index} is not a readable shard index ({' '.join(str(e).split())[:200]})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelError(f"{path}: {index} is not a readable shard index (it needs a 'weight_map' object from tensor "
                         "names to shard file names)")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not _inside(shard):
            raise ModelError(f"{path}: {index} names the shard '{shard}', which is outside the model folder; an index "
                             "may name only files in its own folder")
    return shards


def _refuse_pickles(path: Path, allow_pickle: bool) -> None:
    """Refuse, before transformers runs, every weight file it would unpickle from the folder ``path``: pickle
    checkpoints (``.bin``, any name not ending in ``.safetensors``, which transformers hands to ``torch.load``) among
    the weights it would load, the shards an index names, the file config.json's ``transformers_weights`` names and a
    PEFT adapter's weights. Index shards and ``transformers_weights`` outside the folder are refused even with
    ``allow_pickle``."""
    for index in INDEX_FILES:  # both kinds are checked for escaping names, even the one this load would not read
        if (path / index).is_file():
            _index_shards(path, index)
    try:
        explicit = json.loads((path / "config.json").read_text(encoding="utf-8")).get("transformers_weights")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        explicit = None  # transformers reports a config.json it cannot read
    if explicit is not None and not _inside(explicit):
        raise ModelError(f"{path}: config.json's 'transformers_weights' names '{explicit}', which is outside the model "
                         "folder")
    if allow_pickle:
        return
    loads: list[tuple[str, str]] = []  # (file, what names it)
    if isinstance(explicit, str):  # transformers loads this file whatever use_safetensors says
        if explicit.endswith(".index.json") and (path / explicit).is_file():
            loads += [(s, f"{explicit} (named by config.json's 'transformers_weights')") for s in
                      _index_shards(path, explicit)]
        else:
            loads.append((explicit, "config.json's 'transformers_weights'"))
    if (path / "model.safetensors.index.json").is_file():
        loads += [(s, "model.safetensors.index.json") for s in _index_shards(path, "model.safetensors.index.json")]
    if (path / "adapter_config.json").is_file() and not (path / "adapter_model.safetensors").is_file() \
            and (path / "adapter_model.bin").is_file():
        loads.append(("adapter_model.bin", "adapter_config.json"))
    for name, by in loads:
        if not name.endswith(".safetensors"):
            raise ModelError(f"{path}: {name} (named by {by}) is a pickle checkpoint; {TRUST_HINT}")


@contextmanager
def _no_unpickling(spec: str):
    """While transformers loads ``spec``, ``torch.load`` (the one way transformers and PEFT unpickle weights) refuses:
    a second line of defence behind ``_refuse_pickles``, and the only one for a hub id, whose files are not on disk
    before the load."""
    real = torch.load

    def refuse(f, *args, **kwargs):
        name = Path(str(getattr(f, "name", f))).name
        raise ModelError(f"{spec}: {name} is a pickle checkpoint; {TRUST_HINT}")

    torch.load = refuse
    try:
        yield
    finally:
        torch.load = real


class _NoLoadReport(logging.Filter):
    """Drops transformers' load report (its table of missing, unexpected and mismatched tensors): obliviate checks the
    same loading info itself and refuses, or warns, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not ("LOAD REPORT" in msg or "This checkpoint seem corrupted" in msg)


@contextmanager
def _without_load_report():
    logger, flt = logging.getLogger("transformers.modeling_utils"), _NoLoadReport()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def _arch_pattern(key: str) -> str:
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "#", key)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _names(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _check_loading_info(spec: str, model, info) -> None:
    """Refuse a model of which any parameter did not come from the weights (transformers would have initialised it at
    random and said so only in its load report): missing tensors, tensors of the wrong shape, and tensors that are the
    architecture's own kind but have no place in it (more layers or experts than config.json declares). Other tensors
    the architecture does not use (a value head, a different task's head) are ignored with one warning line."""
    if not isinstance(info, dict):
        return
    total = len(model.state_dict())
    missing = {str(k) for k in info.get("missing_keys") or ()}
    if missing:
        raise ModelError(f"{spec}: the weights lack {len(missing)} of the model's {_count(total, 'tensor')} "
                         f"({_names(missing)}); they would start from random values: the weights are damaged, "
                         "truncated or of another architecture than config.json")
    mismatched = sorted(tuple(m) for m in info.get("mismatched_keys") or ())
    if mismatched:
        key, ckpt, want = mismatched[0]
        more = f", and {_count(len(mismatched) - 1, 'other tensor')}" if len(mismatched) > 1 else ""
        raise ModelError(f"{spec}: the weights do not fit the architecture in config.json ({key} is {tuple(ckpt)} in "
                         f"the weights, {tuple(want)} in the model{more})")
    unexpected = {str(k) for k in info.get("unexpected_keys") or ()}
    if unexpected:
        own = {_arch_pattern(k) for k in model.state_dict()}
        stray = {k for k in unexpected if _arch_pattern(k) in own}
        if stray:
            raise ModelError(f"{spec}: the weights hold {_count(len(stray), 'tensor')} of layers config.json does not "
                             f"declare ({_names(stray)}); config.json does not match the weights (num_hidden_layers?)")
        print(f"obliviate: warning: {spec}: ignoring {_count(len(unexpected), 'tensor')} of the weights that the "
              f"model has no place for ({_names(unexpected)})", file=sys.stderr)


def _check_vocabulary(spec: str, model, tokenizer) -> None:
    """Refuse a tokenizer whose token ids reach past the model's embedding matrix (a smaller one is normal: models pad
    their embeddings)."""
    try:
        rows = model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return
    try:
        top = max(tokenizer.get_vocab().values(), default=-1) + 1
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        top = 0
    size = max(len(tokenizer), top)
    if size > rows:
        raise ModelError(f"{spec}: the tokenizer has {size} tokens but the model's embedding matrix has {rows} rows; "
                         f"token ids from {rows} up would index past it (tokenizer files from another model?)")


def load_model(spec: str | Path, dtype: str | torch.dtype | None = "auto", device: str | torch.device | None = None,
               trust_remote_code: bool = False, allow_pickle: bool = False):
    """Load ``(model, tokenizer)`` from a local folder, a ``.gguf`` file, the alias ``smollm2-135m`` or a hub id, in eval
    mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    device = torch.device(device) if device is not None else default_device()
    torch_dtype = _parse_dtype(dtype, device)
    spec = str(spec)
    from .smollm2 import ensure_converted, is_alias

    if is_alias(spec):  # a built-in alias: the packaged GGUF, converted once to a cached safetensors folder
        spec = str(ensure_converted(log=lambda msg: print(msg, file=sys.stderr)))
    path = Path(spec).expanduser()
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found")
        src, kwargs["gguf_file"] = str(path.parent), path.name
        tok_src = src
    elif path.exists():
        if not path.is_dir():
            raise ModelError(f"{path}: expected a model folder (config.json and weights) or a .gguf file")
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: model folder has no config.json")
        _refuse_pickles(path, allow_pickle)
        if not any((path / f).exists() for f in WEIGHT_FILES):
            raise ModelError(f"{path}: model folder has no weights (model.safetensors)")
        if not any((path / f).exists() for f in WEIGHT_FILES if "safetensors" in f) and not allow_pickle:
            raise ModelError(f"{path}: weights are a pickle checkpoint (pytorch_model.bin); {TRUST_HINT}")
        src = tok_src = str(path)
        kwargs["use_safetensors"] = not allow_pickle or None
    elif spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"{spec}: model folder does not exist")
    else:
        src = tok_src = spec  # a hub id; works only online (its pickle files meet _no_unpickling)
    guard = _no_unpickling(spec) if not allow_pickle else nullcontext()
    try:
        with guard, _without_load_report():
            tokenizer = AutoTokenizer.from_pretrained(tok_src, **{k: v for k, v in kwargs.items()
                                                                  if k != "use_safetensors"})
            # mismatched shapes are reported in the loading info (and refused below) rather than raised with a pointer
            # to transformers' load report
            model, info = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, output_loading_info=True,
                                                               ignore_mismatched_sizes=True, **kwargs)
    except ModelError:
        raise
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{spec}: could not load the model ({first})") from None
    except Exception as e:  # a damaged weights file, an unknown architecture, remote code not allowed: the user's files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        hint = "; pass --trust-remote-code if you trust its code" if "trust_remote_code" in str(e) else ""
        raise ModelError(f"{spec}: could not load the model ({type(e).__name__}: {first[:300]}){hint}") from None
    if tokenizer.eos_token_id is None:
        what = "neither a pad nor an EOS token" if tokenizer.pad_token_id is None else "no EOS token"
        raise ModelError(f"{spec}: tokenizer has {what} (field 'eos_token' of tokenizer_config.json); obliviate ends "
                         f"every answer with EOS")
    _check_loading_info(spec, model, info)
    _check_vocabulary(spec, model, tokenizer)
    ensure_pad_token(tokenizer, model)
    model.to(device).eval()
    return model, tokenizer


# tokenizer classes transformers 5 writes that transformers 4.x cannot import ("Tokenizer class TokenizersBackend does
# not exist"); both versions load a tokenizer.json through PreTrainedTokenizerFast
_V5_ONLY_TOKENIZER_CLASSES = {"TokenizersBackend"}


def _portable_tokenizer_config(path: Path) -> None:
    """Name a tokenizer class that transformers 4.4x and 5.x both know in a saved ``tokenizer_config.json``."""
    import json

    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") in _V5_ONLY_TOKENIZER_CLASSES and (path.parent / "tokenizer.json").is_file():
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save weights as safetensors plus the tokenizer; written to a temporary folder and renamed into place."""
    import os
    import shutil

    _quiet_transformers()
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp / "tokenizer_config.json")
    except BaseException:  # a full disk, Ctrl-C: the half-written folder goes, the old model (if any) stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():  # moved aside, not deleted, until the new folder is in place
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
