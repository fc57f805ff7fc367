"""The offline demo dataset: procedurally drawn scenes of coloured shapes with true captions.

Each image has 1-3 non-overlapping shapes (``SHAPES`` x ``COLOURS`` x ``SIZES``) on a textured,
low-contrast pastel background, all inside the centre crop that feature extraction keeps. The five
captions per image name the shapes, their colours and sizes and the spatial relations between them;
every caption is true of its image and every noun phrase picks out exactly one object in it.

``generate`` writes, atomically, one folder::

    images/demo_000000.jpg ...   RGB JPEGs, image_size x image_size
    dataset_demo.json            Karpathy's schema, as dataset_flickr8k.json
    objects.json                 the objects of each image with their pixel boxes (for grounding)

Everything about image ``i`` (pixels, objects, captions) comes from a generator seeded with
``(seed, i)``, so an image does not change when the split sizes do; only its split does.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_output, remove
from .errors import SatError
from .progress import progress_bar
from .text import tokenize

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")

#: Nominal RGB of each colour; each object jitters it by up to ``COLOUR_JITTER`` per channel.
COLOUR_RGB = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 215),
    "yellow": (240, 215, 30),
    "purple": (135, 45, 175),
    "orange": (245, 135, 20),
}
COLOUR_JITTER = 12
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
JPEG_QUALITY = 90
CAPTIONS_PER_IMAGE = 5
MIN_WORDS, MAX_WORDS = 4, 20

_REL_WORDS = {
    "left": (("left", "of"), ("to", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of")),
    "above": (("above",),),
    "below": (("below",), ("under",)),
}
_COUNT_WORDS = ("zero", "one", "two", "three")
_SUPSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges


def crop_box(image_size: int) -> tuple[float, float]:
    """``(lo, hi)``: the centre crop kept by feature extraction, in pixels of the written image (both axes)."""
    side = image_size * CROP_FRACTION
    lo = (image_size - side) / 2
    return lo, lo + side


def relation(box_a: list[int] | tuple[int, ...], box_b: list[int] | tuple[int, ...]) -> str:
    """Where ``a`` is with respect to ``b`` (``left``, ``right``, ``above``, ``below``), from the box centres.

    The dominant axis of the offset between the centres decides (image y grows downwards).
    """
    dx = (box_b[0] + box_b[2]) / 2 - (box_a[0] + box_a[2]) / 2
    dy = (box_b[1] + box_b[3]) / 2 - (box_a[1] + box_a[3]) / 2
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


# --------------------------------------------------------------------------------------------- scene


def _draw_scene(rng: np.random.Generator, size: int) -> list[dict]:
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
    dx = abs((a[0] + a[2]) - (b[0] + b[2]))
    dy = abs((a[1] + a[3]) - (b[1] + b[3]))
    return max(dx, dy) >= DOMINANCE * min(dx, dy)


# --------------------------------------------------------------------------------------------- pixels


def _pastel(rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(165, 225)
    return np.clip(level + rng.uniform(-22, 22, size=3), 0, 255)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-contrast pastel gradient with one of several textures, float32 (size, size, 3)."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = coords[:, None], coords[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c1, c2 = _pastel(rng).astype(np.float32), _pastel(rng).astype(np.float32)
    image = c1 + (c2 - c1) * t[..., None]
    kind = int(rng.integers(4))
    if kind == 1:  # stripes at a random angle and frequency
        phi, freq = rng.uniform(0, np.pi), rng.uniform(4, 18)
        u = xx * np.float32(np.cos(phi)) + yy * np.float32(np.sin(phi))
        texture = rng.uniform(5, 12) * np.sin(np.float32(2 * np.pi * freq) * u + np.float32(rng.uniform(0, 2 * np.pi)))
    elif kind == 2:  # checker board with random cell size
        cells = rng.uniform(5, 20)
        texture = rng.uniform(4, 9) * np.sign(
            np.sin(np.float32(np.pi * cells) * xx + np.float32(rng.uniform(0, 6)))
            * np.sin(np.float32(np.pi * cells) * yy + np.float32(rng.uniform(0, 6)))
        )
    elif kind == 3:  # blotches: upsampled coarse noise
        grid = int(rng.integers(4, 12))
        coarse = rng.uniform(0, 255, size=(grid, grid)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        texture = rng.uniform(8, 16) * (smooth - 127.5) / 127.5
    else:
        texture = np.zeros((size, size), dtype=np.float32)
    tint = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    return image + texture[..., None] * tint


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` filling a ``side`` x ``side`` box, anti-aliased."""
    big = side * _SUPSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    e = big - 1
    if shape == "circle":
        draw.ellipse((0, 0, e, e), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, e, e), fill=255)
    elif shape == "triangle":
        draw.polygon([(0, e), (e, e), (e / 2, 0)], fill=255)
    elif shape == "star":
        outer = big / (2 * math.cos(math.radians(18)))  # width of a 5-point star = 2 R cos 18
        inner = 0.5 * outer
        height = outer * (1 + math.cos(math.radians(36)))
        cx, cy = big / 2, (big - height) / 2 + outer
        points = []
        for k in range(10):
            r = outer if k % 2 == 0 else inner
            a = math.radians(-90 + 36 * k)
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(points, fill=255)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    small = canvas.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _render(rng: np.random.Generator, size: int, objects: list[dict]) -> np.ndarray:
    """The image as uint8 (size, size, 3); sets each object's tight ``bbox`` (pixels it covers)."""
    image = _background(rng, size)
    for obj in objects:
        colour = np.array(COLOUR_RGB[obj["colour"]], dtype=np.float32)
        colour = np.clip(colour + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255)
        x0, y0, x1, y1 = obj["box"]
        alpha = _shape_mask(obj["shape"], x1 - x0)
        region = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = region + (colour - region) * alpha[..., None]
        rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
        obj["bbox"] = [x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1]
    sigma = np.float32(rng.uniform(2, 6))
    image += sigma * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(image + np.float32(0.5), 0, 255).astype(np.uint8)


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    """Baseline JPEG, no metadata: the same pixels always give the same bytes."""
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


