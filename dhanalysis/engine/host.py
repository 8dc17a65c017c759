"""How the host process hands memory back: kept for reuse, so large CPU tensors do not fault their pages in anew.

glibc's malloc serves every block above its mmap threshold (128 KiB to 32 MiB, adapting) with a fresh ``mmap`` and
returns it with ``munmap`` when freed. A training step allocates and frees the same large activations every
iteration: the conv-head at 512 RoIs × 2 images holds 200 MB maps of 1024 × 7 × 7 per RoI, and each new one costs a
page fault (and the kernel's zeroing) per 4 KiB page on first touch. Measured on two Xeon cores (BENCHMARKS.md), that
was a quarter of the conv-head's training step: its BatchNorm, ReLU and adds looked memory-bound, but were
mostly faulting. Raising the mmap threshold keeps large blocks in the heap, and turning the trim off keeps the freed
heap mapped, where the next iteration reuses it. The trim is off, not merely raised: its threshold is a C int, so at
most 2 GiB, and that step keeps some 6 GB of maps alive at once; with a 2 GiB threshold every step gave back all
but 2 GiB when it freed them and faulted the rest in again (550,000 faults per step of 3.2 GB of maps, measured on
an AVX2-only EPYC; none with the trim off). The cost: the process keeps its high-water memory until it exits,
which a training or analysis process does anyway at its next step.

Applied by the command line for every command and by training from Python; a no-op (returning False) off glibc, under
a preloaded allocator (jemalloc, tcmalloc: they cache already), or when the user set glibc's own ``MALLOC_*`` knobs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import signal
import threading
from typing import Callable

# mallopt's parameters (malloc.h), the largest value it takes (an int), and the trim threshold glibc reads as "never"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
RETAIN_BYTES = 2**31 - 1
NEVER_TRIM = -1
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Keep freed blocks of up to 2 GiB, and the whole freed heap, in the process for reuse (glibc ``mallopt``);
    True when it took effect.
    Idempotent: later calls return the first call's answer."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False  # the user tuned malloc already
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(RETAIN_BYTES)) == 1
        ok = ok and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(NEVER_TRIM)) == 1
    except (OSError, AttributeError):
        return False
    _applied = bool(ok)
    return _applied


__all__ = ["retain_freed_memory"]


def set_signal_handlers(handlers: dict[str, Callable]) -> Callable[[], None]:
    """Install ``handlers`` (signal name -> handler) for the signals this platform has (Windows has no SIGUSR1);
    returns what puts the previous handlers back. Python sets handlers from the main thread only, so elsewhere (a
    thread of a notebook or a test runner) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {number: signal.signal(number, handler) for name, handler in handlers.items()
                if (number := getattr(signal, name, None)) is not None}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return restore
