"""The training objectives of the paper: eq. 14 (soft attention) and the eq. 12 learning rule (hard).

All terms are per caption: summed over its words (and, for the regulariser, over locations, as in
the paper; averaging over the L locations, as several public ports do, weakens it L-fold), then
averaged over the batch. ``mask`` (B, T) marks real steps, so padding contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import Teacher


@dataclass
class Terms:
    """The loss to minimise and its parts, per caption averaged over the batch (tensors, for logging)."""

    loss: torch.Tensor
    nll: torch.Tensor  # -log p(y | a), summed over the caption's words
    attention: torch.Tensor  # sum_i (1 - sum_t alpha_ti)^2
    log_likelihoods: torch.Tensor  # (B,) log p(y | s, a) per caption (hard: what the baseline tracks)
    entropy: torch.Tensor  # sum_t H[alpha_t]


def word_log_likelihoods(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log p(y_t | y_<t, a) of each target word, 0 at padding."""
    # One row of V logits per word (float32 even under bf16 autocast): over the (B, V, T) view that
    # cross_entropy's class dimension asks for, its CPU kernel ran 3x slower (a tenth of a training step).
    logp = -F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return logp.view_as(targets) * mask


def word_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) log p(y | a) of each caption: the log-probabilities of its target words, summed over real steps."""
    return word_log_likelihoods(logits, targets, mask).sum(1)


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sum_i (1 - sum_t alpha_ti)^2 over real steps t (eq. 14's penalty)."""
    coverage = (alphas * mask.unsqueeze(-1)).sum(1)
    return ((1.0 - coverage) ** 2).sum(1)


def attention_entropy(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sum_t H[alpha_t]: the entropy of each step's Multinoulli over locations."""
    h = -(alphas * torch.log(alphas.clamp_min(1e-12))).sum(-1)
    return (h * mask).sum(1)


def location_log_probabilities(alphas: torch.Tensor, picked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log alpha_t[s_t] of each step's sampled location (0 at steps with the expectation and padding)."""
    sampled = picked >= 0
    chosen = alphas.gather(-1, picked.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.log(chosen.clamp_min(1e-12)) * (mask * sampled)


def leave_one_out(gain: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``gain`` (B,) or (B, T) less the mean of the other ``rows`` (B,) (bool), step by step; 0 outside ``rows``
    and where a row is alone."""
    rows = rows.view(-1, *[1] * (gain.dim() - 1))
    n = rows.sum()
    total = (gain * rows).sum(0)
    others = (total - gain) / (n - 1).clamp(min=1)
    return torch.where(rows & (n > 1), gain - others, torch.zeros_like(gain))


def to_go(gain: torch.Tensor) -> torch.Tensor:
    """(B, T) the sum of each row's ``gain`` from step t to its end: what the location of step t can change."""
    return gain.flip(1).cumsum(1).flip(1)


def soft_objective(out: Teacher, targets: torch.Tensor, mask: torch.Tensor, alpha_c: float) -> Terms:
    """L_d = -log p(y | a) + lambda sum_i (1 - sum_t alpha_ti)^2 (eq. 14)."""
    ll = word_log_likelihood(out.logits, targets, mask)
    penalty = doubly_stochastic(out.alphas, mask)
    loss = (-ll + alpha_c * penalty).mean()
    with torch.no_grad():
        entropy = attention_entropy(out.alphas, mask).mean()
    return Terms(loss, -ll.mean().detach(), penalty.mean().detach(), ll.detach(), entropy)


def hard_objective(
    out: Teacher,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    baseline: float | None,
    lambda_r: float,
    lambda_e: float,
    alpha_c: float = 0.0,
    expected: torch.Tensor | None = None,
    reward_to_go: bool = False,
) -> Terms:
    """A surrogate whose gradient is the eq. 12 learning rule, averaged over the batch's N captions:

    d log p(y|s,a)/dW + lambda_r (log p(y|s,a) - b) d log p(s|a)/dW + lambda_e dH[s]/dW.

    ``baseline`` is per word (None, the first batch: the batch's mean), so b = baseline x the caption's
    words: batches hold captions of one length (the length dictionary), and a baseline per caption would
    reward every caption of a short batch and punish every one of a long batch for its length alone.
    The REINFORCE term applies to the captions whose locations were sampled; captions that used the
    expected context (the paper's 0.5-probability trick) get the exact gradient through alpha instead.

    ``expected`` (B, T), when given, is each caption's log p(y_t | y_<t, a) under the expected context (no
    sampling): a control variate of the caption itself, so its difficulty cancels from the reward, which
    becomes how much better the sampled locations did than the expectation, less the mean of that over the
    batch's other sampled captions (leave-one-out, which keeps the gradient unbiased). ``baseline`` is then
    unused.

    ``reward_to_go``: the location of step t is rewarded by the words from t on instead of the whole caption
    (the words before t do not depend on it, so the estimate stays unbiased and loses their noise).
    """
    steps = word_log_likelihoods(out.logits, targets, mask)
    ll = steps.sum(1)
    entropy = attention_entropy(out.alphas, mask)
    penalty = doubly_stochastic(out.alphas, mask)
    scores = location_log_probabilities(out.alphas, out.picked, mask)
    per_word = (ll.detach().sum() / mask.sum() if baseline is None else baseline) if expected is None else None
    if reward_to_go:
        gain = to_go(steps.detach() - (per_word * mask if expected is None else expected))
        reinforce = (lambda_r * _baselined(gain, out.picked, expected) * scores).sum(1)
    else:
        gain = ll.detach() - (per_word * mask.sum(1) if expected is None else expected.sum(1))
        reinforce = lambda_r * _baselined(gain, out.picked, expected) * scores.sum(1)
    surrogate = ll + reinforce + lambda_e * entropy - alpha_c * penalty
    return Terms(-surrogate.mean(), -ll.mean().detach(), penalty.mean().detach(), ll.detach(), entropy.mean().detach())


def _baselined(gain: torch.Tensor, picked: torch.Tensor, expected: torch.Tensor | None) -> torch.Tensor:
    """The reward: ``gain`` itself against a per-word baseline, or less the other sampled captions' mean gain."""
    return gain if expected is None else leave_one_out(gain, picked.ge(0).any(1))