# --------------------------------------------------------------------------------------------- captions


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(det: str, words: list[str]) -> list[str]:
    if det == "a" and words and words[0][0] in "aeiou":
        det = "an"
    return [det, *words]


def _phrase(rng: np.random.Generator, obj: dict, objects: list[dict]) -> list[str]:
    """Words naming ``obj`` (shape plus some attributes), always unique among ``objects``."""
    kept = _choice(
        rng, (("size", "colour"), ("size", "colour"), ("size", "colour"), ("colour",), ("colour",), ("size",), ())
    )
    matches = [o for o in objects if o["shape"] == obj["shape"] and all(o[k] == obj[k] for k in kept)]
    if len(matches) > 1:
        kept = ("size", "colour")
    return [obj[k] for k in ("size", "colour") if k in kept] + [obj["shape"]]


def _single(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """A caption about one object."""
    obj = _choice(rng, objects)
    np_ = _article(_choice(rng, ("a", "a", "one")), _phrase(rng, obj, objects))
    form = int(rng.integers(4))
    if form == 0:
        return ["there", "is", *np_]
    if form == 1:
        return [
            *_choice(
                rng,
                (
                    ["a", "picture", "of"],
                    ["an", "image", "of"],
                    ["an", "image", "with"],
                    ["this", "image", "shows"],
                    ["this", "picture", "shows"],
                ),
            ),
            *np_,
        ]
    if form == 2:
        return [*np_, "in", "this", _choice(rng, ("image", "picture"))]
    return ["there", "is", *np_, "in", "the", _choice(rng, ("image", "picture"))]


def _pair(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """A caption relating two objects, the relation read off their boxes."""
    i, j = (int(k) for k in rng.permutation(len(objects))[:2])
    a, b = objects[i], objects[j]
    rel = list(_choice(rng, _REL_WORDS[relation(a["bbox"], b["bbox"])]))
    pa, pb = _phrase(rng, a, objects), _phrase(rng, b, objects)
    form = int(rng.integers(4))
    if form == 0:
        return [*_article("a", pa), *rel, *_article("a", pb)]
    if form == 1:
        return ["the", *pa, "is", *rel, "the", *pb]
    if form == 2:
        return ["there", "is", *_article("a", pa), *rel, *_article("a", pb)]
    return [*_article("a", pa), "is", *rel, *_article("a", pb)]


def _listing(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """A caption naming every object, in a random order."""
    n = len(objects)
    phrases = [
        _article(_choice(rng, ("a", "a", "one")), _phrase(rng, objects[int(k)], objects)) for k in rng.permutation(n)
    ]
    listed = list(phrases[0])
    for k, p in enumerate(phrases[1:], start=1):
        listed += ["and" if k == n - 1 else ",", *p]
    count = [_COUNT_WORDS[n], "shape" if n == 1 else "shapes"]
    form = int(rng.integers(4 if n > 1 else 3))
    if form == 0:
        return [*count, ":", *listed]
    if form == 1:
        return ["there", "is" if n == 1 else "are", *count, ":", *listed]
    if form == 2:
        return [*_choice(rng, (["a", "picture", "of"], ["an", "image", "with"])), *listed]
    return listed


def _captions(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """``CAPTIONS_PER_IMAGE`` distinct true captions, raw text as in Flickr8k ("A red circle ... .")."""
    if len(objects) == 1:
        makers, weights = (_single, _listing), (0.6, 0.4)
    else:
        makers, weights = (_pair, _listing, _single), (0.5, 0.3, 0.2)
    cumulative = np.cumsum(weights)
    captions: list[str] = []
    for _ in range(1000):
        make = makers[int(np.searchsorted(cumulative, rng.uniform(0, cumulative[-1]), side="right"))]
        words = make(rng, objects)
        n_words = sum(w not in (",", ":") for w in words)
        if not MIN_WORDS <= n_words <= MAX_WORDS:
            continue
        text = " ".join(words)
        raw = text[0].upper() + text[1:] + " ."
        if raw not in captions:
            captions.append(raw)
            if len(captions) == CAPTIONS_PER_IMAGE:
                return captions
    raise RuntimeError(f"could not write {CAPTIONS_PER_IMAGE} distinct captions for {objects}")  # pragma: no cover


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SatError(f"demo: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise SatError(f"demo: {name} must be at least {minimum}, got {value}")
    return int(value)


def generate(
    out_dir: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    image_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the demo dataset folder ``out_dir`` (replacing it) and return its path.

    Images ``0 .. n_train-1`` are train, then ``n_val`` val, then ``n_test`` test.
    """
    counts = {
        "train": _check_int("n_train", n_train, 0),
        "val": _check_int("n_val", n_val, 0),
        "test": _check_int("n_test", n_test, 0),
    }
    total = sum(counts.values())
    if total == 0:
        raise SatError("demo: n_train + n_val + n_test is 0; ask for at least one image")
    image_size = _check_int("image_size", image_size, 64)
    seed = _check_int("seed", seed, 0)
    splits = [split for split, n in counts.items() for _ in range(n)]

    out_dir = Path(out_dir)
    images: list[dict] = []
    boxes: dict[str, list[dict]] = {}
    with atomic_output(out_dir) as tmp:
        remove(tmp)  # left over by a killed run
        (tmp / "images").mkdir(parents=True)
        for index in progress_bar(range(total), enabled=progress, desc="demo images", unit="img"):
            rng = np.random.default_rng([seed, index])
            objects = _draw_scene(rng, image_size)
            pixels = _render(rng, image_size, objects)
            filename = f"demo_{index:06d}.jpg"
            _save_jpeg(pixels, tmp / "images" / filename)
            sentids = list(range(CAPTIONS_PER_IMAGE * index, CAPTIONS_PER_IMAGE * (index + 1)))
            images.append(
                {
                    "filename": filename,
                    "filepath": "images",
                    "imgid": index,
                    "split": splits[index],
                    "sentids": sentids,
                    "sentences": [
                        {"raw": raw, "tokens": tokenize(raw), "imgid": index, "sentid": sid}
                        for raw, sid in zip(_captions(rng, objects), sentids)
                    ],
                }
            )
            boxes[filename] = [{k: o[k] for k in ("shape", "colour", "size", "bbox")} for o in objects]
        _write_json(tmp / "dataset_demo.json", {"dataset": "demo", "images": images})
        _write_json(tmp / "objects.json", {"image_size": image_size, "images": boxes})
    log.info(
        "demo: %d images (%s) of %d px with %d captions each in %s",
        total,
        ", ".join(f"{n} {s}" for s, n in counts.items()),
        image_size,
        CAPTIONS_PER_IMAGE,
        out_dir,
    )
    return out_dir


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=True) + "\n", encoding="utf-8")
