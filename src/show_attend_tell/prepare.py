"""Read a Karpathy-schema captions JSON, find and check its images, write captions.csv and images.csv.

Every later stage reads these two tables, so the decisions made here (which images exist and decode,
which split each belongs to, how captions are tokenised) are made once and can be inspected.
"""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pandas as pd

from .atomic import atomic_output
from .errors import SatError
from .images import open_image
from .jsonfile import read_json
from .progress import progress_bar
from .text import tokenize

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "restval")
IMAGE_IDS = ("cocoid", "imgid")  # an image's id: COCO's where there is one, else the Karpathy index


def read_karpathy(path: str | Path) -> list[dict]:
    """The ``images`` list of a Karpathy-schema JSON, after checking every field later stages use.

    The file may come from anywhere: an image path that leads out of the image folders is refused.
    """
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
        where = f"{where} ({image['filename']})"
        if not isinstance(image.get("filepath") or "", str):
            raise bad(where, f"'filepath' is {image['filepath']!r}, expected a folder name")
        if image.get("split") not in SPLITS:
            raise bad(where, f"'split' is {image.get('split')!r}, expected one of {SPLITS}")
        if problem := _id_problem(image, IMAGE_IDS):
            raise bad(where, problem)
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise bad(where, "missing or empty 'sentences'")
        for j, sentence in enumerate(sentences):
            if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
                raise bad(f"{where}.sentences[{j}]", "missing 'raw' caption text")
            if problem := _id_problem(sentence, ("sentid",)):
                raise bad(f"{where}.sentences[{j}]", problem)
    outside = [f"images[{i}]: {relative_path(image)}" for i, image in enumerate(data["images"]) if _escapes(image)]
    if outside:
        raise SatError(
            f"{path} lists {len(outside)} images outside the image folders (an absolute filename or "
            f"filepath, or one with '..'):\n{_listing(outside)}"
        )
    return data["images"]


def _id_problem(entry: dict, fields: tuple[str, ...]) -> str | None:
    """Why an id field of ``entry`` is unusable, or None: ids become integer columns (absent ones are numbered)."""
    for field in (f for f in fields if f in entry):
        if isinstance(entry[field], bool) or not isinstance(entry[field], int):
            return f"'{field}' is {entry[field]!r}, expected an integer"
        if not -(2**63) <= entry[field] < 2**63:
            return f"'{field}' is {entry[field]}, beyond a 64-bit integer column"
    return None


def _escapes(image: dict) -> bool:
    """Whether the image's filename or filepath can reach outside the folders it is looked up in."""
    parts = (PurePosixPath(image["filename"]), PurePosixPath(image.get("filepath") or ""))
    return any(part.is_absolute() or ".." in part.parts for part in parts)


def relative_path(image: dict) -> str:
    """``filepath/filename`` (COCO) or ``filename`` (Flickr)."""
    return f"{image['filepath']}/{image['filename']}" if image.get("filepath") else image["filename"]


def _split(image: dict) -> str:
    """The split the image is used in: restval images (COCO's extra training images) join train."""
    return "train" if image["split"] == "restval" else image["split"]


def _repeats(images: list[dict]) -> tuple[list[str], list[str]]:
    """(leaks, twins): images listed in more than one split, which would inflate that split's scores, and
    images listed twice within one split, whose captions would count twice; by file and by id."""
    by_file, by_id = defaultdict(list), defaultdict(list)
    for image in images:
        by_file[_file(image)].append(image)
        if (image_id := _declared_id(image)) is not None:
            by_id[image_id].append(image)
    leaks, twins = [], []
    for file, group in by_file.items():
        if len(_splits(group)) > 1:
            leaks.append(f"{file}: in {' and '.join(_splits(group))}")
        elif len(group) > 1:
            twins.append(f"{file}: {len(group)} times in {_split(group[0])}")
    for image_id, group in by_id.items():
        if len({_file(im) for im in group}) > 1:  # an id shared by one file only is listed above already
            listed = f"id {image_id}: " + ", ".join(f"{relative_path(im)} in {_split(im)}" for im in group)
            (leaks if len(_splits(group)) > 1 else twins).append(listed)
    return leaks, twins


