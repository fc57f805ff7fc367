"""Images as the encoder sees them: the images.csv list, decoding from disk, resize-and-crop preprocessing.

Feature extraction, beam-search decoding, attention figures and ``sat caption`` all read images here,
so a photo given to ``sat caption`` meets the encoder exactly as the training images did.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from . import encoders
from .errors import SatError

COLUMNS = ("image_index", "image_id", "split", "file", "path")
RESAMPLE = Image.Resampling.BILINEAR


def preprocess(image: Image.Image, image_size: int) -> torch.Tensor:
    """Resize the shorter side to ``resize_shorter(image_size)`` and centre-crop a square: uint8 (3, S, S).

    The crop is resampled straight from its box in the source image, which gives the pixels of
    resize-then-crop without resizing the part that the crop throws away.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    nw, nh = _resized(image.size, image_size)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    box = (left * w / nw, top * h / nh, (left + image_size) * w / nw, (top + image_size) * h / nh)
    image = image.resize((image_size, image_size), RESAMPLE, box=box)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` of a regular file only: reading a named pipe or a device would wait or never end."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file (a pipe, device or socket)")
    return Image.open(path)


def load_image(path: str | Path, image_size: int) -> torch.Tensor:
    """Decode ``path`` and preprocess it; big JPEGs are decoded at 1/2, 1/4 or 1/8 scale, which costs far less."""
    try:
        with open_image(path) as image:
            image.draft("RGB", _resized(image.size, image_size))
            return preprocess(image, image_size)
    # What Pillow raises for missing, truncated or bad files, and for pixel counts too large to decode safely.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise SatError(f"cannot read image {path}: {e}") from e


def _resized(size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side of ``size`` to ``resize_shorter(image_size)``."""
    w, h = size
    r = encoders.resize_shorter(image_size)
    return (r, max(r, round(h * r / w))) if w <= h else (max(r, round(w * r / h)), r)


class ImageFiles(Dataset):
    """Preprocessed uint8 images; normalisation is left to the consumer, batched on its device."""

    def __init__(self, paths: Sequence[str], image_size: int) -> None:
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_image(self.paths[i], self.image_size)


def read_images_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of images.csv, checked to list image_index 0..N-1 in order."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SatError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        rows = list(reader)
    for i, row in enumerate(rows):
        if row["image_index"] != str(i):
            raise SatError(f"{path}: row {i + 2} has image_index {row['image_index']}, expected {i}")
        if not row["image_id"].lstrip("-").isdigit():
            raise SatError(f"{path}: row {i + 2} has image_id {row['image_id']!r}, expected an integer")
    if not rows:
        raise SatError(f"{path}: lists no images")
    return rows
