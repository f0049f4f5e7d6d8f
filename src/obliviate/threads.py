"""How many CPU threads torch may use: the CPUs this process may run on, shared with the other obliviate jobs running.

Two torch jobs that each take every core of a small machine do not run at half speed, they collapse: OpenMP workers
spin while they wait for a core the other job holds, and a step measured at 1.3 s alone took 12 s beside a second
job on 2 cores. So obliviate

* counts the CPUs it may actually use: the affinity mask (``taskset``, container cpusets) and the cgroup CPU quota
  (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), not ``os.cpu_count()``;
* registers each running job in a folder of lock files (one per process, held with ``flock`` while it lives; a lock
  nobody holds is a job that ended, even one killed with SIGKILL) and gives each live job an equal share of those CPUs;
* lets a long job re-read the share between steps (``ThreadShare.rebalance``), so a job started first gives up cores
  when a second one starts and takes them back when it ends.

``--threads N`` (or ``OBLIVIATE_THREADS``, or ``OMP_NUM_THREADS``) fixes the count instead.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup quota allows (quota / period), or None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1: -1 = no quota
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpus(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def requested_threads() -> int | None:
    """A thread count the user fixed: ``OBLIVIATE_THREADS``, else ``OMP_NUM_THREADS``; None if neither is a number."""
    for var in ("OBLIVIATE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _jobs_dir() -> Path:
    return Path(os.environ.get("OBLIVIATE_JOBS_DIR") or Path(tempfile.gettempdir()) / f"obliviate-jobs-{os.getuid()}")


class ThreadShare:
    """This process's place among the running obliviate jobs, and its share of the CPUs.

    ``with ThreadShare() as share:`` registers the job; ``share.threads`` is its share now; ``share.rebalance()``
    re-reads it (cheap: a directory listing and one non-blocking ``flock`` per other job, at most once per
    ``interval`` seconds) and applies it to torch. A fixed count (``threads``, or the environment variables above)
    is applied once and never changed.
    """

    def __init__(self, threads: int | None = None, jobs_dir: str | Path | None = None, interval: float = 5.0,
                 cpus: int | None = None):
        self.fixed = threads or requested_threads()
        self.dir = Path(jobs_dir) if jobs_dir else _jobs_dir()
        self.interval = interval
        self.cpus = cpus or available_cpus()
        self._file = None
        self._checked = 0.0
        self.threads = self.fixed or self.cpus

    def __enter__(self) -> ThreadShare:
        if self.fixed is None:
            import fcntl

            self.dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.dir / f"{os.getpid()}.lock", "w")
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.rebalance(force=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            path = Path(self._file.name)
            self._file.close()  # releases the lock
            path.unlink(missing_ok=True)
            self._file = None

    def live_jobs(self) -> int:
        """Running obliviate jobs sharing this machine, this one included: lock files someone still holds."""
        import fcntl

        n = 1
        for path in self.dir.glob("*.lock"):
            if self._file is not None and path.name == Path(self._file.name).name:
                continue
            try:
                with open(path) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        n += 1  # held: a live job
                        continue
                    path.unlink(missing_ok=True)  # nobody holds it: a job that ended without cleaning up
            except OSError:
                continue
        return n

    def share(self) -> int:
        return self.fixed or max(1, self.cpus // self.live_jobs())

    def rebalance(self, force: bool = False) -> int:
        """Apply this job's current share to torch (at most once per ``interval`` unless ``force``); returns it."""
        now = time.monotonic()
        if not force and (self.fixed or now - self._checked < self.interval):
            return self.threads
        self._checked = now
        threads = self.share()
        if force or threads != self.threads:
            import torch

            torch.set_num_threads(threads)
        self.threads = threads
        return threads


_CURRENT: ThreadShare | None = None


def start(threads: int | None = None) -> ThreadShare:
    """Register this process for the rest of its life (the CLI calls this once); later ``rebalance()`` calls use it."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = ThreadShare(threads).__enter__()
        import atexit

        atexit.register(_CURRENT.__exit__)
    return _CURRENT


def rebalance() -> None:
    """Between steps of long work: take this job's current share of the CPUs (a no-op outside the CLI)."""
    if _CURRENT is not None:
        _CURRENT.rebalance()
