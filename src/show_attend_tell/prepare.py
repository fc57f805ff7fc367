"""Read a Karpathy-schema captions JSON, find and check its images, write captions.csv and images.csv.

Every later stage reads these two tables, so the decisions made here (which images exist and decode,
which split each belongs to, how captions are tokenised) are made once and can be inspected.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from .atomic import atomic_output
from .errors import SatError
from .jsonfile import read_json
from .progress import progress_bar
from .text import tokenize

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "restval")


def read_karpathy(path: str | Path) -> list[dict]:
    """The ``images`` list of a Karpathy-schema JSON, after checking every field later stages use."""
    path = Path(path)
    data = read_json(path, "captions JSON")

    def bad(where: str, what: str) -> SatError:
        return SatError(f"{path} is not in Karpathy schema: {where}: {what}")

    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise bad("top level", "expected an object with an 'images' list")
    if not data["images"]:
        raise bad("images", "the list is empty")
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(image, dict):
            raise bad(where, "expected an object")
        if not isinstance(image.get("filename"), str) or not image["filename"]:
            raise bad(where, "missing 'filename'")
        if image.get("split") not in SPLITS:
            raise bad(f"{where} ({image['filename']})", f"'split' is {image.get('split')!r}, expected one of {SPLITS}")
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise bad(f"{where} ({image['filename']})", "missing or empty 'sentences'")
        for j, sentence in enumerate(sentences):
            if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
                raise bad(f"{where}.sentences[{j}] ({image['filename']})", "missing 'raw' caption text")
    return data["images"]


def relative_path(image: dict) -> str:
    """``filepath/filename`` (COCO) or ``filename`` (Flickr)."""
    return f"{image['filepath']}/{image['filename']}" if image.get("filepath") else image["filename"]


def image_problem(path: Path | None) -> str | None:
    """Why an image cannot be used (missing, truncated, not an image), or None when it decodes."""
    if path is None:
        return "missing"
    try:
        with Image.open(path) as im:
            # libjpeg decodes at 1/8 scale here: a full pass over the data at a fraction of the cost.
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same thing here
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def locate(rel: str, dirs: list[Path]) -> Path | None:
    """The first folder in ``dirs`` holding ``rel``."""
    for d in dirs:
        if (d / rel).is_file():
            return d / rel
    return None


def prepare(
    captions_json: str | Path,
    image_dirs: list[str | Path],
    captions_csv: str | Path,
    images_csv: str | Path,
    *,
    tokenizer: str = "words",
    restval: str = "train",
    bad_images: str = "error",
    threads: int = 2,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write one row per caption (``captions_csv``) and one per usable image (``images_csv``)."""
    images = read_karpathy(captions_json)
    dirs = [Path(d) for d in image_dirs]
    if restval == "drop":
        images = [im for im in images if im["split"] != "restval"]
    paths = [locate(relative_path(im), dirs) for im in images]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        checks = list(progress_bar(pool.map(image_problem, paths), total=len(paths), desc="checking images",
                                   unit="img", enabled=progress))
    problems = [(relative_path(im), why) for im, why in zip(images, checks) if why]
    if problems:
        listing = "\n".join(f"  {rel}: {why}" for rel, why in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        if bad_images == "error":
            raise SatError(
                f"{len(problems)} of {len(images)} images listed in {captions_json} cannot be used "
                f"(searched {', '.join(map(str, dirs))}):\n{listing}{more}\n"
                "Fix them, or set bad_images: skip for this dataset to leave them out."
            )
        log.warning("skipped %d of %d images that cannot be used:\n%s%s", len(problems), len(images), listing, more)

    image_rows, caption_rows, empty = [], [], []
    for image, path, why in zip(images, paths, checks):
        if why:
            continue
        index = len(image_rows)
        image_id = int(image.get("cocoid", image.get("imgid", index)))
        split = "train" if image["split"] == "restval" else image["split"]
        rel = relative_path(image)
        image_rows.append({"image_index": index, "image_id": image_id, "split": split, "file": rel,
                           "path": str(path), "n_captions": len(image["sentences"])})
        for j, sentence in enumerate(image["sentences"]):
            tokens = tokenize(sentence["raw"], tokenizer)
            if not tokens:
                empty.append(f"  {rel} sentence {j}: {sentence['raw']!r}")
            caption_rows.append({"caption_index": len(caption_rows), "image_index": index, "image_id": image_id,
                                 "split": split, "sentence_id": int(sentence.get("sentid", len(caption_rows))),
                                 "file": rel, "raw": sentence["raw"].strip(), "tokens": " ".join(tokens)})
    if empty:
        raise SatError(f"{len(empty)} empty captions in {captions_json} (no words after tokenisation):\n"
                       + "\n".join(empty[:50]))
    captions, table = pd.DataFrame(caption_rows), pd.DataFrame(image_rows)
    for frame, out in ((captions, captions_csv), (table, images_csv)):
        with atomic_output(out) as tmp:
            frame.to_csv(tmp, index=False)
    counts = table["split"].value_counts().to_dict()
    log.info("%d images (%s), %d captions", len(table), counts, len(captions))
    return captions, table

