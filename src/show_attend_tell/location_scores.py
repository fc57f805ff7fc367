"""The attention's score at every location, e_ti = w . sigmoid(d_i + 2 U_a h_{t-1}), a few images at a time.

(The sigmoid form of the paper's tanh MLP, with d_i = 2 (W_a a_i + b): ``model.py`` says why.) Written as three
PyTorch operations, the sum, the sigmoid and the product with w each make a pass over the B x L x A values in
memory, and autograd's backward pass four more, plus a fresh (B, L, A) gradient per step that it then adds to the
others; on a CPU without native bfloat16 that is half of the training step (README, "Measuring"). Here the same
operations run on one block of images at a time, small enough to stay in the CPU's cache between them: the forward
pass sums and squashes a block in one pass and writes only the sigmoid (kept for the backward pass); the backward
pass takes the product with w, the sigmoid's gradient and the sum over L of a block in one pass, and adds its
gradient of d into one sum over all steps, which autograd receives after the last step's backward (as
``step_linear`` does for weight gradients). The scores and w's gradient stay one product each over the whole kept
sigmoid, the eager product's shapes, so the arithmetic is the eager operations' and the values the same bit for bit.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx

BLOCK_BYTES = 1 << 22  # a block of images' (L, A) values: measured best of 1-16 MiB (docs/speed.md)


class _Sum:
    """The gradient of d summed over the steps of one backward pass."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None


class _Summed(torch.autograd.Function):
    """d passes through unchanged; its gradient is what the steps added to the sum, handed on after every step's."""

    @staticmethod
    def forward(ctx: FunctionCtx, doubled: torch.Tensor, summed: _Sum) -> torch.Tensor:
        ctx.summed = summed
        ctx.set_materialize_grads(False)
        return doubled.view_as(doubled)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor | None) -> tuple[torch.Tensor | None, None]:
        total, ctx.summed.total = ctx.summed.total, None
        if total is None:
            return grad, None
        return (total if grad is None else total + grad), None


def _blocks(images: int, block: int) -> list[slice]:
    return [slice(i, min(i + block, images)) for i in range(0, images, block)]


def _forward(doubled: torch.Tensor, att_h2: torch.Tensor, w: torch.Tensor, block: int) -> tuple[torch.Tensor, ...]:
    """The sigmoid (images, rows, L, A), summed and squashed a block of images at a time, and the scores
    (images, rows, L) of all blocks in one product: the eager product's shapes, so the same values on any CPU."""
    (images, locations, dim), per_image = doubled.shape, att_h2.shape[1]
    sig = doubled.new_empty(images, per_image, locations, dim)
    for rows in _blocks(images, max(1, block // per_image)):
        s = sig[rows]
        torch.add(doubled[rows].unsqueeze(1), att_h2[rows].unsqueeze(2), out=s)
        s.sigmoid_()
    return sig, torch.mm(sig.view(-1, dim), w.t()).view(images, per_image, locations)


class _Scores(torch.autograd.Function):
    """Scores (B, 1, L) of one step with one row per image; the sigmoid is kept for the backward pass."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        doubled: torch.Tensor,
        att_h2: torch.Tensor,
        weight: torch.Tensor,
        summed: _Sum | None,
        block: int,
    ) -> torch.Tensor:
        w = weight.to(doubled.dtype)
        sig, scores = _forward(doubled, att_h2, w, block)
        ctx.save_for_backward(sig.squeeze(1), w)
        ctx.summed, ctx.block, ctx.weight_dtype = summed, block, weight.dtype
        return scores

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        sig, w = ctx.saved_tensors
        images, locations, dim = sig.shape
        grad = grad.reshape(images, locations, 1).to(sig.dtype)
        summed = ctx.summed if ctx.needs_input_grad[0] else None
        if summed is not None and summed.total is None:
            summed.total = torch.zeros_like(sig)
        fresh = torch.empty_like(sig) if ctx.needs_input_grad[0] and summed is None else None
        scratch = sig.new_empty(min(ctx.block, images), locations, dim) if fresh is None else None
        grad_h = sig.new_empty(images, 1, dim)
        for rows in _blocks(images, ctx.block):
            g = fresh[rows] if fresh is not None else scratch[: rows.stop - rows.start]
            torch.mul(grad[rows], w, out=g)  # the product with w, backwards: g_ti w
            torch.ops.aten.sigmoid_backward.grad_input(g, sig[rows], grad_input=g)
            torch.sum(g, 1, keepdim=True, out=grad_h[rows])
            if summed is not None:
                summed.total[rows].add_(g)
        grad_w = (grad.view(1, -1) @ sig.view(-1, dim)).to(ctx.weight_dtype)
        return fresh, grad_h, grad_w, None, None


class LocationScores:
    """The scores of d's images for the steps of one pass over a batch (build one per pass, as ``StepLinear``).

    Called with 2 U_a h of shape (images, rows per image, A) and w's weight (1, A): the scores (images, rows, L),
    the same values as ``nn.functional.linear(torch.sigmoid(d.unsqueeze(1) + 2 U_a h.unsqueeze(2)), w)``.
    Gradients flow (to d, U_a h and w) for one row per image, as in training; decoding's several rows (beams)
    per image run without them.
    """

    def __init__(self, doubled: torch.Tensor, block_bytes: int = BLOCK_BYTES) -> None:
        images, locations, dim = doubled.shape
        on_cpu = doubled.device.type == "cpu"  # elsewhere one block: a GPU gains nothing from blocks, pays per launch
        self.block = max(1, block_bytes // (locations * dim * doubled.element_size())) if on_cpu else max(1, images)
        self._block_bytes = block_bytes
        self._sum = _Sum() if torch.is_grad_enabled() and doubled.requires_grad else None
        self.doubled = _Summed.apply(doubled, self._sum) if self._sum is not None else doubled

    def rows(self, index: torch.Tensor) -> LocationScores:
        """The scores of the images ``index`` picks (a mask, or indices that may repeat)."""
        return LocationScores(self.doubled[index], self._block_bytes)

    def __call__(self, att_h2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        needs_grad = any(t.requires_grad for t in (self.doubled, att_h2, weight))
        if torch.is_grad_enabled() and needs_grad:
            if att_h2.shape[1] != 1:
                raise ValueError(f"scores with gradients take one row per image, not {att_h2.shape[1]}")
            return _Scores.apply(self.doubled, att_h2, weight, self._sum, self.block)
        return _forward(self.doubled, att_h2, weight.to(self.doubled.dtype), self.block)[1]
