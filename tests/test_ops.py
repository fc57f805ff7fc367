"""Faster element-wise functions: the same values and gradients as PyTorch's own."""

from __future__ import annotations

import pytest
import torch

from show_attend_tell import ops


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_sigmoid_equals_torch_sigmoid_bit_for_bit_and_so_does_its_gradient(dtype):
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 49, 256, generator=generator) * 3).to(dtype).requires_grad_()
    grad = torch.randn(4, 49, 256, generator=generator).to(dtype)
    ours = ops.sigmoid(x)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    theirs = torch.sigmoid(x)
    (theirs_grad,) = torch.autograd.grad(theirs, x, grad)
    assert ours.dtype == dtype and torch.equal(ours, theirs)
    assert torch.equal(ours_grad, theirs_grad)


def test_sigmoid_under_bfloat16_autocast_and_without_gradients():
    x = torch.randn(3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        y = torch.nn.functional.linear(x, torch.eye(5))  # bfloat16 under autocast
        assert torch.equal(ops.sigmoid(y), torch.sigmoid(y))
