"""What machine a measurement ran on: CPU model, native bfloat16 or not, and its matmul peak, measured now.

Timings mean little without the machine beside them (the 2-core hosts this project runs on differ 2-3x
in float32 and 80x in bfloat16), so every benchmark prints :func:`describe` with its numbers.
"""

from __future__ import annotations

import functools
import time

import torch

from . import cpu

PEAK_SHAPE = (1280, 2048, 2048)  # (m, k, n) of the matmul timed for the peak


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu.model()


@functools.cache
def native_bfloat16(device_type: str) -> bool:
    """Whether ``device_type`` computes bfloat16 in hardware (CPU flags from /proc/cpuinfo; CUDA's own check).

    Without /proc/cpuinfo there is no way to tell, so the emulated path is never risked.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu.native_bfloat16()


def matmul_peak(dtype: torch.dtype, device: torch.device | str = "cpu", seconds: float = 1.0) -> float:
    """GFLOP/s of a (1280 x 2048) by (2048 x 2048) matmul in ``dtype`` on ``device``, best of ~``seconds`` of runs."""
    device = torch.device(device)
    m, k, n = PEAK_SHAPE
    a, b = torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype)
    best, start = float("inf"), time.perf_counter()
    runs = 0
    while runs < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
        runs += 1
        if best > seconds:  # emulated bfloat16: one run says enough
            break
    return 2 * m * k * n / best / 1e9


def describe(device: torch.device | str = "cpu") -> dict[str, object]:
    """The machine, its threads and its float32 / bfloat16 matmul peaks (GFLOP/s), measured in this process."""
    device = torch.device(device)
    native = native_bfloat16(device.type)
    return {
        "device": f"{device.type}: {device_name(device)}",
        "threads": torch.get_num_threads(),
        "native_bfloat16": native,
        "fp32_peak_gflops": matmul_peak(torch.float32, device),
        # Emulated bfloat16 is timed with one short run: it is there only to show how slow it is.
        "bf16_peak_gflops": matmul_peak(torch.bfloat16, device, seconds=1.0 if native else 0.0),
    }


def summary(info: dict[str, object]) -> str:
    return (
        f"{info['device']}, {info['threads']} threads, bfloat16 {'native' if info['native_bfloat16'] else 'emulated'}; "
        f"matmul peak fp32 {info['fp32_peak_gflops']:.0f} GFLOP/s, bf16 {info['bf16_peak_gflops']:.0f} GFLOP/s"
    )
