"""``heap.mmap_large_allocations``: freed large blocks leave the process's resident memory (glibc)."""

import platform
import subprocess
import sys

import pytest

CHILD = """
import sys
from obliviate import heap
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
if sys.argv[1] == "fixed":
    assert heap.mmap_large_allocations()
first = bytearray(4 << 20)
del first                      # an mmapped block freed: glibc's dynamic rule raises its threshold to 4 MB
base = rss_mb()
blocks = [bytearray(4 << 20) for _ in range(50)]   # 200 MB, every page written
pin = bytearray(256 << 10)     # a smaller block after them, on top of the heap: it keeps the heap from shrinking
del blocks
print(rss_mb() - base)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_large_blocks_leave_resident_memory_only_with_the_fixed_threshold():
    held = {mode: int(subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("dynamic", "fixed")}
    assert held["dynamic"] > 150, held     # the 4 MB blocks came from the heap and stay resident
    assert held["fixed"] < 20, held        # mmapped, unmapped when freed


@pytest.mark.parametrize("argv", [["forget"], ["demo", "--real"]])
def test_the_forget_commands_set_it_before_the_job(argv, tmp_path, monkeypatch):
    """``obliviate forget`` and ``demo --real`` make the setting (a process-wide one) before the recipe runs."""
    import json

    from obliviate import heap
    from obliviate.cli import main

    calls = []
    monkeypatch.setattr(heap, "mmap_large_allocations", lambda *a: calls.append("set") or True)
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"target": "X", "probes": [{"question": "Who is X?", "answers": []}]}))
    args = [*argv, "--out", str(tmp_path / "out")] + (["--probes", str(bad)] if argv == ["forget"] else
                                                     ["--model", str(tmp_path / "no-model")])
    assert main(args) == 2            # stops on its bad input, after the setting
    assert calls == ["set"]