def _file(image: dict) -> str:
    """The image's path in a form that is the same for every spelling of it (``a.jpg``, ``./a.jpg``)."""
    return posixpath.normpath(relative_path(image))


def _splits(images: list[dict]) -> list[str]:
    return sorted({_split(image) for image in images})


def _declared_id(image: dict, default: int | None = None) -> int | None:
    return image.get(IMAGE_IDS[0], image.get(IMAGE_IDS[1], default))


def _listing(lines: list[str], limit: int = 50) -> str:
    """The first ``limit`` of ``lines``, indented, and how many more there are: readable even for COCO."""
    more = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
    return "\n".join(f"  {line}" for line in lines[:limit] + more)


def image_problem(path: Path | None) -> str | None:
    """Why an image cannot be used (missing, truncated, not an image), or None when it decodes."""
    if path is None:
        return "missing"
    try:
        with open_image(path) as im:
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
    leaks, twins = _repeats(images)
    if leaks:
        raise SatError(
            f"{len(leaks)} images are listed in more than one split of {captions_json} (a leak: "
            f"the splits must not share images):\n{_listing(leaks)}"
        )
    if twins:
        raise SatError(
            f"{len(twins)} images are listed more than once in one split of {captions_json} (their "
            f"captions would count twice; ids must name one file each):\n{_listing(twins)}"
        )
    paths = [locate(relative_path(im), dirs) for im in images]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        checks = list(
            progress_bar(
                pool.map(image_problem, paths), total=len(paths), desc="checking images", unit="img", enabled=progress
            )
        )
    problems = [f"{relative_path(im)}: {why}" for im, why in zip(images, checks) if why]
    if problems:
        if bad_images == "error":
            raise SatError(
                f"{len(problems)} of {len(images)} images listed in {captions_json} cannot be used "
                f"(searched {', '.join(map(str, dirs))}):\n{_listing(problems)}\n"
                "Fix them, or set bad_images: skip for this dataset to leave them out."
            )
        log.warning("skipped %d of %d images that cannot be used:\n%s", len(problems), len(images), _listing(problems))

    image_rows, caption_rows, empty = [], [], []
    for image, path, why in zip(images, paths, checks):
        if why:
            continue
        index = len(image_rows)
        image_id = _declared_id(image, index)
        split = _split(image)
        rel = relative_path(image)
        image_rows.append(
            {
                "image_index": index,
                "image_id": image_id,
                "split": split,
                "file": rel,
                "path": str(path),
                "n_captions": len(image["sentences"]),
            }
        )
        for j, sentence in enumerate(image["sentences"]):
            tokens = tokenize(sentence["raw"], tokenizer)
            if not tokens:
                empty.append(f"{rel} sentence {j}: {sentence['raw']!r}")
            caption_rows.append(
                {
                    "caption_index": len(caption_rows),
                    "image_index": index,
                    "image_id": image_id,
                    "split": split,
                    "sentence_id": int(sentence.get("sentid", len(caption_rows))),
                    "file": rel,
                    "raw": sentence["raw"].strip(),
                    "tokens": " ".join(tokens),
                }
            )
    if empty:
        raise SatError(
            f"{len(empty)} empty captions in {captions_json} (no words after tokenisation):\n" + _listing(empty)
        )
    captions, table = pd.DataFrame(caption_rows), pd.DataFrame(image_rows)
    for frame, out in ((captions, captions_csv), (table, images_csv)):
        with atomic_output(out) as tmp:
            frame.to_csv(tmp, index=False)
    counts = table["split"].value_counts().to_dict()
    log.info("%d images (%s), %d captions", len(table), counts, len(captions))
    return captions, table
