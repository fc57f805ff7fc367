"""Does the model talk about, and look at, the objects that are there? Measured on the demo set's boxes.

- naming: the share of images whose caption names only shapes that are in the image (and at least one);
- pointing game: for each emitted shape word, whether the most attended grid cell of that step lies
  inside the box of an object of that shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .demo import SHAPES
from .encoders import resize_shorter


@dataclass
class Grounding:
    images: int
    naming: float  # share of images whose shape words all refer to shapes present (and name one at least)
    pointing: float  # share of emitted shape words whose attention peak lies on an object of that shape
    shape_words: int


def cell_centres(grid: tuple[int, int], image_size: int, crop: int) -> np.ndarray:
    """(H*W, 2) x, y centres of the feature grid's cells in pixels of a square ``image_size`` picture.

    Feature extraction resized it to ``resize_shorter(crop)`` and cut the centred ``crop`` square.
    """
    h, w = grid
    scale = image_size / resize_shorter(crop)
    offset = (resize_shorter(crop) - crop) / 2
    ys, xs = np.meshgrid((np.arange(h) + 0.5) * crop / h, (np.arange(w) + 0.5) * crop / w, indexing="ij")
    return np.stack([(xs.ravel() + offset) * scale, (ys.ravel() + offset) * scale], axis=1)


def measure(captions: dict[str, list[str]], alphas: dict[str, np.ndarray], objects: dict[str, list[dict]],
            centres: np.ndarray) -> Grounding:
    """``captions``: image file -> emitted words; ``alphas``: file -> (n_words + 1, L); ``objects``: file -> boxes."""
    named_right, hits, words = 0, 0, 0
    for file, tokens in captions.items():
        present = {o["shape"] for o in objects[file]}
        shapes = [(t, w) for t, w in enumerate(tokens) if w in SHAPES]
        named_right += bool(shapes) and all(w in present for _, w in shapes)
        for t, word in shapes:
            x, y = centres[int(np.argmax(alphas[file][t]))]
            boxes = [o["bbox"] for o in objects[file] if o["shape"] == word]
            hits += any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in boxes)
            words += 1
    n = len(captions)
    return Grounding(n, named_right / n if n else 0.0, hits / words if words else 0.0, words)
