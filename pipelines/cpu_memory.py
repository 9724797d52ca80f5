"""Keep freed memory in the process while a long CPU model run lasts (glibc only).

A gene caller's 100 kb window makes activations of ~150 MB each. glibc serves allocations that large
with fresh ``mmap``s and unmaps them at every free, so every layer of every window pays for page faults
on memory it just gave back: 30 % of a whole-genome CPU run was system time. Raising glibc's mmap and
trim thresholds for the run lets the heap keep and reuse those pages (phage lambda on one thread,
whole process: 32.6 s -> 27.8 s, peak 1.9 -> 2.7 GB, the same GFF3; benchmarks/RESULTS.md). On leaving, the
thresholds go back to glibc's usual dynamic ceiling and the kept memory is handed back to the system,
so a long-lived process (the app) does not hold it.

Kept memory fragments across windows: over all 52 windows of E. coli on one thread the peak grew to
8.0 GB, against 3.6 GB with nothing kept. A run that reads many windows therefore calls
:func:`give_back_freed_memory` after each one (``pipelines.genome.predict``), which keeps the reuse
inside a window and bounds the run by one window's working set (E. coli's first 400 kb, 5 windows:
264 s and 4.9 GB, against 349 s and 3.4 GB with nothing kept; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
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


@functools.cache  # find_library runs ldconfig (~2 ms): look once, not at every window of every run
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


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the system now (``malloc_trim(0)``; glibc only, else nothing).

    Between windows of a long run: inside one window the freed activations are reused, which is what
    saves the page faults; across windows, kept memory fragments and the heap grows with the number
    of windows. Trimming at each window's end bounds the run by one window's working set.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


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
