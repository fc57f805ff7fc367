"""The demo set's pixels: a scene's objects painted, anti-aliased, on a textured pastel background.

The background is a low-contrast pastel gradient, plain or with stripes, checks or blotches; each
object's colour and the image noise are jittered, all from the image's own generator.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

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
_SUPSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges


def render(rng: np.random.Generator, size: int, objects: list[dict]) -> np.ndarray:
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
