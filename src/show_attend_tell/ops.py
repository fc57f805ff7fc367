"""Element-wise functions computed faster than PyTorch's own kernels on some hardware, to the same values."""

from __future__ import annotations

import torch


class _Sigmoid16(torch.autograd.Function):
    """sigmoid of a 16-bit CPU tensor by way of float32; its gradient from the 16-bit output, as torch's is."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        y = x.float().sigmoid_().to(x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.sigmoid_backward(grad, y)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid(x)``, bit for bit; for 16-bit CPU tensors by way of float32.

    Some of PyTorch's CPU kernels of bfloat16 are slower than converting to float32, computing there and
    rounding back, which gives the same values (tests/test_ops.py): tanh took 1.7x as long so on an Intel
    Xeon with native bfloat16 (on an AMD EPYC without it, tanh and sigmoid cost the same either way). The
    gradient is the kernel torch.sigmoid's uses.
    """
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return _Sigmoid16.apply(x)
    return torch.sigmoid(x)
