"""A run folder is obliviate's: it is marked when obliviate makes it, and obliviate cleans or reuses no other.

``check_run_folder(out, inputs)`` checks, before anything is written, that ``out`` can be a run folder, and ``claim``
makes it one:

* ``out`` may not equal or contain an input (``--model``, ``--oracle``, ``--target``, ``--data``), nor lie inside a
  model folder: a run there would write over, or clean away, what it reads;
* a folder that exists and is not empty must carry the marker ``.obliviate-run`` (written when obliviate made it), or be
  a run folder of an obliviate from before the marker (``status.json`` and ``config.json`` as obliviate writes them),
  which is then marked; any other folder is refused, so obliviate never deletes or overwrites what it did not write;
* a lock (``.obliviate.lock``, an advisory ``flock`` the system drops when the process ends, even on SIGKILL) makes a
  second run on the same folder stop with one line instead of interleaving with the first.

``run_folder(out, inputs)`` claims and locks, as a context manager around the writing; it can be nested in one process
(a command that unlearns and then reports takes it twice and holds one lock).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError
from ..io import write_json

MARKER = ".obliviate-run"
LOCK = ".obliviate.lock"
_HELD: dict[str, tuple[int, int]] = {}  # resolved folder -> (lock file descriptor, nesting depth)


def _resolved(path) -> Path | None:
    try:
        p = Path(path).expanduser()
    except TypeError:
        return None
    return p.resolve() if p.exists() else None


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _legacy_run(out: Path) -> bool:
    """A run folder of an obliviate from before the marker: its status.json and config.json as obliviate writes them."""
    try:
        status = json.loads((out / "status.json").read_text(encoding="utf-8"))
        json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("state") in ("running", "completed", "failed", "diverged", "trained")


def check_inputs(out: str | Path, inputs: dict[str, object], option: str = "--out") -> None:
    """Refuse ``out`` when it equals, contains or lies inside one of ``inputs`` (option name -> path)."""
    target = Path(out).expanduser().resolve()
    for name, value in inputs.items():
        src = _resolved(value) if value is not None else None
        if src is None:
            continue  # not a local path (a hub id, "tiny"): nothing to protect
        if target == src:
            raise ConfigError(f"{out}: {option} is the {name} folder itself; obliviate would write over its input. "
                              f"Choose another {option}")
        if _within(src, target):
            raise ConfigError(f"{out}: {option} contains the {name} ({value}); a run there would write over or clean "
                              f"away its input. Choose another {option}")
        if src.is_dir() and _within(target, src) and name != "--data":  # runs/ inside a data folder is fine
            raise ConfigError(f"{out}: {option} lies inside the {name} folder ({value}); keep outputs apart from "
                              f"inputs. Choose another {option}")


def check_run_folder(out: str | Path, inputs: dict[str, object] | None = None, option: str = "--out") -> None:
    """Whether ``out`` can be obliviate's run folder: writable (``data.validate.check_output_dir``) and as the module's
    docstring says; leaves nothing behind."""
    from ..data.validate import check_output_dir

    out = Path(out)
    check_output_dir(out, option)  # a folder, or creatable as one, that this process can write in
    check_inputs(out, inputs or {}, option)
    if out.is_dir() and not (out / MARKER).exists():
        entries = [p.name for p in out.iterdir() if p.name != LOCK]
        if entries and not _legacy_run(out):
            more = " and more" if len(entries) > 1 else ""
            raise ConfigError(f"{out}: {option} is a folder that obliviate did not make and that is not empty (it "
                              f"holds {entries[0]!r}{more}); obliviate never cleans or overwrites what it did not "
                              f"write. Choose a new or empty {option}")


def claim(out: str | Path, inputs: dict[str, object] | None = None, option: str = "--out") -> Path:
    """Check ``out`` (``check_run_folder``), then create and mark it; return it."""
    out = Path(out)
    check_run_folder(out, inputs, option)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        write_json(out / MARKER, {"made_by": "obliviate", "note": "a run folder obliviate may clean and reuse"})
    return out


def _lock(out: Path, option: str) -> None:
    key = str(out.resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        return
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # no flock on this platform: runs are not guarded against each other
        _HELD[key] = (fd, 1)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"{out}: another obliviate run is using this {option} folder; wait for it to end, or "
                          f"choose another {option}") from None
    _HELD[key] = (fd, 1)


def _unlock(out: Path) -> None:
    key = str(out.resolve())
    fd, depth = _HELD[key]
    if depth > 1:
        _HELD[key] = (fd, depth - 1)
        return
    del _HELD[key]
    os.close(fd)  # closing the descriptor drops the flock


@contextmanager
def run_folder(out: str | Path, inputs: dict[str, object] | None = None, option: str = "--out"):
    """Claim and lock ``out`` for the duration of the block (nestable within a process)."""
    out = claim(out, inputs, option)
    _lock(out, option)
    try:
        yield out
    finally:
        _unlock(out)
