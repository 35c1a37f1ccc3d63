"""glibc's malloc in a process that trains on the CPU: the blocks a step frees are kept for the next step, and
given back to the system when a cell starts.

Why keep them: glibc serves a block larger than its mmap threshold (at most 32 MiB by default) with a fresh
mmap and unmaps it on free, so every step faults its pages in again. Full fine-tuning's embedding gradient is
such a block (30,522 x 384 fp32, 47 MB, allocated and zero-filled by every backward): inside the loop the
embedding's backward took 11.5-15.1 ms with 11,446 page faults in every step (hooks on it, MRPC bench cell,
2-core AMD EPYC; bench/RESULTS.md 2026-12-03 late). Kept on the heap: 1.2-2.2 ms, no faults. glibc's documented switches (mallopt, as the MALLOC_*_ environment
variables would set them at start): no mmap below MMAP_THRESHOLD, no trim of the heap's top below
TRIM_THRESHOLD. The arithmetic is untouched (same kernels, same order): only where the memory comes from.

Why give them back at a cell's start: a cell's peak RSS (harness/train/measure.py) is counted from the RSS at
its start; free blocks an earlier cell left in the heap would count as this cell's memory (a LoRA cell after a
full fine-tuning cell recorded 1,367 MB against 982 MB alone; 1,223 MB with the heap trimmed first; the rest
is the earlier cell's data and caches, which are the process's). malloc_trim(0) returns the heap's free pages.

Elsewhere than glibc (macOS, musl, a preloaded jemalloc or tcmalloc) both are skipped: the record's
extra.host_allocator is None (also on GPUs, where a cell's host memory is not the hot path).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

MMAP_THRESHOLD = 256 * 2**20   # above the largest per-step block of the models here (47 MB), below a model's size
TRIM_THRESHOLD = 512 * 2**20   # free memory at the heap's top kept up to this (a step's activations fit)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library if it is glibc (it has mallopt and malloc_trim) and its malloc is the one in use, else None
    (a preloaded jemalloc or tcmalloc would ignore glibc's switches)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    in_use = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
    if in_use != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc


@functools.lru_cache(maxsize=1)
def keep_freed_blocks() -> dict | None:
    """Sets the process's malloc to keep freed blocks (once per process; later calls return the same answer):
    what was set, for the record (a threshold glibc refused is None: releases before 2.36 may cap the mmap
    threshold at 32 MiB), or None where malloc is not glibc's."""
    libc = _glibc()
    if libc is None:
        return None
    return {"malloc": f"glibc {libc.gnu_get_libc_version().decode()}",
            "mmap_threshold": MMAP_THRESHOLD if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) else None,
            "trim_threshold": TRIM_THRESHOLD if libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) else None}


def glibc_malloc() -> bool:
    """Whether this process's malloc is glibc's (the switches above act on it)."""
    return _glibc() is not None


def give_back_freed_blocks() -> None:
    """Returns the heap's free pages to the system (malloc_trim(0)); nothing where malloc is not glibc's."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
