"""The demo set's scenes: which shapes an image holds, and where, before any pixel is drawn.

Each image has 1-3 distinct objects (``SHAPES`` x ``COLOURS`` x ``SIZES``) whose boxes lie apart
and inside the centre crop that feature extraction keeps, so the model sees every object; for every
pair one axis of the offset clearly dominates, so no stated relation is borderline.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")

#: Side of an object's box as a fraction of the image side (before a +-8% jitter).
SIZE_FRACTION = {"small": 0.18, "large": 0.38}
SIZE_JITTER = 0.08
#: Feature extraction resizes to shorter side 256 and keeps the centred 224 x 224 square.
CROP_FRACTION = 224 / 256
MARGIN_FRACTION = 0.02  # between the crop's edge and any object
GAP_FRACTION = 0.03  # between two objects' boxes
#: Relations are stated along the dominant axis of the box centres' offset; layouts where the
#: two axes are closer than this ratio for some pair are redrawn, so no relation is borderline.
DOMINANCE = 1.5


def crop_box(image_size: int) -> tuple[float, float]:
    """``(lo, hi)``: the centre crop kept by feature extraction, in pixels of the written image (both axes)."""
    side = image_size * CROP_FRACTION
    lo = (image_size - side) / 2
    return lo, lo + side


def relation(box_a: list[int] | tuple[int, ...], box_b: list[int] | tuple[int, ...]) -> str:
    """Where ``a`` is with respect to ``b`` (``left``, ``right``, ``above``, ``below``), from the box centres.

    The dominant axis of the offset between the centres decides (image y grows downwards).
    """
    dx, dy = _centre_offset(box_a, box_b)
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


def _centre_offset(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> tuple[float, float]:
    """``(dx, dy)`` from the centre of box ``a`` to the centre of box ``b``: what relations are read from."""
    return (b[0] + b[2]) / 2 - (a[0] + a[2]) / 2, (b[1] + b[3]) / 2 - (a[1] + a[3]) / 2


def draw_scene(rng: np.random.Generator, size: int) -> list[dict]:
    """1-3 distinct objects with nominal boxes placed inside the crop, apart, with clear relations."""
    lo, hi = crop_box(size)
    margin = max(1, round(MARGIN_FRACTION * size))
    region_lo, region_hi = math.ceil(lo) + margin, math.floor(hi) - margin
    gap = max(1, round(GAP_FRACTION * size))
    while True:
        n = int(rng.integers(1, 4))
        objects: list[dict] = []
        seen: set[tuple[str, str, str]] = set()
        while len(objects) < n:
            obj = {
                "shape": SHAPES[rng.integers(len(SHAPES))],
                "colour": COLOURS[rng.integers(len(COLOURS))],
                "size": SIZES[rng.integers(len(SIZES))],
            }
            key = (obj["size"], obj["colour"], obj["shape"])
            if key not in seen:
                seen.add(key)
                objects.append(obj)
        for obj in objects:
            frac = SIZE_FRACTION[obj["size"]] * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
            obj["side"] = max(4, round(frac * size))
        if _place(rng, objects, region_lo, region_hi, gap):
            return objects


def _place(rng: np.random.Generator, objects: list[dict], lo: int, hi: int, gap: int) -> bool:
    """Give each object a nominal ``box``; False when no layout was found in a few tries."""
    for _ in range(20):
        boxes: list[tuple[int, int, int, int]] = []
        for obj in objects:
            s = obj["side"]
            if hi - lo < s:
                return False
            for _ in range(50):
                x0, y0 = (int(v) for v in rng.integers(lo, hi - s + 1, size=2))
                box = (x0, y0, x0 + s, y0 + s)
                if all(_apart(box, other, gap) and _dominant(box, other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == len(objects):
            for obj, box in zip(objects, boxes):
                obj["box"] = box
            return True
    return False


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _dominant(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    dx, dy = (abs(d) for d in _centre_offset(a, b))
    return max(dx, dy) >= DOMINANCE * min(dx, dy)
