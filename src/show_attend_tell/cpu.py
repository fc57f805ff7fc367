"""What this CPU is, read from /proc/cpuinfo without importing torch: the workflow asks when it starts.

Its one decision is how many threads a training job takes (`train_threads: auto`), which Snakemake must
know before it schedules the soft and hard models side by side or one after the other.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:  # not Linux
        return ""


def model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 in hardware; without /proc/cpuinfo there is no telling, so no."""
    flags = _cpuinfo().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_threads(setting: int | str, precision: str, threads: int) -> int:
    """Threads of one training job: ``setting``, or for ``auto`` 1 where it may train in bfloat16, else ``threads``.

    In bfloat16 a step at the CPU presets' sizes is bound by per-operation overhead more than by arithmetic,
    so the soft and hard models side by side on one thread each finish sooner than one after the other on
    two (Flickr8k rows: 16.5-17.1 against 19.2-19.6 min). In float32, as a CPU without native bfloat16
    trains, the products weigh more and two threads run a model ~1.8x faster: each model then takes about
    half as long at about the same row time (README, "Threads: side by side in bfloat16, one after the other in
    float32"). A precision of auto may still settle on float32 after its probe; the job keeps the one thread then.
    """
    if setting != "auto":
        return int(setting)
    may_use_bfloat16 = precision == "bfloat16" or (precision == "auto" and native_bfloat16())
    return 1 if may_use_bfloat16 else threads
