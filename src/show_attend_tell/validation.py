"""What training measures on the validation split after every epoch, and the score that selects the model.

Two kinds of measurement: the teacher-forced NLL of every validation caption (smooth, cheap, but
blind to what decoding makes of the model), and real decoding of the validation images scored with
BLEU-4 and CIDEr against their references (never teacher-forced argmax). ``select_on`` names the one
that picks the best epoch; the others are logged beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import objectives
from .data import Captions, Features, references, teacher_batch
from .decode import beam_search
from .distributed import World
from .errors import SatError
from .metrics import token_scores
from .model import Captioner

NLL_BATCH = 500  # validation captions per teacher-forced forward pass


@dataclass(frozen=True)
class ValidationSet:
    """The validation captions (in batches of one length) and images (with their tokenised references)."""

    batches: list[np.ndarray]  # caption rows
    references: dict[int, list[str]]  # image index -> its captions' words
    images: np.ndarray  # image indices decoded, in order


def validation_set(captions: Captions, captions_csv: str | Path, max_images: int | None) -> ValidationSet:
    refs = references(captions_csv, "val")
    if not refs:
        raise SatError(f"{captions_csv} has no validation captions to select the model on")
    images = np.array(sorted(refs)[:max_images], dtype=np.int64)
    refs = {int(i): refs[int(i)] for i in images}
    rows = np.flatnonzero(np.isin(captions.image_index, images) & (captions.splits == "val"))
    batches = []
    for length in np.unique(captions.lengths[rows]):
        same = rows[captions.lengths[rows] == length]
        batches += [same[i : i + NLL_BATCH] for i in range(0, len(same), NLL_BATCH)]
    return ValidationSet(batches, refs, images)


@torch.no_grad()
def measure(
    model: Captioner,
    captions: Captions,
    features: Features,
    vset: ValidationSet,
    *,
    beam_size: int,
    max_length: int,
    batch_size: int,
    world: World,
) -> dict[str, float]:
    """``nll_per_word`` (teacher-forced), ``bleu4`` and ``cider`` (decoded), the work shared among processes."""
    model.eval()
    nll = words = 0.0
    for rows in vset.batches[world.rank :: world.size]:
        inputs, targets, mask = (t.to(world.device) for t in teacher_batch(captions, rows))
        out = model(features[captions.image_index[rows]].to(world.device).float(), inputs)
        nll -= float(objectives.word_log_likelihood(out.logits, targets, mask).sum())
        words += float(mask.sum())
    nll, words = world.sum([nll, words])
    hypotheses = {}
    images = vset.images[world.rank :: world.size]
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        decoded = beam_search(
            model, features[batch].to(world.device).float(), captions.vocab, beam_size=beam_size, max_length=max_length
        )
        hypotheses.update({int(i): " ".join(captions.vocab[w] for w in ws) for i, ws in zip(batch, decoded.tokens)})
    model.train()
    return {"nll_per_word": nll / words, **token_scores(vset.references, world.merge(hypotheses))}


def selection_score(measured: dict[str, float], select_on: str) -> float:
    """The number the best epoch maximises: CIDEr, BLEU-4, or minus the NLL per word."""
    return -measured["nll_per_word"] if select_on == "nll" else measured[select_on]
