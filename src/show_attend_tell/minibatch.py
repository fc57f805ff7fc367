"""One training minibatch: its seeded randomness, its loss, and the gradients of its mean over every process."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import objectives, precision
from .data import Captions, Features, teacher_batch
from .distributed import World
from .settings import Settings


def seed_step(seed: int, epoch: int, step: int, rank: int) -> None:
    """Seed the step's randomness (dropout, hard attention's samples) from where it is, not from what came before.

    A resumed run, with any number of processes, thus draws what an uninterrupted one would; each
    process draws its own.
    """
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0]))


@dataclass(frozen=True)
class BatchSums:
    """One minibatch's sums over every process: the terms summed over its captions (not averaged)."""

    loss: float  # the global batch's mean loss
    nll: float
    attention: float
    entropy: float
    log_likelihood: float
    captions: int
    words: int
    stop: bool  # some process was asked to stop
    reward: float = 0.0  # self-critical epochs: the sampled captions' CIDEr-D, summed


def backward(
    net: torch.nn.Module,
    captions: Captions,
    features: Features,
    rows: np.ndarray,
    settings: Settings,
    baseline: float | None,
    world: World,
    stop: bool = False,
    precision_name: str = "float32",
) -> BatchSums:
    """Gradients of the mean loss over the global minibatch ``rows``, of which this process computes its share.

    Hard attention's baseline (per word) None (the first batch) is the global batch's mean log-likelihood per word.
    """
    mine, weight = world.share(rows)
    device = world.device
    inputs, targets, mask = (t.to(device, non_blocking=True) for t in teacher_batch(captions, mine))
    feats = features[captions.image_index[mine]].to(device, non_blocking=True).float()
    hard = settings.attention == "hard"
    sample_rows = (torch.rand(len(mine)) >= settings.semi_sampling_p).to(device) if hard else None
    # The expected-context baseline drops the units this pass drops: a reward that also measured how two dropout
    # draws differ would be mostly that noise (at dropout 0.4, std 1.3 nats per caption against 1.7 from the locations).
    shared = hard and settings.baseline == "expected_context"
    dropped = getattr(net, "module", net).dropout_mask(*inputs.shape, device) if shared else None
    with precision.autocast(device, precision_name):
        out = net(feats, inputs, sample_rows=sample_rows, dropped=dropped)
    real = float(weight > 0)  # 0: this process only joins the reduction
    if hard:
        expected = _expected_log_likelihood(
            net, feats, inputs, targets, mask, sample_rows, precision_name, settings, dropped
        )
        if baseline is None and expected is None:
            ll = objectives.word_log_likelihood(out.logits, targets, mask)
            total, count = world.sum([float(ll.detach().sum()) * real, float(mask.sum()) * real])
            baseline = total / count
        terms = objectives.hard_objective(
            out,
            targets,
            mask,
            baseline=baseline,
            lambda_r=settings.lambda_r,
            lambda_e=settings.lambda_e,
            alpha_c=settings.alpha_c,
            expected=expected,
            reward_to_go=settings.reward_to_go,
        )
    else:
        terms = objectives.soft_objective(out, targets, mask, settings.alpha_c)
    sums = global_sums(terms, world, weight, len(mine), float(mask.sum()), stop)
    if math.isfinite(sums.loss):
        (terms.loss * weight).backward()
    return sums


def global_sums(
    terms: objectives.Terms,
    world: World,
    weight: float,
    captions: int,
    words: float,
    stop: bool,
    reward: float = 0.0,
) -> BatchSums:
    """This process's ``terms`` of its ``captions`` and ``words`` summed with every other process's.

    A process of ``weight`` 0 (left without rows of the batch) only joins the reduction.
    """
    real = float(weight > 0)
    n = captions * real
    loss, nll, attention, entropy, ll_sum, n_all, words, reward, stops = world.sum(
        [
            float(terms.loss.detach()) * weight / world.size,
            float(terms.nll) * n,
            float(terms.attention) * n,
            float(terms.entropy) * n,
            float(terms.log_likelihoods.sum()) * real,
            n,
            words * real,
            reward * real,
            float(stop),
        ]
    )
    return BatchSums(loss, nll, attention, entropy, ll_sum, int(n_all), int(words), stops > 0, reward)


def _expected_log_likelihood(
    net: torch.nn.Module,
    feats: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    sample_rows: torch.Tensor,
    precision_name: str,
    settings: Settings,
    dropped: torch.Tensor | None,
) -> torch.Tensor | None:
    """Hard attention's ``expected_context`` baseline: (B, T) log p(y_t | y_<t, a) of each word, expected context.

    One forward pass without gradients over the captions whose locations were sampled (the others need
    no baseline: they are 0 here), with the training pass's dropout ``dropped`` (None: none), so the reward
    measures the locations alone, and it draws no random numbers; None for the ``moving_average`` baseline.
    """
    if settings.baseline != "expected_context":
        return None
    expected = torch.zeros(inputs.shape, device=feats.device)
    if not sample_rows.any():
        return expected
    model = getattr(net, "module", net)  # DDP's own forward would expect a backward pass
    same = None if dropped is None else dropped[sample_rows]
    model.eval()
    try:
        with torch.no_grad(), precision.autocast(feats.device, precision_name):
            out = model(feats[sample_rows], inputs[sample_rows], dropped=same)
            expected[sample_rows] = objectives.word_log_likelihoods(out.logits, targets[sample_rows], mask[sample_rows])
    finally:
        model.train()
    return expected
