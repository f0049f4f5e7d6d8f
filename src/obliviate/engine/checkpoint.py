"""Checkpoints that hold no pickle: a checkpoint folder can be resumed without running any code it contains.

``checkpoints/step-N/`` holds

* ``model.safetensors``: the model's state (shared tensors, such as a tied output head, stored once);
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's per-parameter tensors, and its hyperparameters and
  parameter groups as JSON;
* ``scheduler.json``: the learning-rate scheduler's state (plain numbers);
* ``rng.safetensors`` + ``rng.json``: torch's CPU (and CUDA) generator states, Python's and NumPy's;
* ``trainer_state.json``: the step, the method's own state and the batching it was written with (``batch_size``,
  ``grad_accum``, ``processes``), written last, so a folder without it is incomplete and ignored.

A checkpoint resumes on another number of processes when the global batch (``batch_size x grad_accum x processes``)
is the same: the data order is a function of the global micro-batch index (``engine.distributed``), so 2 processes with
``grad_accum`` 1 continue exactly where 1 process with ``grad_accum`` 2 stopped.

Nothing here is unpickled, and nothing accelerate's ``save_state`` writes (``*.pkl``, ``*.bin``) is read. A checkpoint
of an older obliviate (written by ``accelerate.save_state``, with pickled scheduler and RNG state) is refused with one
line instead of being loaded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..io import write_json

FORMAT = 2  # trainer_state.json "format": 1 (missing) was accelerate's save_state, with pickles


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict split into tensors (``state.<param>.<name>``) and JSON (everything else)."""
    sd = optimizer.state_dict()
    tensors, plain = {}, {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                plain.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def _load_optimizer(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta.get("plain_state", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next}}
    return tensors, meta


def _set_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n["kind"], tensors["numpy"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


TRASH = ".trash-"  # prefix of a folder being removed (never a checkpoint: those are named step-N)


def remove_tree(path: Path) -> None:
    """Remove a folder obliviate wrote, atomically as far as a reader can tell: it is first renamed to a hidden
    ``.trash-`` name beside it, then deleted. An interrupt during the deletion leaves that hidden folder (removed by
    the next fresh run, ``clear_trash``), never a half-deleted checkpoint that still looks complete."""
    path = Path(path)
    if not path.exists():
        return
    trash = path.with_name(f"{TRASH}{path.name}-{os.getpid()}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def clear_trash(folder: Path) -> None:
    """Finish removals an interrupt cut short (``remove_tree``) in ``folder``."""
    for p in Path(folder).glob(f"{TRASH}*"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(out: Path, model, optimizer, scheduler, step: int, method_state: dict,
                    batching: dict | None = None) -> None:
    """Write a complete checkpoint folder ``out`` (replacing a half-written one a killed run left)."""
    from safetensors.torch import save_model

    remove_tree(out)
    out.mkdir(parents=True)
    save_model(model, str(out / "model.safetensors"))
    tensors, meta = _optimizer_state(optimizer)
    _save_tensors(tensors, out / "optimizer.safetensors")
    write_json(out / "optimizer.json", meta)
    write_json(out / "scheduler.json", scheduler.state_dict())
    tensors, meta = _rng_state()
    _save_tensors(tensors, out / "rng.safetensors")
    write_json(out / "rng.json", meta)
    # written last: a checkpoint without it is incomplete and ignored on resume
    write_json(out / "trainer_state.json", {"format": FORMAT, "step": step, "method_state": method_state,
                                            "batching": batching or {}})


def check_global_batch(ckpt: Path, batch_size: int, grad_accum: int, processes: int) -> None:
    """Refuse, with one line, to resume ``ckpt`` with another global batch (its steps would mean other data)."""
    try:
        was = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8")).get("batching") or {}
    except (OSError, ValueError, AttributeError):
        return  # load_checkpoint reports a damaged checkpoint
    if not was:
        return  # written before the batching was recorded: one process
    old = int(was["batch_size"]) * int(was["grad_accum"]) * int(was["processes"])
    new = batch_size * grad_accum * processes
    if old != new:
        raise ConfigError(f"{ckpt}: written with a global batch of {old} (batch_size {was['batch_size']} x grad_accum "
                          f"{was['grad_accum']} x {was['processes']} processes), this run has {new} (batch_size "
                          f"{batch_size} x grad_accum {grad_accum} x {processes} processes); set --grad-accum so the "
                          f"product matches, or rerun without --resume")


def load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG state from ``ckpt``; return its trainer_state (step, method
    state). Refuses, with one line, a checkpoint of the older pickle-holding format."""
    from safetensors.torch import load_model

    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{ckpt}: a checkpoint of an older obliviate (its state is pickled, and obliviate does not "
                          f"unpickle); rerun without --resume to start over")
    missing = [name for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json",
                                 "rng.safetensors", "rng.json") if not (ckpt / name).is_file()]
    if missing:
        raise ConfigError(f"{ckpt}: checkpoint is damaged ({missing[0]} is missing); rerun without --resume to start "
                          f"over")
    try:
        load_model(model, str(ckpt / "model.safetensors"))
        _load_optimizer(optimizer, _load_tensors(ckpt / "optimizer.safetensors"),
                        json.loads((ckpt / "optimizer.json").read_text(encoding="utf-8")))
        scheduler.load_state_dict(json.loads((ckpt / "scheduler.json").read_text(encoding="utf-8")))
        _set_rng(_load_tensors(ckpt / "rng.safetensors"), json.loads((ckpt / "rng.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"{ckpt}: checkpoint is damaged or from another run ({type(e).__name__}: {first}); rerun "
                          f"without --resume to start over") from None
    return state
