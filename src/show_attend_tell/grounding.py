"""Does the model talk about, and look at, the objects that are there? Measured with the demo set's boxes.

- naming: the share of images whose caption names at least one shape and only shapes in the image;
- pointing game: for each emitted shape word whose shape occurs once in the image, whether the most
  attended grid cell of that step lies inside that object's box.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .atomic import atomic_output
from .demo_scene import SHAPES
from .encoders import resize_shorter

log = logging.getLogger(__name__)


@dataclass
class Grounding:
    images: int
    naming: float  # share of images whose shape words all refer to shapes present (and name one at least)
    pointing: float  # share of unique-object shape words whose attention peak lies in the object's box
    pointed_words: int  # shape words that the pointing game counted


def cell_centres(grid: tuple[int, int], image_size: int, crop: int) -> np.ndarray:
    """(H*W, 2) x, y centres of the feature grid's cells in pixels of a square ``image_size`` picture.

    Feature extraction resized it to ``resize_shorter(crop)`` and cut the centred ``crop`` square.
    """
    h, w = grid
    scale = image_size / resize_shorter(crop)
    offset = (resize_shorter(crop) - crop) / 2
    ys, xs = np.meshgrid((np.arange(h) + 0.5) * crop / h, (np.arange(w) + 0.5) * crop / w, indexing="ij")
    return np.stack([(xs.ravel() + offset) * scale, (ys.ravel() + offset) * scale], axis=1)


def measure(
    captions: dict[str, list[str]], alphas: dict[str, np.ndarray], objects: dict[str, list[dict]], centres: np.ndarray
) -> Grounding:
    """``captions``: image file -> emitted words; ``alphas``: file -> (rows >= words, L); ``objects``: file -> boxes."""
    named_right, hits, pointed = 0, 0, 0
    for file, words in captions.items():
        present = [o["shape"] for o in objects[file]]
        shapes = [(t, w) for t, w in enumerate(words) if w in SHAPES]
        named_right += bool(shapes) and all(w in present for _, w in shapes)
        for t, word in shapes:
            if present.count(word) != 1:
                continue
            ((x0, y0, x1, y1),) = (o["bbox"] for o in objects[file] if o["shape"] == word)
            x, y = centres[int(np.argmax(alphas[file][t]))]
            hits += x0 <= x <= x1 and y0 <= y <= y1
            pointed += 1
    n = len(captions)
    return Grounding(n, named_right / n if n else 0.0, hits / pointed if pointed else 0.0, pointed)


def score_split(attention_h5: str | Path, objects_json: str | Path, out_csv: str | Path) -> Grounding:
    """Grounding of a decoded demo split, as a one-row CSV."""
    with open(objects_json, encoding="utf-8") as f:
        objects = json.load(f)
    with h5py.File(attention_h5, "r") as f:
        files = [Path(p).name for p in f["files"].asstr()[:]]
        captions = dict(zip(files, (c.split() for c in f["captions"].asstr()[:])))
        alphas = dict(zip(files, f["alphas"][:].astype(np.float32)))
        centres = cell_centres(tuple(f.attrs["grid"]), objects["image_size"], int(f.attrs["image_size"]))
        split = f.attrs["split"]
    result = measure(captions, alphas, objects["images"], centres)
    with atomic_output(out_csv) as tmp:
        pd.DataFrame([{"split": split, **asdict(result)}]).to_csv(tmp, index=False)
    log.info(
        "%s: names only present shapes in %.1f%% of images; pointing game %.1f%% of %d words",
        split,
        100 * result.naming,
        100 * result.pointing,
        result.pointed_words,
    )
    return result
