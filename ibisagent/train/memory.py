"""Keep freed memory in the process heap during CPU training.

glibc serves every block above 32 MB with a fresh mmap and returns it on free, so a training
step whose activations are 30-40 MB each (the compact belief net at batch 32: 32 x 64 x 64 x
64 floats) page-faults in gigabytes of zeroed memory per step: on 2 cores about 45% of the CPU
time went to the kernel. Serving them from the heap and not trimming it removes that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def reuse_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc malloc for heap (not mmap) blocks and to keep up to `trim_threshold` bytes of
    freed heap. -> True where applied (Linux with glibc); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
