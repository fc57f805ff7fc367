"""The arithmetic a stage computes in: float32, or a 16-bit autocast where this machine does it faster.

bfloat16 is a 4x faster matmul on CPUs with native support (``avx512_bf16`` / ``amx_bf16``) and on
recent GPUs, but emulated, and some 80x slower, on CPUs without it. ``auto`` therefore never guesses:
without native support it is float32; with it, a short probe of the real workload times both and
bfloat16 is taken only when it is clearly faster (at small model sizes the step is bound by per-op
overhead, not by matmuls, and bfloat16 gains nothing). Autocast keeps float32 master weights,
optimizer state and gradients; the loss, softmaxes and log-probabilities are computed in float32.
float16 is offered to feature extraction on CUDA alone, for GPUs without native bfloat16 (V100, T4): it
needs no loss scaling there, as nothing is differentiated; training never uses it. Feature extraction
holds the encoder's weights in the 16-bit type rather than autocasting (``encoding.prepare_encoder``).

A probe's verdict is remembered per machine and workload (in ``$XDG_CACHE_HOME/show_attend_tell/``,
default ``~/.cache``): timings near the threshold could otherwise flip between runs, and the same
config and seed must give the same artifacts on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .atomic import atomic_output
from .errors import SatError
from .machine import device_name, native_bfloat16

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISIONS = ("auto", *DTYPES)
# A 16-bit precision must beat float32 by this factor in the probe: timing noise then cannot flip the choice between
# runs on the same machine (the same config and seed must give the same model).
MIN_SPEEDUP = 1.25


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``precision``'s autocast on ``device``; a no-op for float32."""
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "float32")


def half_precision(device: torch.device, float16: bool) -> str | None:
    """The 16-bit precision that can beat float32 here: native bfloat16, else (if allowed) float16 on CUDA."""
    if native_bfloat16(device.type):
        return "bfloat16"
    return "float16" if float16 and device.type == "cuda" else None


def verdicts_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "show_attend_tell" / "precision.json"


def _machine(device: torch.device) -> str:
    return f"{device.type}: {device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _read_verdicts(path: Path) -> dict[str, dict]:
    try:
        verdicts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def choose(
    precision: str,
    device: torch.device,
    probe: Callable[[str], float],
    workload: str = "",
    rounds: int = 3,
    float16: bool = False,
) -> str:
    """The precision to compute in: ``precision`` itself unless ``auto``, which measures with ``probe``.

    ``probe(p)`` returns the seconds of one unit of work in precision ``p``. The two precisions are
    timed in turn, ``rounds`` times each, and each keeps its fastest time: another process busy on the
    same cores slows single runs, not the best of several taken side by side. On hardware without
    native bfloat16 nothing is probed (the emulated path can take minutes to time), unless ``float16``
    allows float16 on CUDA, which is then probed instead. With a ``workload`` name (its shapes), the
    verdict is remembered for this machine and reused.
    """
    if precision not in PRECISIONS:
        raise SatError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "float16" and not (float16 and device.type == "cuda"):
        raise SatError(f"float16 is for feature extraction on CUDA only (here: {device.type}); use bfloat16 or float32")
    if precision != "auto":
        return precision
    half = half_precision(device, float16)
    if half is None:
        log.info("precision auto: float32 (no native bfloat16 on this %s)", device.type)
        return "float32"
    key = f"{_machine(device)} | {workload}"
    path = verdicts_file()
    known = _read_verdicts(path).get(key) if workload else None
    if known and known.get("precision") in ("float32", half):
        log.info("precision auto: %s (as measured before on this machine: %s; %s)", known["precision"], known, path)
        return known["precision"]
    times: dict[str, list[float]] = {"float32": [], half: []}
    for _ in range(rounds):
        for name, spent in times.items():
            spent.append(probe(name))
    fp32, fast = min(times["float32"]), min(times[half])
    chosen = half if fast * MIN_SPEEDUP <= fp32 else "float32"
    log.info(
        "precision auto: %s (probe, best of %d: float32 %.1f ms, %s %.1f ms per step; %s needs %.2fx)",
        chosen,
        rounds,
        fp32 * 1e3,
        half,
        fast * 1e3,
        half,
        MIN_SPEEDUP,
    )
    if workload:
        _remember(path, key, {"precision": chosen, "float32_ms": fp32 * 1e3, f"{half}_ms": fast * 1e3})
    return chosen


def _remember(path: Path, key: str, verdict: dict) -> None:
    """Add ``verdict`` to the machine's file; a cache that cannot be written only costs a probe next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        verdicts = _read_verdicts(path) | {key: verdict}
        with atomic_output(path, shared=True) as tmp:  # the soft and hard models' jobs probe at once
            tmp.write_text(json.dumps(verdicts, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except (OSError, SatError) as e:
        log.warning("could not record the precision verdict in %s: %s", path, e)
