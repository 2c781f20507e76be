"""Process-wide settings a `decbyzpg` process makes once, before any command runs.

Kept apart from the commands because they are about the process, not about any one of them:
a sweep's pool workers (forked) and the daemons a cluster starts (`python -m peer.cli.main peer ...`) get
them the same way, through `peer.cli.main.main`.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Callable

M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number, from <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, frozen there


def glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt(), typed, or None where there is none (not Linux, or musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl names itself differently): its allocator does not do this
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def pin_malloc_mmap_threshold() -> bool:
    """Freeze glibc's mmap threshold at its starting 128 KiB; False where there is no glibc.

    Why: glibc raises the threshold (up to 32 MiB) every time a block it had mmapped is freed,
    so after the first large batch, batch-sized tensors and arrays come from the heap instead.
    LunarLander's batches grow as episodes lengthen (tens of thousands of steps more each large
    batch), each larger block lands above small live ones, and the heap never shrinks: one
    K = 13 in-process run grew from 339 to 1,843 MB over 18 iterations resumed at 6,880
    trajectories, and sweep workers that ran several such runs reached 12 GB.  Pinned, the same
    iterations held at 729 MB (docs/ARCHITECTURE.md, "Memory").  A value set this way also
    turns off glibc's dynamic trim threshold, which is what we want: freed tops are returned.
    """
    mallopt = glibc_mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
