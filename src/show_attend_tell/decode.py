"""Caption generation from a trained captioner, a whole batch of images at once.

Decoding always uses the expected context (hard attention models too): the deterministic
counterpart of the sampled location, which the hard model also sees during training (the paper's
0.5-probability trick). ``<pad>``, ``<start>`` and ``<unk>`` are never emitted: a caption that says
"a <unk> on the grass" would score on words it does not contain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import Captioner
from .text import END, PAD, START, UNK


@dataclass
class Decoded:
    """Word ids (without <start>/<end>) and the attention of each emitted word, per image."""

    tokens: list[list[int]]
    alphas: list[np.ndarray]  # (n_words + 1, L): one row per emitted word, the last for <end>


def banned_ids(vocab: list[str]) -> list[int]:
    return [vocab.index(w) for w in (PAD, START, UNK)]


@torch.no_grad()
def greedy(model: Captioner, features: torch.Tensor, vocab: list[str], max_length: int) -> Decoded:
    """The most probable word at each step, until <end> or ``max_length`` words, for (B, L, D) ``features``."""
    start, end = vocab.index(START), vocab.index(END)
    ctx = model.context(features)
    h, c = model.initial_state(ctx)
    batch = features.shape[0]
    words = torch.full((batch,), start, dtype=torch.long, device=features.device)
    banned = torch.tensor(banned_ids(vocab), device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    emitted, alphas = [], []
    for _ in range(max_length + 1):
        embedded = model.embed(words)
        step = model.step(ctx, h, c, model.gates_y(embedded))
        h, c = step.h, step.c
        logits = model.logits(embedded, h, step.z)
        logits[:, banned] = -torch.inf
        words = torch.where(done, end, logits.argmax(-1))
        emitted.append(words)
        alphas.append(step.alpha)
        done |= words == end
        if done.all():
            break
    ids = torch.stack(emitted, 1).cpu().numpy()
    att = torch.stack(alphas, 1).float().cpu().numpy()
    tokens, kept = [], []
    for row in range(batch):
        stops = np.flatnonzero(ids[row] == end)
        n = int(stops[0]) if stops.size else min(max_length, ids.shape[1])
        tokens.append(ids[row, :n].tolist())
        kept.append(att[row, : n + 1])
    return Decoded(tokens, kept)
