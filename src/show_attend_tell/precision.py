"""The arithmetic a stage computes in: float32, or bfloat16 autocast where this machine does it faster.

bfloat16 is a 4x faster matmul on CPUs with native support (``avx512_bf16`` / ``amx_bf16``) and on
recent GPUs, but emulated, and some 80x slower, on CPUs without it. ``auto`` therefore never guesses:
without native support it is float32; with it, a short probe of the real workload times both and
bfloat16 is taken only when it is clearly faster (at small model sizes the step is bound by per-op
overhead, not by matmuls, and bfloat16 gains nothing). Autocast keeps float32 master weights,
optimizer state and gradients; the loss, softmaxes and log-probabilities are computed in float32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import SatError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# bfloat16 must beat float32 by this factor in the probe: timing noise then cannot flip the choice between
# runs on the same machine (the same config and seed must give the same model).
MIN_SPEEDUP = 1.25


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``precision`` is bfloat16; a no-op for float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


@functools.cache
def native_bfloat16(device_type: str) -> bool:
    """Whether ``device_type`` computes bfloat16 in hardware (CPU flags from /proc/cpuinfo; CUDA's own check)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split()
    except OSError:  # not Linux: no way to tell, so never risk the emulated path
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose(precision: str, device: torch.device, probe: Callable[[str], float], rounds: int = 3) -> str:
    """The precision to compute in: ``precision`` itself unless ``auto``, which measures with ``probe``.

    ``probe(p)`` returns the seconds of one unit of work in precision ``p``. The two precisions are
    timed in turn, ``rounds`` times each, and each keeps its fastest time: another process busy on the
    same cores slows single runs, not the best of several taken side by side. On hardware without
    native bfloat16 nothing is probed (the emulated path can take minutes to time).
    """
    if precision not in PRECISIONS:
        raise SatError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if not native_bfloat16(device.type):
        log.info("precision auto: float32 (no native bfloat16 on this %s)", device.type)
        return "float32"
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(rounds):
        for name, spent in times.items():
            spent.append(probe(name))
    fp32, bf16 = min(times["float32"]), min(times["bfloat16"])
    chosen = "bfloat16" if bf16 * MIN_SPEEDUP <= fp32 else "float32"
    log.info("precision auto: %s (probe, best of %d: float32 %.1f ms, bfloat16 %.1f ms per step; bfloat16 needs "
             "%.2fx)", chosen, rounds, fp32 * 1e3, bf16 * 1e3, MIN_SPEEDUP)
    return chosen
