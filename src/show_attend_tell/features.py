"""Encode every image of a dataset with a frozen CNN into one HDF5 file of annotation vectors.

Row i of ``features`` holds the L x D annotation vectors of the image with ``image_index`` i in
images.csv. Extraction of a large set (COCO: 123k images) can be killed and rerun: it continues from
the ``.partial`` file it left, and the result is the same as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import __version__, encoders, encoding, heap
from .atomic import atomic_output
from .devices import resolve_device
from .encoding import choose_precision, encode_batch, prepare_encoder
from .errors import SatError
from .images import COLUMNS, ImageFiles, read_images_csv
from .precision import DTYPES

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random (pretrained=False)"  # the `weights` attribute of features from an untrained encoder
# Attributes that must match for a .partial file to be continued rather than started afresh.
RESUME_KEYS = (
    "encoder",
    "layer",
    "image_size",
    "weights",
    "precision",
    "n_images",
    "shard_rows",
    "images_sha256",
    "preprocessing",
    "arithmetic",
)


def _images_sha256(rows: list[dict[str, str]]) -> str:
    """Identifies the image list, so a .partial is only continued for the same images in the same order."""
    return hashlib.sha256(json.dumps([[r[c] for c in COLUMNS] for r in rows]).encode()).hexdigest()


def _resume_point(partial: Path, attrs: dict) -> int:
    """Images already done in ``partial`` when it was written with the same settings, else 0."""
    if not partial.exists():
        return 0
    try:
        with h5py.File(partial, "r") as f:
            same = all(_same(f.attrs.get(k), attrs[k]) for k in RESUME_KEYS)
            n_done = int(f.attrs.get("n_done", 0))
    except OSError:  # unreadable, e.g. killed while HDF5 metadata was half written
        same, n_done = False, 0
    if same and n_done > 0:
        log.info("resuming %s: %d of %d images already done", partial, n_done, attrs["n_images"])
        return n_done
    log.info("discarding %s: written with other settings or nothing done", partial)
    partial.unlink()
    return 0


def _same(stored: object, wanted: object) -> bool:
    if isinstance(stored, bytes):
        stored = stored.decode()
    return stored is not None and np.array_equal(stored, wanted)


def _create(f: h5py.File, rows: list[dict[str, str]], attrs: dict, length: int, dim: int) -> None:
    """Datasets and attributes of a new features file, with no timestamps so reruns are byte-identical."""
    n = len(rows)
    strings = h5py.string_dtype("utf-8")
    f.create_dataset("features", (n, length, dim), dtype="f2", chunks=(1, length, dim), track_times=False)
    f.create_dataset("image_ids", data=np.array([int(r["image_id"]) for r in rows], dtype=np.int64), track_times=False)
    f.create_dataset("files", data=[r["file"] for r in rows], dtype=strings, track_times=False)
    f.create_dataset("splits", data=[r["split"] for r in rows], dtype=strings, track_times=False)
    f.attrs.update(attrs)
    f.attrs["n_done"] = 0


def extract(
    images_csv: str | Path,
    out: str | Path,
    *,
    encoder: str,
    layer: str | None,
    image_size: int,
    batch_size: int = 32,
    workers: int = 0,
    threads: int | None = None,
    device: str = "auto",
    pretrained: bool = True,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    declared_gpus: int = 0,
    precision: str = "auto",
) -> Path:
    """Write the annotation vectors of every image in ``images_csv`` to the HDF5 file ``out``.

    ``shard=(k, n)`` encodes only the k-th of n equal ranges of images (separate jobs; see ``merge_shards``).

    ``workers`` image-decoding processes feed the encoder (0, fastest on a CPU: this process's threads
    decode the next batch while the CNN encodes one; see ``_batches``). ``threads`` sets torch's intra-op
    threads (None: torch's default, one per core). An interrupted run leaves ``out.partial``; the next
    run with the same settings continues it. ``precision`` auto computes in bfloat16 where a probe on
    this machine finds it faster (see ``precision``); the file records which.
    """
    _, layer = encoders.spec(encoder, layer)
    dev = resolve_device(device, declared_gpus)
    if threads:
        torch.set_num_threads(threads)
    rows = read_images_csv(images_csv)
    lo, hi = shard_rows(len(rows), *(shard or (0, 1)), batch_size)
    model = prepare_encoder(encoder, layer, pretrained, dev)
    chosen = choose_precision(precision, model, encoder, layer, image_size, batch_size, dev)
    model = model.to(DTYPES[chosen])
    attrs = _attributes(rows, encoder, layer, image_size, pretrained) | {
        "n_images": hi - lo,
        "shard_rows": [lo, hi],
        "precision": chosen,
    }
    rows = rows[lo:hi]
    h, w, d = attrs["grid"] + [attrs["dim"]]
    out = Path(out)
    with atomic_output(out, keep_partial=True) as tmp:
        start = _resume_point(tmp, attrs)
        dataset = ImageFiles([row["path"] for row in rows], image_size)
        batches = _batches(dataset, start, batch_size, workers, pin_memory=dev.type == "cuda")
        with h5py.File(tmp, "r+" if start else "w") as f:
            if not start:
                _create(f, rows, attrs, h * w, d)
            _encode_into(f, batches, model, encoder, dev, chosen, start, progress)
    return out


def _batches(
    dataset: ImageFiles, start: int, batch_size: int, workers: int, pin_memory: bool
) -> Iterator[torch.Tensor]:
    """The images from ``start`` on in batches: decoded by ``workers`` processes, or (0) by this one's threads.

    Worker processes suit a GPU. On a CPU whose cores also run the CNN, a worker takes a core from the CNN's
    threads whenever it runs, and they then wait on one another at every layer; this process's threads,
    decoding the next batch while the CNN encodes, are faster there (``benchmarks/feature_extraction.py
    --workers 0`` against ``--workers 1``).
    """
    if not workers:
        return _decoded_here(dataset, start, batch_size)
    loader = DataLoader(
        Subset(dataset, range(start, len(dataset))),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    # Fork the workers with the probe's activations handed back to the system and before the first batch
    # fills this process's memory: forked later, every page of it would be copied on its first write.
    heap.release_free_memory()
    return iter(loader)


def _decoded_here(dataset: ImageFiles, start: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches decoded by as many threads as torch computes with, each while the CNN encodes the batch before.

    Pillow decodes and resizes without the GIL, and the CNN leaves its cores idle between its operators and
    in its memory-bound ones, so the decoding mostly fills gaps (``benchmarks/feature_extraction.py``).
    """
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:

        def submit(lo: int) -> list[Future[torch.Tensor]]:
            return [pool.submit(dataset.__getitem__, i) for i in range(lo, min(lo + batch_size, len(dataset)))]

        pending = submit(start)
        for lo in range(start, len(dataset), batch_size):
            images = torch.stack([f.result() for f in pending])
            pending = submit(lo + batch_size)
            yield images


def shard_rows(n_images: int, k: int, n: int, batch_size: int) -> tuple[int, int]:
    """[lo, hi): the image indices of shard k of n, split at batch boundaries.

    Every image is then encoded in the same batch as by a single job, so merged shards hold exactly the
    numbers a single extraction writes (a convolution's result depends slightly on its batch).
    """
    if not 0 <= k < n:
        raise SatError(f"shard {k} of {n} does not exist: shards are numbered 0..{n - 1}")
    batches = -(-n_images // batch_size)
    if n > batches:
        raise SatError(
            f"{n} shards for {n_images} images in {batches} batches of {batch_size}: use at most one shard per batch"
        )
    return k * batches // n * batch_size, min(n_images, (k + 1) * batches // n * batch_size)


def _attributes(rows: list[dict[str, str]], encoder: str, layer: str, image_size: int, pretrained: bool) -> dict:
    """The attributes of a features file of all ``rows``: what made it, and which images it holds."""
    spec, _ = encoders.spec(encoder, layer)
    h, w, d = encoders.output_grid(encoder, layer, image_size)
    r = encoders.resize_shorter(image_size)
    return {
        "encoder": encoder,
        "layer": layer,
        "grid": [h, w],
        "dim": d,
        "image_size": image_size,
        "resize_shorter": r,
        "crop": image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "weights": spec.weights if pretrained else RANDOM_WEIGHTS,
        "preprocessing": f"RGB (JPEGs of twice the size or more decoded at 1/2, 1/4 or 1/8 scale); resize shorter "
        f"side to {r} px (bilinear, antialiased); centre crop {image_size}x{image_size}; (x / 255 - mean) / std",
        "n_images": len(rows),
        "shard_rows": [0, len(rows)],
        "images_sha256": _images_sha256(rows),
        "arithmetic": encoding.ARITHMETIC,
        "created_by": f"show_attend_tell {__version__}",
    }


def merge_shards(images_csv: str | Path, shards: list[str | Path], out: str | Path) -> Path:
    """One features file from shard files that together cover every image of ``images_csv`` once.

    Only complete shards (every image encoded) of the same image list and settings are merged; the
    result holds the same data and attributes as a single extraction.
    """
    rows = read_images_csv(images_csv)
    pieces = []
    for path in shards:
        with h5py.File(path, "r") as f:
            a = dict(f.attrs)
            if int(a.get("n_done", -1)) != f["features"].shape[0]:
                raise SatError(
                    f"{path} is incomplete ({a.get('n_done')} of {f['features'].shape[0]} images): "
                    "rerun its extraction before merging"
                )
            pieces.append((tuple(int(x) for x in a["shard_rows"]), Path(path), a))
    pieces.sort(key=lambda piece: piece[0])
    first = pieces[0][2]
    for _, path, a in pieces:
        differs = [k for k in RESUME_KEYS if k not in ("n_images", "shard_rows") and not _same(a.get(k), first[k])]
        if differs:
            raise SatError(f"{path} was extracted with other settings than {pieces[0][1]}: {', '.join(differs)}")
    if not _same(first["images_sha256"], _images_sha256(rows)):
        raise SatError(f"the shards were extracted from another image list than {images_csv}")
    ends = [0] + [hi for (_, hi), _, _ in pieces]
    if [lo for (lo, _), _, _ in pieces] != ends[:-1] or ends[-1] != len(rows):
        covered = ", ".join(f"{lo}-{hi}" for (lo, hi), _, _ in pieces)
        raise SatError(f"the shards cover images {covered}, not 0-{len(rows)} once each")
    attrs = {k: v for k, v in first.items() if k != "n_done"} | {"n_images": len(rows), "shard_rows": [0, len(rows)]}
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        _create(f, rows, attrs, int(np.prod(first["grid"])), int(first["dim"]))
        for (lo, hi), path, _ in pieces:
            with h5py.File(path, "r") as shard:
                for start in range(lo, hi, 1024):
                    stop = min(hi, start + 1024)
                    f["features"][start:stop] = shard["features"][start - lo : stop - lo]
        f.attrs["n_done"] = len(rows)
    log.info("merged %d shards into %s (%d images)", len(pieces), out, len(rows))
    return Path(out)


def _encode_into(
    f: h5py.File,
    batches: Iterator[torch.Tensor],
    model: nn.Module,
    name: str,
    device: torch.device,
    precision_name: str,
    start: int,
    progress: bool,
) -> None:
    """Encode ``batches`` into ``features`` from row ``start``, recording progress after each batch."""
    features = f["features"]
    bar = tqdm(
        total=features.shape[0],
        initial=start,
        unit="img",
        desc="features",
        disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 60.0,
    )
    t0, done = time.perf_counter(), start
    with bar, torch.inference_mode():
        for images in batches:
            stop = done + len(images)
            features[done:stop] = encode_batch(model, images, name, device).cpu().numpy()
            f.attrs["n_done"] = stop
            f.flush()
            bar.update(stop - done)
            done = stop
    n, seconds = done - start, time.perf_counter() - t0
    log.info("encoded %d images in %.1f s: %.1f images/s on %s in %s", n, seconds, n / seconds, device, precision_name)
