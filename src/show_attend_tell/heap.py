"""glibc malloc tuning: keep freed tensor memory for reuse instead of page-faulting fresh memory."""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc, whose malloc the two functions below tune; else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> None:
    """Let glibc keep freed activation buffers instead of returning them to the OS.

    By default every large tensor is a fresh mmap that the kernel must zero page by page; in feature
    extraction at batch 32 that page-faulting took half the CPU time of the forward pass and cut
    throughput 2-4x; in training it costs ~5% (benchmarks/training_throughput.py). The cost:
    the process keeps its peak memory until it exits (or :func:`release_free_memory`).
    """
    if libc := _glibc():
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)  # no mmap for large blocks: take them from the heap...
        libc.mallopt(m_trim_threshold, -1)  # ...and never shrink it


def release_free_memory() -> None:
    """Hand free heap memory back to the OS before forking workers, so the fork does not share it.

    Pages shared with a forked child are copied on this process's first write to each: with the heap
    kept by :func:`keep_freed_memory` (say from an earlier extraction) that stalled the first
    batches for seconds.
    """
    if libc := _glibc():
        libc.malloc_trim(0)
