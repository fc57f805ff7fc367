"""How training and feature extraction cost grow with a data set's size, so a user can plan COCO on their machine.

At 1/8, 1/4, 1/2 and all of a data set's size, each measurement runs in a child process of its own, so
its peak RSS is that size's alone:

- training, one epoch: synthetic captions and annotation vectors of the data set's shapes, in a features
  HDF5 file laid out as extraction writes it (one chunk per image) and read with the package's
  ``Features`` (held in memory up to the preset's ``features_memory_gb``, else read per batch, as
  training does); the epoch's batches from ``length_batches``, each through ``minibatch.backward``,
  gradient clipping, the optimizer and weight average training uses, in the precision ``auto`` picks.
  The per-epoch validation is not included.
- feature extraction: ``features.extract`` with the preset's encoder, image size, batch and workers, on
  photo-like JPEGs of the data set's photo size, made as feature_extraction.py makes them (a pool of
  ``--pool`` distinct files, listed over and over to reach the size).

Each table ends with the fitted growth exponent, the log-log slope against the size (1: linear; less:
fixed costs still count), for seconds and for peak RSS.

The shapes (model and features from config.yaml's preset of the data set):

- flickr8k: 8000 images (Karpathy split: 6000 train), 5 captions each, 10.8 +- 3.8 words long (2 to 37;
  the project's tokens of the real train split, i.e. 11.8 steps with <end>), drawn from a shifted gamma;
- coco: 123,287 images (113,287 train with restval), 5 captions each, about 10.5 +- 2.4 words (5 to 50).

``--steps N`` times N batches per size, after ``--warmup`` batches, chosen from the shortest to the
longest batch of the epoch by tokens, and extrapolates the epoch: seconds per batch = a + b x tokens,
fitted per size, summed over every batch of the epoch. ``--images N`` extracts at most N images per
size and extrapolates: the whole call's seconds plus the images left at the rate after warm-up. 0 for
either: the whole epoch, every image. The output says which.

COCO at full size has 15 GB of features, written to ``--tmp`` (default: the system's temporary folder).

    .venv/bin/python benchmarks/cost_scaling.py                     # flickr8k: 20 batches, 160 images per size
    .venv/bin/python benchmarks/cost_scaling.py --dataset coco --tmp /scratch
    .venv/bin/python benchmarks/cost_scaling.py --steps 0 --images 0 --tasks train   # whole epochs
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import roofline
import torch
from feature_extraction import make_images, timed_extract, write_csv

from show_attend_tell import heap, training_precision, weight_average
from show_attend_tell.checkpoint import Progress
from show_attend_tell.config import SCHEMA, check, load_yaml, train_settings
from show_attend_tell.data import Captions, Features, length_batches
from show_attend_tell.devices import resolve_device
from show_attend_tell.distributed import World
from show_attend_tell.encoders import output_grid
from show_attend_tell.machine import describe
from show_attend_tell.minibatch import backward, seed_step
from show_attend_tell.model import Captioner
from show_attend_tell.settings import Settings
from show_attend_tell.text import END, PAD, SPECIALS, START
from show_attend_tell.training_job import make_optimizer

REPO = Path(__file__).resolve().parent.parent
FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1.0)


@dataclass(frozen=True)
class Shape:
    """What a data set holds: images, captions and their lengths, and the size of its photos."""

    images: int
    train_images: int
    captions_per_image: int
    mean_words: float
    sd_words: float
    min_words: int
    max_words: int
    photo: tuple[int, int]  # width, height

    def images_at(self, fraction: float) -> tuple[int, int]:
        """(all images, train images) at ``fraction`` of the data set."""
        return round(self.images * fraction), round(self.train_images * fraction)


SHAPES = {
    "flickr8k": Shape(8000, 6000, 5, 10.8, 3.8, 2, 37, (500, 375)),
    "coco": Shape(123287, 113287, 5, 10.5, 2.4, 5, 50, (640, 480)),
}


@dataclass(frozen=True)
class Preset:
    """The data set's preset in config.yaml: training settings and the features' encoder and shape."""

    settings: Settings
    vocab_size: int  # with the specials
    locations: int
    feature_dim: int
    features: dict[str, Any]


def read_preset(config_yaml: Path, dataset: str, model: str) -> Preset:
    """The settings the workflow would train ``model`` on ``dataset`` with, and its features' grid."""
    config = load_yaml(config_yaml)
    resolved = check(config, SCHEMA)
    ds = resolved[dataset]
    settings = Settings.from_config(train_settings(config, resolved, dataset, model))
    f = ds["features"]
    h, w, d = output_grid(f["encoder"], f["layer"], f["image_size"])
    return Preset(settings, len(SPECIALS) + ds["vocab_size"], h * w, d, f)


