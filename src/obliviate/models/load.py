"""Load any Hugging Face causal LM: a local folder, a hub id (when online), or a GGUF file.

``load_model`` returns ``(model, tokenizer)`` with a pad token set, the dtype chosen for the device (bf16 on a GPU that
supports it, fp32 on a CPU, where bf16 is slower), weights from safetensors (pickle checkpoints only with
``allow_pickle=True``), and remote code off unless asked for.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                "adapter_model.safetensors")


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
        import sys

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
        if not any((path / f).exists() for f in WEIGHT_FILES):
            raise ModelError(f"{path}: model folder has no weights (model.safetensors)")
        if not any((path / f).exists() for f in WEIGHT_FILES if "safetensors" in f) and not allow_pickle:
            raise ModelError(f"{path}: weights are a pickle checkpoint (pytorch_model.bin); convert to safetensors or "
                             "pass --allow-pickle if you trust the file")
        src = tok_src = str(path)
        kwargs["use_safetensors"] = not allow_pickle or None
    elif spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"{spec}: model folder does not exist")
    else:
        src = tok_src = spec  # a hub id; works only online
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_src, **{k: v for k, v in kwargs.items() if k != "use_safetensors"})
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kwargs)
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
    ensure_pad_token(tokenizer, model)
    model.to(device).eval()
    return model, tokenizer


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save weights as safetensors plus the tokenizer; written to a temporary folder and renamed into place."""
    import os
    import shutil

    _quiet_transformers()
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():  # moved aside, not deleted, until the new folder is in place
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
