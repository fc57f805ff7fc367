"""Self-critical fine-tuning (Rennie et al., 2017): the captions the model samples, rewarded by their CIDEr-D.

Cross-entropy training teaches the next word given the reference's words; decoding feeds the model its
own. After the cross-entropy epochs, a few epochs of REINFORCE on whole sampled captions close that gap
and optimise the measure the epochs are selected on. Each image gets ``samples`` captions drawn from
p(y | a) (the decoder's own distribution, without dropout, with the expected context as in decoding);
each is rewarded by its CIDEr-D against the image's references, less the mean reward of the image's
other samples (a baseline that needs no greedy decoding and keeps the gradient unbiased).

CIDEr-D here is the variant of Vedantam et al. that SCST and the coco-caption toolkit's CiderD use:
tf-idf n-gram vectors (n = 1..4) with document frequencies over the training images' references,
candidate counts clipped at the reference's, and a Gaussian penalty on the length difference (sigma 6).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import numpy as np
import torch

from . import objectives, precision
from .data import Features
from .decode import banned_ids
from .distributed import World
from .minibatch import BatchSums, global_sums
from .model import Captioner
from .settings import Settings
from .text import END, PAD, START

MAX_N = 4
SIGMA = 6.0

Vector = list[dict[tuple[str, ...], float]]  # per n: n-gram -> tf-idf weight


def _counts(words: list[str]) -> list[Counter]:
    return [Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)) for n in range(1, MAX_N + 1)]


class CiderD:
    """CIDEr-D of candidate captions against the references of their images, idf from those references."""

    def __init__(self, references: dict[int, list[str]]) -> None:
        words = {i: [r.split() for r in refs] for i, refs in references.items()}
        counts = {i: [_counts(w) for w in refs] for i, refs in words.items()}
        self.frequency: Counter = Counter()  # images whose references hold each n-gram
        for per_ref in counts.values():
            self.frequency.update(set().union(*(set(c) for ref in per_ref for c in ref)))
        self.log_images = math.log(float(len(references)))
        self.references = {i: [self._vector(c, len(w)) for c, w in zip(counts[i], words[i])] for i in references}

    def _vector(self, counts: list[Counter], length: int) -> tuple[Vector, list[float], int]:
        # The toolkit measures a caption's length as its number of bigrams: words - 1, and 0 when it is empty.
        length = max(length - 1, 0)
        vec = [
            {g: tf * (self.log_images - math.log(max(1.0, self.frequency.get(g, 0.0)))) for g, tf in c.items()}
            for c in counts
        ]
        return vec, [math.sqrt(sum(v * v for v in n.values())) for n in vec], length

    def score(self, image: int, words: list[str]) -> float:
        """CIDEr-D (x10, as the toolkit reports it) of the caption ``words`` of image ``image``."""
        hyp, hyp_norm, hyp_len = self._vector(_counts(words), len(words))
        total = 0.0
        for ref, ref_norm, ref_len in self.references[image]:
            penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * SIGMA**2))
            for n in range(MAX_N):
                if hyp_norm[n] and ref_norm[n]:
                    r = ref[n]
                    dot = sum(min(v, r[g]) * r[g] for g, v in hyp[n].items() if g in r)
                    total += penalty * dot / (hyp_norm[n] * ref_norm[n])
        return 10.0 * total / (MAX_N * len(self.references[image]))


@torch.no_grad()
def sample(
    model: Captioner, features: torch.Tensor, vocab: list[str], *, samples: int, max_length: int
) -> torch.Tensor:
    """(B x samples, T) captions drawn from p(y | a): word ids ending in <end>, then <pad>; rows of an image adjacent.

    A caption still going after ``max_length`` words is ended there. <pad>, <start> and <unk> are never drawn
    (as in decoding). Captions that have ended leave the batch, so the few long ones do not keep all running.
    """
    rows, device = features.shape[0] * samples, features.device
    start, end, pad = vocab.index(START), vocab.index(END), vocab.index(PAD)
    banned = torch.tensor(banned_ids(vocab), device=device)
    ctx = model.context(features)
    h, c = (x.repeat_interleave(samples, 0) for x in model.initial_state(ctx))
    ctx = ctx.rows(torch.arange(features.shape[0], device=device).repeat_interleave(samples))
    drawn = torch.full((rows, max_length + 1), pad, dtype=torch.long, device=device)
    words = torch.full((rows,), start, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)
    for t in range(max_length + 1):
        embedded = model.embed(words)
        step = model.step(ctx, h, c, model.gates_y(embedded))
        if t == max_length:
            words = torch.full_like(words, end)
        else:
            logits = model.logits(embedded, step.h, step.z).float()
            logits[:, banned] = -torch.inf
            words = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
        drawn[active, t] = words
        going = words != end
        if not going.any():
            break
        if not going.all():
            active, ctx = active[going], ctx.rows(going)
        words, h, c = words[going], step.h[going], step.c[going]
    return drawn[:, : t + 1]


def rewards(scorer: CiderD, images: np.ndarray, tokens: torch.Tensor, vocab: list[str], samples: int) -> np.ndarray:
    """(B x samples,) CIDEr-D of each sampled caption against its image's references."""
    end = vocab.index(END)
    out = np.empty(len(tokens))
    for row, ids in enumerate(tokens.tolist()):  # every sample ends in <end>
        out[row] = scorer.score(int(images[row // samples]), [vocab[w] for w in ids[: ids.index(end)]])
    return out


def advantages(reward: np.ndarray, samples: int) -> np.ndarray:
    """Each sample's reward less the mean of its image's other samples."""
    per_image = reward.reshape(-1, samples)
    others = (per_image.sum(1, keepdims=True) - per_image) / (samples - 1)
    return (per_image - others).reshape(-1)


def policy_gradient(
    net: torch.nn.Module,
    features: torch.Tensor,
    tokens: torch.Tensor,
    advantage: torch.Tensor,
    vocab: list[str],
    *,
    samples: int,
    precision_name: str,
    alpha_c: float = 0.0,
    chunk: int = 64,
    weight: float = 1.0,
) -> objectives.Terms:
    """Accumulate the gradient of ``weight`` x the self-critical loss; its terms, detached.

    The loss is -mean(advantage x log p(sampled caption)) + alpha_c x eq. 14's penalty, over the words and
    the <end> each caption drew. ``net`` runs teacher-forced on the samples with the words :func:`sample`
    never draws out of the softmax, so that the gradient is that of the distribution sampled. The captions
    go through in ``chunk``s of similar length (sorted), each cut to its longest, so that little is padding;
    under DDP the gradients are averaged over the processes once, after the last chunk.
    """
    start, end = vocab.index(START), vocab.index(END)
    inputs = torch.cat([torch.full_like(tokens[:, :1], start), tokens[:, :-1]], 1)
    ended = (tokens == end).long().cumsum(1)
    mask = ((ended == 0) | ((ended == 1) & (tokens == end))).float()
    targets = torch.where(mask > 0, tokens, torch.full_like(tokens, end))
    banned = torch.zeros(len(vocab), dtype=torch.bool, device=tokens.device)
    banned[banned_ids(vocab)] = True
    lengths = mask.sum(1).long()
    parts = torch.argsort(lengths, stable=True).split(chunk)
    ll = torch.zeros(len(tokens), device=tokens.device)
    penalty, entropy = torch.zeros_like(ll), torch.zeros_like(ll)
    for i, rows in enumerate(parts):
        steps = int(lengths[rows].max())
        sync = contextlib.nullcontext() if i == len(parts) - 1 or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            with precision.autocast(features.device, precision_name):
                out = net(features[rows // samples], inputs[rows, :steps])
            m = mask[rows, :steps]
            part_ll = objectives.word_log_likelihood(
                out.logits.float().masked_fill(banned, -torch.inf), targets[rows, :steps], m
            )
            part_penalty = objectives.doubly_stochastic(out.alphas, m)
            loss = (-(advantage[rows] * part_ll).sum() + alpha_c * part_penalty.sum()) / len(tokens)
            if math.isfinite(float(loss.detach())):
                (loss * weight).backward()
        ll[rows], penalty[rows] = part_ll.detach(), part_penalty.detach()
        entropy[rows] = objectives.attention_entropy(out.alphas.detach(), m)
    total = -(advantage * ll).mean() + alpha_c * penalty.mean()
    return objectives.Terms(total, -ll.mean(), penalty.mean(), ll, entropy.mean())


def backward(
    net: torch.nn.Module,
    features: Features,
    images: np.ndarray,
    critic: CiderD,
    vocab: list[str],
    settings: Settings,
    world: World,
    stop: bool = False,
    precision_name: str = "float32",
) -> BatchSums:
    """Gradients of the self-critical loss over the global minibatch of ``images``, this process's share of it.

    The model samples without dropout and is trained without it, so that the gradient is that of the
    distribution the captions were drawn from.
    """
    mine, weight = world.share(images)
    model = getattr(net, "module", net)  # sampling runs no backward pass: DDP's forward would expect one
    feats = features[mine].to(world.device, non_blocking=True).float()
    k = settings.self_critical_samples
    net.eval()
    try:
        with precision.autocast(world.device, precision_name):
            tokens = sample(model, feats, vocab, samples=k, max_length=settings.max_decode_length)
        reward = rewards(critic, mine, tokens, vocab, k)
        advantage = torch.from_numpy(advantages(reward, k)).float().to(world.device)
        terms = policy_gradient(
            net,
            feats,
            tokens,
            advantage,
            vocab,
            samples=k,
            precision_name=precision_name,
            alpha_c=settings.alpha_c,
            chunk=settings.batch_size,
            weight=weight,
        )
    finally:
        net.train()
    words = float((tokens != vocab.index(PAD)).sum())  # each caption's words and its <end>
    return global_sums(terms, world, weight, len(tokens), words, stop, float(reward.sum()))


def image_batches(images: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """A self-critical epoch: every training image once, in batches of ``batch_size``, ordered by (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(images)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
