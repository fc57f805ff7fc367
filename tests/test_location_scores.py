"""The attention's scores computed a block of images at a time equal the eager operations they replace."""

from __future__ import annotations

import pytest
import torch

from show_attend_tell.location_scores import BLOCK_BYTES, LocationScores


def eager(doubled: torch.Tensor, att_h2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The three operations as written before: (images, rows, A) sums of U_a h -> (images, rows, L) scores."""
    return torch.nn.functional.linear(torch.sigmoid(doubled.unsqueeze(1) + att_h2.unsqueeze(2)), weight).squeeze(-1)


def steps(scores_of, projected: torch.Tensor, hs: list[torch.Tensor], u: torch.Tensor, w: torch.Tensor):
    """A recurrence's use: every step scores all locations from its own h, the softmax feeds a loss."""
    loss = 0
    for h in hs:
        scores = scores_of(2 * projected, 2 * (h @ u).unsqueeze(1), w)
        weights = torch.arange(scores.shape[-1], dtype=scores.dtype)
        loss = loss + (torch.softmax(2 * scores, -1) * weights).sum()
    return loss


def gradients(scores_of, dtype=torch.float32, images=6, locations=9, dim=32, hidden=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    projected = torch.randn(images, locations, dim, generator=gen, dtype=dtype).requires_grad_()
    hs = [torch.randn(images, hidden, generator=gen, dtype=dtype) for _ in range(4)]
    u = torch.randn(hidden, dim, generator=gen, dtype=dtype).requires_grad_()
    w = torch.randn(1, dim, generator=gen).requires_grad_()
    loss = steps(scores_of, projected, hs, u, w.to(dtype) if scores_of is eager else w)
    loss.backward()
    return loss.detach(), projected.grad, u.grad, w.grad


def one_per_pass(block_bytes: int = BLOCK_BYTES):
    """Scores as the model takes them: one LocationScores for all steps of a pass, built at the first."""
    built: list[LocationScores] = []

    def scores_of(doubled, att_h2, weight):
        if not built:
            built.append(LocationScores(doubled, block_bytes))
        return built[0](att_h2, weight)

    return scores_of


@pytest.mark.parametrize("images_per_block", [1, 4, 6])
def test_training_steps_give_the_eager_scores_and_gradients_bit_for_bit(images_per_block):
    # A block of 1 and 4 of the 6 images (the last block short), and all 6 as one. A = 32, as the models' A (512) a
    # multiple of a vector register's floats, so no element falls in a kernel's scalar tail in one and not the other.
    blocked = gradients(one_per_pass(block_bytes=images_per_block * 9 * 32 * 4))
    for ours, theirs in zip(blocked, gradients(eager), strict=True):
        assert torch.equal(ours, theirs)


def test_in_bfloat16_they_follow_the_eager_operations_and_w_gets_a_float32_gradient():
    got = gradients(one_per_pass(), dtype=torch.bfloat16)
    want = gradients(eager, dtype=torch.bfloat16)
    assert got[-1].dtype == torch.float32
    for ours, theirs in zip(got, want, strict=True):
        assert torch.allclose(ours.float(), theirs.float(), rtol=0.02, atol=0.02 * theirs.abs().max().item())


def test_several_rows_per_image_decode_without_gradients_to_the_eager_scores():
    six = 6 * 9 * 32 * 4  # a block of 6 images of one row: of 2 images of 3 rows
    doubled, att_h2, w = torch.randn(5, 9, 32), torch.randn(5, 3, 32), torch.randn(1, 32)
    with torch.no_grad():
        assert torch.equal(LocationScores(doubled, six)(att_h2, w), eager(doubled, att_h2, w))
        picked = torch.tensor([4, 0, 0, 2])  # beams of some images kept, one twice
        kept = LocationScores(doubled, six).rows(picked)
        assert torch.equal(kept(att_h2[picked], w), eager(doubled[picked], att_h2[picked], w))


def test_gradients_reach_u_and_w_when_the_annotations_need_none():
    doubled, w = torch.randn(3, 9, 8), torch.randn(1, 8, requires_grad=True)
    att_h2 = torch.randn(3, 1, 8, requires_grad=True)
    LocationScores(doubled)(att_h2, w).square().sum().backward()
    ref_h, ref_w = att_h2.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    eager(doubled, ref_h, ref_w).square().sum().backward()
    assert torch.equal(att_h2.grad, ref_h.grad) and torch.equal(w.grad, ref_w.grad)


def test_scores_with_gradients_take_one_row_per_image():
    scores = LocationScores(torch.randn(2, 9, 8, requires_grad=True))
    with pytest.raises(ValueError, match="one row per image"):
        scores(torch.randn(2, 3, 8), torch.randn(1, 8))