def image_splits(shape: Shape, fraction: float) -> np.ndarray:
    """Each image's split: the train share first, the rest half val, half test."""
    n, train = shape.images_at(fraction)
    val = (n - train) // 2
    return np.array(["train"] * train + ["val"] * val + ["test"] * (n - train - val))


def synthetic_captions(shape: Shape, fraction: float, vocab_size: int, seed: int) -> Captions:
    """Captions as read_encoded gives them: random words, lengths from a gamma of the data set's mean and spread."""
    splits = image_splits(shape, fraction)
    rng = np.random.default_rng([seed, len(splits)])
    n = len(splits) * shape.captions_per_image
    excess, variance = shape.mean_words - shape.min_words, shape.sd_words**2
    lengths = shape.min_words + np.rint(rng.gamma(excess**2 / variance, variance / excess, n)).astype(np.int64)
    lengths = np.minimum(lengths, shape.max_words)
    vocab = list(SPECIALS) + [f"w{i}" for i in range(vocab_size - len(SPECIALS))]
    steps = np.arange(int(lengths.max()) + 2)
    tokens = rng.integers(len(SPECIALS), vocab_size, (n, len(steps)), dtype=np.int64)
    tokens[steps > lengths[:, None] + 1] = vocab.index(PAD)
    tokens[np.arange(n), lengths + 1] = vocab.index(END)
    tokens[:, 0] = vocab.index(START)
    image_index = np.repeat(np.arange(len(splits)), shape.captions_per_image)
    return Captions(tokens, lengths, image_index, splits[image_index], vocab)


