"""The CPU share: CPUs counted from affinity and cgroup quota, split evenly among the obliviate jobs alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from obliviate.threads import ThreadShare, available_cpus


def test_the_cgroup_quota_caps_the_affinity_mask(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: 1.5 CPUs -> 2
    assert available_cpus(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a CPU -> 1
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(tmp_path) == affinity


HOLD = """
import fcntl, sys, time
f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX); print("held", flush=True); time.sleep(60)
"""


def test_live_jobs_share_the_cpus_and_a_dead_jobs_lock_does_not_count(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("OBLIVIATE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    (tmp_path / "4242.lock").write_text("")  # a job killed without cleaning up: nobody holds its lock
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "777.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with ThreadShare(jobs_dir=tmp_path, cpus=4, interval=0) as share:
            assert share.live_jobs() == 2 and share.threads == 2 and torch.get_num_threads() == 2
            assert not (tmp_path / "4242.lock").exists()  # the stale lock was cleared
            other.kill()
            other.wait()
            time.sleep(0.1)
            assert share.rebalance() == 4 and torch.get_num_threads() == 4  # alone again: every CPU
        assert not (tmp_path / f"{os.getpid()}.lock").exists()
    finally:
        other.kill()
        torch.set_num_threads(before)


def test_a_fixed_count_is_applied_and_never_rebalanced(tmp_path, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OBLIVIATE_THREADS", "1")
    try:
        with ThreadShare(jobs_dir=tmp_path, cpus=8, interval=0) as share:
            assert share.threads == 1 and torch.get_num_threads() == 1
            assert share.rebalance() == 1
            assert not list(tmp_path.glob("*.lock"))  # a fixed job does not take a share
    finally:
        torch.set_num_threads(before)


def test_threads_option_is_checked():
    from obliviate.cli import main

    assert main(["demo", "--threads", "0", "--out", "/nonexistent/x"]) == 2


@pytest.mark.parametrize("value", ["0", "x"])
def test_a_bad_environment_value_is_ignored(monkeypatch, value):
    from obliviate.threads import requested_threads

    monkeypatch.setenv("OBLIVIATE_THREADS", value)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert requested_threads() is None
