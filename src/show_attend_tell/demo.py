"""The offline demo dataset: procedurally drawn scenes of coloured shapes with true captions.

Each image's objects come from ``demo_scene``, its pixels from ``demo_pixels`` and its five captions
from ``demo_captions``; this module checks the arguments and writes, atomically, one folder::

    images/demo_000000.jpg ...   RGB JPEGs, image_size x image_size
    dataset_demo.json            Karpathy's schema, as dataset_flickr8k.json
    objects.json                 the objects of each image with their pixel boxes (for grounding)

Everything about image ``i`` (pixels, objects, captions) comes from a generator seeded with
``(seed, i)``, so an image does not change when the split sizes do; only its split does.
"""

from __future__ import annotations

import json
import logging
import numbers
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_output, remove
from .demo_captions import CAPTIONS_PER_IMAGE, captions
from .demo_pixels import render
from .demo_scene import draw_scene
from .errors import SatError
from .progress import progress_bar
from .text import tokenize

log = logging.getLogger(__name__)

JPEG_QUALITY = 90


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
    with atomic_output(out_dir, folder=True) as tmp:
        remove(tmp)  # left over by a killed run
        (tmp / "images").mkdir(parents=True)
        for index in progress_bar(range(total), enabled=progress, desc="demo images", unit="img"):
            rng = np.random.default_rng([seed, index])
            objects = draw_scene(rng, image_size)
            pixels = render(rng, image_size, objects)
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
                        for raw, sid in zip(captions(rng, objects), sentids)
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


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SatError(f"demo: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise SatError(f"demo: {name} must be at least {minimum}, got {value}")
    return int(value)


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    """Baseline JPEG, no metadata: the same pixels always give the same bytes."""
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=True) + "\n", encoding="utf-8")