def write_features(path: Path, splits: np.ndarray, locations: int, dim: int, seed: int) -> None:
    """A features file of ``len(splits)`` images as extraction lays it out (float16, one chunk per image)."""
    chunk = max(1, min(len(splits), 2**22 // (locations * dim)))  # 8 MB written at a time
    block = np.abs(np.random.default_rng(seed).standard_normal((chunk, locations, dim), dtype=np.float32))
    block = block.astype(np.float16)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("features", (len(splits), locations, dim), dtype="f2", chunks=(1, locations, dim))
        for start in range(0, len(splits), chunk):
            stop = min(len(splits), start + chunk)
            data[start:stop] = block[: stop - start]
        f.create_dataset("splits", data=list(splits), dtype=h5py.string_dtype("utf-8"))
        f.attrs["n_done"] = len(splits)


def fit_epoch(timed_tokens: list[int], seconds: list[float], tokens: np.ndarray) -> tuple[float, float, float]:
    """(epoch seconds, a, b): seconds per batch = a + b x tokens, least squares on the timed batches, over every batch.

    With one distinct batch size, or a fit that gives a negative term, time is taken as proportional to tokens.
    """
    x, y = np.asarray(timed_tokens, dtype=float), np.asarray(seconds)
    if len(np.unique(x)) >= 2:
        b, a = np.polyfit(x, y, 1)
        if a >= 0 and b >= 0:
            return float(np.sum(a + b * tokens)), float(a), float(b)
    b = float(y.sum() / x.sum())
    return b * float(tokens.sum()), 0.0, b


def train_one(args: argparse.Namespace, preset: Preset, shape: Shape, fraction: float, workdir: Path) -> dict:
    """One epoch of training at ``fraction`` of the data set (timed or extrapolated), in this process."""
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        heap.keep_freed_memory()  # as training does
    s = preset.settings
    captions = synthetic_captions(shape, fraction, preset.vocab_size, args.seed)
    t0 = time.perf_counter()
    store = Features(workdir / "features.h5", s.features_memory_gb)
    store.check_images(captions)
    load_s = time.perf_counter() - t0
    train = captions.splits == "train"
    by_length = {int(n): np.flatnonzero(train & (captions.lengths == n)) for n in np.unique(captions.lengths[train])}
    torch.manual_seed(args.seed)
    model = Captioner(s.model_config(len(captions.vocab), store.num_locations, store.feature_dim)).to(device)
    optimizer = make_optimizer(s, model.parameters())
    chosen = training_precision.choose(s, model, by_length, device)
    batches = length_batches(by_length, s.batch_size, args.seed, 0)
    tokens = np.array([len(rows) * (int(captions.lengths[rows[0]]) + 1) for rows in batches])
    world, state = World(device=device), Progress()

    def step(i: int) -> float:
        """Seconds of training batch ``i``, as one step of train.py's epoch loop."""
        t0 = time.perf_counter()
        seed_step(args.seed, 0, i, 0)
        optimizer.zero_grad(set_to_none=True)
        sums = backward(model, captions, store, batches[i], s, state.baseline, world, precision_name=chosen)
        if s.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_norm)
        optimizer.step()
        if s.ema_decay:
            weight_average.update(state, model, s.ema_decay)
        if s.attention == "hard":
            d, mean = s.baseline_decay, sums.log_likelihood / sums.words
            state.baseline = mean if state.baseline is None else d * state.baseline + (1 - d) * mean
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    whole = args.steps == 0 or args.steps >= len(batches)
    if whole:
        seconds = [step(i) for i in range(len(batches))]
        epoch_s, a, b, timed = sum(seconds), math.nan, math.nan, list(range(len(batches)))
    else:
        by_tokens = np.argsort(tokens, kind="stable")
        for _ in range(args.warmup):
            step(int(by_tokens[len(batches) // 2]))
        timed = [int(by_tokens[k]) for k in np.rint(np.linspace(0, len(batches) - 1, args.steps)).astype(int)]
        seconds = [step(i) for i in timed]
        epoch_s, a, b = fit_epoch([int(tokens[i]) for i in timed], seconds, tokens)
    in_memory = store.memory is not None
    store.close()
    return {
        "images": int(train.sum()) // shape.captions_per_image,
        "captions": int(train.sum()),
        "batches": len(batches),
        "timed": len(timed),
        "whole": whole,
        "load_s": load_s,
        "seconds": epoch_s,
        "a": a,
        "b": b,
        "precision": chosen,
        "in_memory": in_memory,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def extract_one(args: argparse.Namespace, preset: Preset, shape: Shape, fraction: float, workdir: Path) -> dict:
    """Feature extraction of ``fraction`` of the data set's images (timed or extrapolated), in this process."""
    n_images, _ = shape.images_at(fraction)
    n = n_images if args.images == 0 else min(args.images, n_images)
    pool = sorted((workdir.parent / "photos").glob("*.jpg"))
    write_csv(workdir / "images.csv", [pool[i % len(pool)] for i in range(n)])
    f = preset.features
    clock, call_s = timed_extract(
        args.warmup,
        workdir / "images.csv",
        workdir / "features.h5",
        encoder=f["encoder"],
        layer=f["layer"],
        image_size=f["image_size"],
        batch_size=f["batch_size"],
        workers=f["workers"],
        threads=args.threads,
        device=args.device,
        pretrained=f["pretrained"],
    )
    steady = len(clock.done) >= args.warmup + 2
    rate = clock.rate() if steady else n / call_s
    return {
        "images": n_images,
        "captions": n_images * shape.captions_per_image,
        "extracted": n,
        "steady": steady,
        "seconds": call_s + (n_images - n) / rate,
        "rate": rate,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "workers_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def slope(x: list[float], y: list[float]) -> float:
    """The log-log slope of ``y`` against ``x``: y grows as x to this power."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) >= 2 else math.nan


def growth(unit: str, sizes: list[int], rows: list[dict]) -> None:
    """The growth exponents of seconds and peak RSS, and RSS as a straight line (what planning memory needs)."""
    seconds, rss = [r["seconds"] for r in rows], [r["rss"] / 2**20 for r in rows]
    line = f"growth exponent against {unit} (log-log slope): seconds {slope(sizes, seconds):.2f}"
    line += f", peak RSS {slope(sizes, rss):.2f}"
    if len(sizes) >= 2:
        per, base = np.polyfit(sizes, rss, 1)
        line += f"; peak RSS ~ {base:.0f} MB + {1000 * per:.1f} MB per 1000 {unit}"
    print(line)


def print_rows(
    title: str, header: str, sizes: Iterator[tuple[float, dict]], line: Callable[[float, dict], str], unit: str
) -> list[dict]:
    """A table: each size's row as soon as it is measured (a long run shows progress), then how the cost grows."""
    print(f"\n{title}\n{header}")
    rows = []
    for fraction, r in sizes:
        rows.append(r)
        print(line(fraction, r), flush=True)
    growth(unit, [r[unit] for r in rows], rows)
    return rows


def run_child(task: str, fraction: float, workdir: Path) -> dict:
    """``task`` at ``fraction`` in a fresh process of this script (its own peak RSS); what it measured."""
    command = [sys.executable, __file__, *sys.argv[1:], "--child", task, "--fraction", repr(fraction)]
    done = subprocess.run([*command, "--workdir", str(workdir)], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(fraction: float) -> str:
    """1/8 for 0.125; a fraction with no small denominator as a decimal."""
    simple = Fraction(fraction).limit_denominator(64)
    return str(simple) if math.isclose(simple, fraction) else f"{fraction:g}"


def each_size(
    task: str, fractions: list[float], workdir: Path, prepare: Callable[[float], None] | None = None
) -> Iterator[tuple[float, dict]]:
    """(fraction, what its child process measured) for each size, in a fresh ``workdir`` made by ``prepare``."""
    for fraction in fractions:
        workdir.mkdir(parents=True, exist_ok=True)
        if prepare:
            prepare(fraction)
        measured = run_child(task, fraction, workdir)
        shutil.rmtree(workdir)
        yield fraction, measured


def training_table(args: argparse.Namespace, preset: Preset, shape: Shape, workdir: Path) -> None:
    s = preset.settings
    title = (
        f"training, one epoch over the train split, {s.attention} attention: L={preset.locations}, "
        f"D={preset.feature_dim}, V={preset.vocab_size}, embed {s.embed_dim}, LSTM {s.hidden_dim}, "
        f"attention {s.attention_dim}, batch {s.batch_size}, {s.optimizer}, ema {s.ema_decay}; "
        "the per-epoch validation not included"
    )
    header = (
        f"{'fraction':>8s} {'images':>7s} {'captions':>8s} {'batches':>7s} {'load s':>7s} {'epoch s':>8s} "
        f"{'s/1000 capt':>11s} {'peak RSS MB':>11s}  precision  features  timed"
    )

    def synthetic_features(fraction: float) -> None:
        write_features(workdir / "features.h5", image_splits(shape, fraction), preset.locations, preset.feature_dim, 0)

    def line(fraction: float, r: dict) -> str:
        fit = f"{r['timed']} batches, a={r['a'] * 1e3:.1f} ms, b={r['b'] * 1e6:.2f} us/token"
        timed = "whole epoch" if r["whole"] else fit
        return (
            f"{show(fraction):>8s} {r['images']:7d} {r['captions']:8d} {r['batches']:7d} {r['load_s']:7.2f} "
            f"{r['seconds']:8.1f} {1000 * r['seconds'] / r['captions']:11.3f} {r['rss'] / 2**20:11.0f}  "
            f"{r['precision']:9s}  {'in memory' if r['in_memory'] else 'per batch'}  {timed}"
        )

    sizes = each_size("train", args.fractions, workdir, synthetic_features)
    rows = print_rows(title, header, sizes, line, "captions")
    if not all(r["whole"] for r in rows):
        print(
            f"(epoch extrapolated: {args.warmup} warm-up and --steps {args.steps} timed batches per size, from its "
            "shortest to its longest by tokens; seconds per batch = a + b x tokens, fitted per size, summed over "
            "every batch of the epoch)"
        )


def extraction_table(args: argparse.Namespace, preset: Preset, shape: Shape, workdir: Path) -> None:
    f = preset.features
    title = (
        f"feature extraction: {f['encoder']} {f['layer']} at {f['image_size']} px ({preset.locations} x "
        f"{preset.feature_dim}), batch {f['batch_size']}, workers {f['workers']}, "
        f"{shape.photo[0]}x{shape.photo[1]} JPEGs; worker MB: the largest image-decoding worker's peak RSS"
    )
    header = (
        f"{'fraction':>8s} {'images':>7s} {'captions':>8s} {'seconds':>8s} {'s/1000 img':>10s} "
        f"{'peak RSS MB':>11s} {'worker MB':>9s}  extracted"
    )

    def line(fraction: float, r: dict) -> str:
        how = "all"
        if r["extracted"] < r["images"]:
            how = f"{r['extracted']}, at {r['rate']:.1f} images/s"
            how += "" if r["steady"] else " (the whole call's: too few batches for a rate after warm-up)"
        return (
            f"{show(fraction):>8s} {r['images']:7d} {r['captions']:8d} {r['seconds']:8.1f} "
            f"{1000 * r['seconds'] / r['images']:10.2f} {r['rss'] / 2**20:11.0f} {r['workers_rss'] / 2**20:9.0f}  "
            f"{how}"
        )

    rows = print_rows(title, header, each_size("extract", args.fractions, workdir), line, "images")
    if any(r["extracted"] < r["images"] for r in rows):
        print(
            f"(extrapolated beyond --images {args.images} per size: the whole call's seconds, model building "
            f"included, plus the images left at the rate after {args.warmup} warm-up batches)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="flickr8k", choices=list(SHAPES))
    p.add_argument("--model", default="soft", help="a `models` entry of the config (soft, hard)")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml", help="where the presets come from")
    p.add_argument("--tasks", nargs="+", default=["train", "extract"], choices=["train", "extract"])
    p.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    p.add_argument("--steps", type=int, default=20, help="training batches timed per size (0: the whole epoch)")
    p.add_argument("--images", type=int, default=160, help="images extracted per size at most (0: all)")
    p.add_argument("--warmup", type=int, default=2, help="batches left out of the timing")
    p.add_argument("--pool", type=int, default=64, help="distinct JPEGs made for extraction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tmp", type=Path, default=None, help="folder for the features files and JPEGs")
    p.add_argument("--child", choices=["train", "extract"], help=argparse.SUPPRESS)
    p.add_argument("--fraction", type=float, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps < 0 or args.images < 0 or args.warmup < 0 or args.pool < 1:
        p.error("--steps, --images and --warmup must be 0 or more, --pool 1 or more")
    shape, preset = SHAPES[args.dataset], read_preset(args.config, args.dataset, args.model)
    if args.child:
        one = train_one if args.child == "train" else extract_one
        print(json.dumps(one(args, preset, shape, args.fraction, args.workdir)))
        return

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(roofline.host_line(describe(device)), flush=True)
    print(
        f"{args.dataset}: {shape.images} images ({shape.train_images} train), {shape.captions_per_image} captions "
        f"each of {shape.mean_words} +- {shape.sd_words} words; preset from {args.config}, model {args.model}; "
        f"each size in a child process of its own (its peak RSS)"
    )
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if "train" in args.tasks:
            training_table(args, preset, shape, Path(tmp) / "size")
        if "extract" in args.tasks:
            most = max(shape.images_at(f)[0] for f in args.fractions)
            (Path(tmp) / "photos").mkdir()
            make_images(Path(tmp) / "photos", min(args.pool, most if args.images == 0 else args.images), shape.photo, 0)
            extraction_table(args, preset, shape, Path(tmp) / "size")


if __name__ == "__main__":
    main()
