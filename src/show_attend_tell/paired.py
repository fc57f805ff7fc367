"""Two captioners' scores on the same images, and how far apart they could be by the images alone.

A gap of 0.015 CIDEr between two models on 1000 val photos may be the photos drawn rather than the models: a
paired bootstrap draws the images again with replacement, the same draw for both models, and takes the spread of
the difference over the draws. Each metric is a sum over images, so a draw is a vector of image counts and every
score of it one product: CIDEr-D is the mean of the images' CIDEr-D (idf from the references alone, so both models
share it), the paper's BLEU-4 is the geometric mean of the n-gram precisions summed over the images (no brevity
penalty, as Table 1 reports it), and ``meteor_image_mean`` is the mean of the images' METEOR: pycocoevalcap's corpus
METEOR (the metrics CSV's) pools the matches of all images before its fragmentation penalty, which no sum of
per-image numbers gives, and on Flickr8k val it is about 0.015 below that mean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor

from .atomic import atomic_output
from .errors import SatError
from .metrics import BLEU_ORDER, bleu_statistics, check_ids, java_on_path, ptb_tokenize, read_results, split_references

log = logging.getLogger(__name__)

COLUMNS = ("metric", "a", "b", "b_minus_a", "low", "high")
DRAWS_AT_ONCE = 500  # bootstrap draws per product: (500, images) counts, a few MB for 1000 images


@dataclass(frozen=True)
class ImageScores:
    """Each image's share of the corpus scores, rows in the order of ``images``."""

    images: tuple[int, ...]
    cider: np.ndarray  # (n,) CIDEr-D of the image's caption
    meteor: np.ndarray  # (n,) METEOR of the image's caption
    clipped: np.ndarray  # (n, 4) its n-grams that the references have (clipped counts), orders 1..4
    total: np.ndarray  # (n, 4) all its n-grams

    def corpus(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """The scores of the corpora that hold image i counts[:, i] times ((draws, n) -> (draws,) each)."""
        n = counts.sum(1)
        precision = (counts @ self.clipped) / np.maximum(counts @ self.total, 1)
        bleu4 = np.exp(np.log(np.maximum(precision, 1e-15)).mean(1))
        return {"bleu4": bleu4, "meteor_image_mean": counts @ self.meteor / n, "cider": counts @ self.cider / n}


def image_scores(references: dict[int, list[str]], hypotheses: dict[int, str]) -> ImageScores:
    """Each image's CIDEr-D, METEOR and BLEU counts, on PTB-tokenised text as the evaluate stage scores it."""
    check_ids(references, hypotheses)
    with java_on_path():
        refs, hyps = ptb_tokenize(references, hypotheses)
        images = tuple(sorted(hyps))
        _, meteor = Meteor().compute_score({i: refs[i] for i in images}, {i: [hyps[i]] for i in images})
    _, cider = Cider().compute_score({i: refs[i] for i in images}, {i: [hyps[i]] for i in images})
    counts = [bleu_statistics({i: refs[i]}, {i: hyps[i]}) for i in images]
    return ImageScores(
        images,
        np.asarray(cider, dtype=np.float64),
        np.asarray(meteor, dtype=np.float64),
        np.array([c.clipped for c in counts], dtype=np.float64).reshape(-1, BLEU_ORDER),
        np.array([c.total for c in counts], dtype=np.float64).reshape(-1, BLEU_ORDER),
    )


def paired_bootstrap(a: ImageScores, b: ImageScores, draws: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Each metric of ``a`` and ``b``, b - a, and the central 95% of b - a over ``draws`` redraws of the images."""
    if a.images != b.images:
        raise SatError("the two models' captions must be of the same images")
    rng = np.random.default_rng(seed)
    n = len(a.images)
    whole = np.ones((1, n))
    differences: dict[str, list[np.ndarray]] = {}
    for start in range(0, draws, DRAWS_AT_ONCE):
        counts = rng.multinomial(n, np.full(n, 1 / n), size=min(DRAWS_AT_ONCE, draws - start)).astype(np.float64)
        first, second = a.corpus(counts), b.corpus(counts)
        for metric in first:
            differences.setdefault(metric, []).append(second[metric] - first[metric])
    rows = []
    for metric, parts in differences.items():
        low, high = np.quantile(np.concatenate(parts), [0.025, 0.975])
        score_a, score_b = a.corpus(whole)[metric][0], b.corpus(whole)[metric][0]
        rows.append((metric, score_a, score_b, score_b - score_a, low, high))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def compare(
    captions_csv: str | Path,
    results_a: str | Path,
    results_b: str | Path,
    split: str,
    out_csv: str | Path | None = None,
    draws: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """Two models' captions of ``split`` (COCO results JSONs) scored side by side with paired bootstrap intervals."""
    if draws < 1:
        raise SatError(f"draws must be at least 1, not {draws}")
    references = split_references(captions_csv, split)
    scores = []
    for path in (results_a, results_b):
        hypotheses = read_results(path)
        if hypotheses.keys() != references.keys():
            missing, extra = (
                sorted(references.keys() - hypotheses.keys()),
                sorted(hypotheses.keys() - references.keys()),
            )
            raise SatError(
                f"{path} must caption exactly the {len(references)} {split} images of {captions_csv}: "
                f"{len(missing)} have no caption {missing[:10]}, {len(extra)} are not {split} images {extra[:10]}"
            )
        scores.append(image_scores(references, hypotheses))
    table = paired_bootstrap(*scores, draws=draws, seed=seed)
    if out_csv is not None:
        with atomic_output(out_csv) as tmp:
            table.to_csv(tmp, index=False)
    log.info("%s: %d images, %d bootstrap draws of them (seed %d)", split, len(references), draws, seed)
    return table
