"""A linear layer applied at every step of a recurrence, whose weight gradient is one product over all steps.

Autograd computes a weight's gradient per use: T small products G_t^T X_t of B rows each, summed one
by one. The same sum is one product G^T X over the T*B rows stacked, which runs nearer the matmul
peak (benchmarks/step_weight_gradients.py times the training step either way).

Each step's backward records its output gradient and its input and returns only the input's gradient.
The weights pass through one node before the steps use them; autograd runs that node only after every
step's backward, and it computes the weight and bias gradients there, at once.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx


class _Record:
    """The (output gradient, input) pairs of every step of one backward pass."""

    def __init__(self) -> None:
        self.grads: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All steps' output gradients and inputs, stacked row-wise in matching order; the record is emptied."""
        g, x = torch.cat(self.grads), torch.cat(self.inputs)
        self.grads.clear()
        self.inputs.clear()
        return g, x


class _Weights(torch.autograd.Function):
    """The layer's weight (and bias) in the dtype the steps compute in; their gradients from all steps at once."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, record: _Record, dtype: torch.dtype, *params: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        ctx.record, ctx.dtypes = record, [p.dtype for p in params]
        ctx.set_materialize_grads(False)
        return tuple(p.detach().to(dtype) for p in params)

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if not ctx.record.grads:  # no step was on the way to the loss
            return None, None, *grads
        g, x = ctx.record.take()
        mine = [g.t() @ x, g.sum(0, dtype=torch.float32)][: len(grads)]
        total = [
            m.to(dtype) if other is None else m.to(dtype) + other for m, other, dtype in zip(mine, grads, ctx.dtypes)
        ]
        return None, None, *total


class _Step(torch.autograd.Function):
    """x W^T + b for one step; its backward records (grad, x) for :class:`_Weights` and returns x's gradient."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, record: _Record, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.record, ctx.input_dtype = record, x.dtype
        x = x.to(weight.dtype)
        ctx.save_for_backward(x, weight)
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        ctx.record.grads.append(grad.reshape(-1, grad.shape[-1]))
        ctx.record.inputs.append(x.reshape(-1, x.shape[-1]))
        return None, (grad @ weight).to(ctx.input_dtype), None, None


class StepLinear:
    """``layer`` for the steps of one forward pass (build one per pass): the same values as calling ``layer``.

    Under autocast the steps compute in the autocast dtype, as ``layer`` would, its weights cast once;
    the gradients arrive in the weights' own dtype.
    """

    def __init__(self, layer: nn.Linear) -> None:
        kind = layer.weight.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else layer.weight.dtype
        params = [layer.weight] if layer.bias is None else [layer.weight, layer.bias]
        self._record = _Record()
        self._params = _Weights.apply(self._record, dtype, *params)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = (*self._params, None)[:2]
        return _Step.apply(self._record, x, weight, bias)
