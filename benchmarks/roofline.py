"""The roofline lines the benchmarks share: the host, and a row's achieved GFLOP/s beside the matmul peak.

A rate alone says little across the project's hosts (2-3x apart in float32, 80x in bfloat16); its share
of the matmul peak of the dtype it ran in, measured in the same run by
:func:`show_attend_tell.machine.describe`, says how close to the limit it is on any machine.

FLOPs are a benchmark's stated hand count, or counted by :func:`count` with
``torch.utils.flop_counter.FlopCounterMode``: matmul and convolution FLOPs only, 2 per multiply-add
(elementwise work, softmaxes and top-k are not counted: they are not what the peak measures).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, register_flop_formula

from show_attend_tell.machine import matmul_peak, summary

T = TypeVar("T")

# The peaks describe() measures, by the dtype name a row reports.
PEAK_KEYS = {"float32": "fp32_peak_gflops", "bfloat16": "bf16_peak_gflops"}


def host_line(host: dict[str, Any]) -> str:
    """The line every benchmark prints first: CPU (or GPU) model, native bfloat16 or not, matmul peaks."""
    return f"host: {summary(host)}"


@functools.cache
def _measured_peak(dtype: str, device: str) -> float:
    return matmul_peak(getattr(torch, dtype), device)


def peak_gflops(host: dict[str, Any], dtype: str, device: torch.device | str = "cpu") -> float:
    """The matmul peak of ``dtype``: describe()'s for float32 and bfloat16, else measured now (float16 on CUDA)."""
    if dtype in PEAK_KEYS:
        return float(host[PEAK_KEYS[dtype]])
    return _measured_peak(dtype, str(device))


def share(gflops: float, dtype: str, host: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """``N GFLOP/s = P% of the <dtype> matmul peak``."""
    peak = peak_gflops(host, dtype, device)
    note = "" if dtype in PEAK_KEYS else f" ({peak:.0f} GFLOP/s, measured now)"
    return f"{gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f}% of the {dtype} matmul peak{note}"


def row(
    rate: float,
    flops_per_unit: float,
    unit: str,
    dtype: str,
    host: dict[str, Any],
    device: torch.device | str = "cpu",
    dtype_share: float = 1.0,
) -> str:
    """What a row of ``rate`` units/s at ``flops_per_unit`` FLOPs each achieves, to append to its line.

    ``dtype_share`` < 1: only that share of the FLOPs ran in ``dtype`` (said in the line).
    """
    mixed = f" ({100 * dtype_share:.0f}% of FLOPs)" if dtype_share < 0.995 else ""
    achieved = share(rate * flops_per_unit / 1e9, dtype, host, device)
    return f"   {dtype:8s} {flops_per_unit / 1e6:.1f} MFLOP/{unit}{mixed}: {achieved}"


@dataclass(frozen=True)
class Count:
    """The matmul/conv FLOPs of one call, and the dtype most of them ran in (the peak to compare with)."""

    flops: int
    dtype: str
    dtype_share: float  # of ``flops``, the share in ``dtype``


if torch.backends.mkldnn.is_available():

    @register_flop_formula(torch.ops.mkldnn._convolution_pointwise)
    def _fused_convolution_flops(x_shape, w_shape, *args, out_shape, **kwargs) -> int:
        """The encoders' convolution with its ReLU6 in one oneDNN call: counted as the convolution alone."""
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


class _FlopsByDtype(TorchDispatchMode):
    """Splits FlopCounterMode's count by the dtype of each counted op's first tensor input.

    Under autocast that is the dtype the op computed in (bfloat16 where autocast cast it).
    """

    def __init__(self, registry: dict) -> None:
        super().__init__()
        self.registry = registry
        self.flops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        counter = self.registry.get(func.overloadpacket)
        if counter is not None:
            dtype = next(a.dtype for a in args if isinstance(a, torch.Tensor))
            name = str(dtype).removeprefix("torch.")
            self.flops[name] = self.flops.get(name, 0) + int(counter(*args, **kwargs, out_val=out))
        return out


def count(fn: Callable[[], T]) -> tuple[T, Count]:
    """``fn()`` and the matmul/conv FLOPs it did (FlopCounterMode: 2 per multiply-add), with their dtype."""
    counter = FlopCounterMode(display=False)
    by_dtype = _FlopsByDtype(counter.flop_registry)
    # The dtype mode outermost: inside FlopCounterMode it misses ops under inference_mode.
    with by_dtype, counter:
        result = fn()
    total = counter.get_total_flops()
    if not by_dtype.flops:
        return result, Count(total, "float32", 1.0)
    dtype = max(by_dtype.flops, key=by_dtype.flops.__getitem__)
    return result, Count(total, dtype, by_dtype.flops[dtype] / max(1, sum(by_dtype.flops.values())))
