"""Keep freed memory in the process while a long CPU model run lasts (glibc only).

A gene caller's 100 kb window makes activations of ~150 MB each. glibc serves allocations that large
with fresh ``mmap``s and unmaps them at every free, so every layer of every window pays for page faults
on memory it just gave back: 30 % of a whole-genome CPU run was system time. Raising glibc's mmap and
trim thresholds for the run lets the heap keep and reuse those pages (phage lambda on one thread,
whole process: 32.6 s -> 27.8 s, peak 1.9 -> 2.7 GB, the same GFF3; benchmarks/RESULTS.md). On leaving, the
thresholds go back to glibc's usual dynamic ceiling and the kept memory is handed back to the system,
so a long-lived process (the app) does not hold it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator

import torch

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # allocations up to 1 GiB come from the heap while the run lasts
# What glibc's dynamic thresholds settle at on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX, twice that
# for trimming): setting a threshold explicitly switches the dynamic rule off, so we restore these.
USUAL_MMAP_BYTES = 32 << 20
USUAL_TRIM_BYTES = 64 << 20

_lock = threading.Lock()
_depth = 0  # nested or concurrent runs (the app serves several sessions): only the last one out restores


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _set(libc: ctypes.CDLL, mmap_bytes: int, trim_bytes: int) -> bool:
    # mallopt returns 1 on success, 0 on a value it refuses.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes))


@contextlib.contextmanager
def keep_freed_memory(device: torch.device | str = "cpu") -> Iterator[bool]:
    """While inside, large freed blocks stay in the process for reuse (CPU runs on glibc; elsewhere a
    no-op). Yields whether the setting is in force."""
    global _depth
    libc = _glibc() if torch.device(device).type == "cpu" else None
    if libc is None:
        yield False
        return
    with _lock:
        active = _depth > 0 or _set(libc, KEEP_BYTES, KEEP_BYTES)
        _depth += active
    try:
        yield active
    finally:
        if active:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    _set(libc, USUAL_MMAP_BYTES, USUAL_TRIM_BYTES)
                    libc.malloc_trim(0)
