"""Large allocations given back to the system when freed (glibc's malloc), for jobs that must stay under a memory bar.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``, which ``free`` unmaps at
once; smaller ones come from the heap, whose freed space stays with the process. The threshold is dynamic: freeing an
mmapped block raises it to that block's size (up to 32 MB), so after the first tensors of a job come and go, tensors of
a few MB come from the heap and their space stays resident, fragmented between what is still alive. A torch job whose
phases allocate tensors of many sizes (generation, then training) then holds far more than it uses: ``obliviate
forget`` on SmolLM2-135M peaked at 2.51 GB, and at 2.35 GB with the threshold fixed at 1 MiB (issue 21; 7 min 6 s
against 6 min 52 s). Fixing the threshold also turns the dynamic rule off. It is a setting of the whole process, so
the commands make it (``obliviate forget``, ``demo --real``), not the library functions they call. Elsewhere (another
C library) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_MMAP_THRESHOLD = -3   # mallopt parameter (malloc.h)
THRESHOLD = 1 << 20


def mmap_large_allocations(threshold: int = THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more with mmap from now on, and stop glibc from raising the
    threshold; True where it took effect (glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
