"""Is feature extraction compute-bound? Compare the encoder's bare forward pass with the full pipeline.

The pipeline (decode, resize, crop, batch, normalise, forward, write HDF5) should run within 10% of
the bare forward pass at the same batch size, i.e. image loading is hidden behind the compute.

Roofline: the host line gives the matmul peaks measured in the same run; each row gives the GFLOP/s it
achieved and its share of the peak of the dtype the encoder ran in. The FLOPs per image are counted with
``torch.utils.flop_counter.FlopCounterMode`` on one batch (matmul and convolution FLOPs, 2 per
multiply-add; the normalisation and activations are not counted): for the bare forward pass on an
extra untimed call, for extract on its first batch, which the after-warm-up timing leaves out (end to
end pays the counter's overhead, a few milliseconds, once).

    .venv/bin/python benchmarks/feature_extraction.py                      # efficientnet_lite0 blocks.6 at 224
    .venv/bin/python benchmarks/feature_extraction.py --workers 0 --threads 1
    .venv/bin/python benchmarks/feature_extraction.py --images DIR         # your own JPEGs
    .venv/bin/python benchmarks/feature_extraction.py --precisions float32  # one precision only

Each precision in ``--precisions`` (default: float32, and bfloat16 where this machine has it natively, float16 on
other CUDA GPUs) is measured in its own rows; "vs float32" is the median over runs of its extract rate over float32's.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import roofline
import torch
from PIL import Image

from show_attend_tell import encoders, encoding, features, precision
from show_attend_tell.devices import resolve_device
from show_attend_tell.images import COLUMNS
from show_attend_tell.machine import describe


def make_images(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    """``n`` photo-like JPEGs (random crops of scikit-image's sample photos), sized like Flickr images."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        photo = Image.fromarray(photos[i % len(photos)])
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        paths.append(folder / f"{i:06d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def write_csv(path: Path, images: list[Path]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i, image in enumerate(images):
            writer.writerow([i, i, "train", image.name, str(image)])


def timed_extract(warmup: int, images_csv: Path, out: Path, **options: Any) -> tuple[BatchClock, float]:
    """``features.extract`` with its batches clocked (``warmup`` left out of the rate), and the call's seconds."""
    clock = BatchClock(warmup)
    features.encode_batch = clock
    t0 = time.perf_counter()
    try:
        features.extract(images_csv, out, progress=False, **options)
    finally:
        features.encode_batch = clock.encode
    return clock, time.perf_counter() - t0


def bare_forward(args: argparse.Namespace, device: torch.device, precision_name: str) -> tuple[float, roofline.Count]:
    """Images/s of the encoder alone on a random batch prepared as ``extract`` prepares it; the FLOPs of one batch."""
    model = encoding.prepare_encoder(args.encoder, args.layer, not args.random_weights, device, precision_name)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = x.to(precision.DTYPES[precision_name]).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        _, flops = roofline.count(lambda: model(x))
        for _ in range(args.warmup):
            model(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while n < args.batch_size * 3 or time.perf_counter() - t0 < args.seconds:
            model(x)
            n += args.batch_size
        _sync(device)
    return n / (time.perf_counter() - t0), flops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchClock:
    """Wraps ``features.encode_batch`` to time the batches of ``extract``'s loop after its warm-up.

    The first batches of a run pay one-off costs (fresh memory pages, first calls into the CNN
    library) that a real extraction of thousands of batches amortises; the bare forward pass is also
    timed after warm-up batches. The first batch's FLOPs are counted (``flops``, per batch of
    ``counted`` images): :meth:`rate` starts at its end, so counting costs the timing nothing.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.encode = features.encode_batch
        self.done: list[tuple[float, int]] = []
        self.flops: roofline.Count | None = None
        self.counted = 0

    def __call__(self, model, images, name, device):
        if self.flops is None:
            out, self.flops = roofline.count(lambda: self.encode(model, images, name, device))
            self.counted = len(images)
        else:
            out = self.encode(model, images, name, device)
        _sync(device)
        self.done.append((time.perf_counter(), len(images)))
        return out

    def rate(self) -> float:
        """Images/s from the end of the warm-up batches to the end of the last batch (data waits included)."""
        timed = self.done[self.warmup :]
        return sum(n for _, n in timed[1:]) / (timed[-1][0] - timed[0][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="efficientnet_lite0", choices=list(encoders.ENCODERS))
    p.add_argument("--layer", default=None, help="default: the encoder's default layer")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("-n", "--num-images", type=int, default=512, help="test images to make (without --images)")
    p.add_argument("--image-width", type=int, default=500)
    p.add_argument("--image-height", type=int, default=375)
    p.add_argument("--images", type=Path, help="folder of JPEGs to use instead of made-up ones")
    p.add_argument("--workers", type=int, default=features.extract.__kwdefaults__["workers"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--random-weights", action="store_true", help="for vgg19/resnet without their downloaded weights")
    p.add_argument("--warmup", type=int, default=2, help="batches left out of the timing, in both measurements")
    p.add_argument("--seconds", type=float, default=3.0, help="least time spent timing the bare forward pass")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of extract and the bare forward pass")
    p.add_argument("--precisions", nargs="+", choices=list(precision.DTYPES), help="default: all this machine has")
    args = p.parse_args()
    if not args.images and args.num_images < (args.warmup + 2) * args.batch_size:
        p.error("--num-images must cover the warm-up batches and two more")

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    host = describe(device)
    print(roofline.host_line(host), flush=True)
    half = precision.half_precision(device, float16=True)
    precisions = args.precisions or ["float32"] + ([half] if half else [])
    measured = {name: measure(args, device, name) for name in precisions}
    print(
        f"{args.encoder} {args.layer or encoders.ENCODERS[args.encoder].default_layer} at {args.image_size} px, "
        f"batch {args.batch_size}, {measured[precisions[0]].images} images, workers {args.workers}, "
        f"threads {torch.get_num_threads()}, {device}; medians of {args.repeats} runs "
        "(each in brackets); ratio: median over runs of extract / the bare forward pass timed right after it"
    )
    for name, m in measured.items():
        rows = [
            ("bare forward pass", m.bare, m.bare_flops, args.batch_size),
            ("extract, after warm-up", m.loop, m.flops, m.counted),
            ("extract, end to end", m.wall, m.flops, m.counted),
        ]
        speedup = ""
        if "float32" in measured and name != "float32":
            gain = statistics.median(v / b for v, b in zip(m.loop, measured["float32"].loop, strict=True))
            speedup = f", extract {gain:.2f}x float32's"
        print(f"{name}{speedup}:")
        for label, values, flops, per in rows:
            ratio = statistics.median(v / b for v, b in zip(values, m.bare, strict=True))
            runs = " ".join(f"{v:.1f}" for v in values)
            rate = statistics.median(values)
            achieved = roofline.row(rate, flops.flops / per, "image", flops.dtype, host, device, flops.dtype_share)
            print(f"  {label:24s} {rate:7.1f} images/s  ratio {ratio:.3f}  [{runs}]{achieved}")
    print(
        f"(after warm-up: batches after the first {args.warmup}, as for the bare forward pass; end to end: "
        "the whole call, with building the model, reading its weights and starting the workers)"
    )


@dataclass
class Measured:
    """One precision's runs: images/s of the bare forward pass, of extract after warm-up and end to end."""

    images: int
    bare: list[float]
    loop: list[float]
    wall: list[float]
    bare_flops: roofline.Count
    flops: roofline.Count
    counted: int


def measure(args: argparse.Namespace, device: torch.device, precision_name: str) -> Measured:
    """``--repeats`` alternating runs of extract and the bare forward pass in ``precision_name``."""
    bare, loop, wall = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.images:
            images = sorted(q for q in args.images.iterdir() if q.suffix.lower() in {".jpg", ".jpeg"})
        else:
            images = make_images(tmp, args.num_images, (args.image_width, args.image_height), seed=0)
        write_csv(tmp / "images.csv", images)
        # Alternate the two measurements: this machine's speed drifts by 10-20% between minutes and processes.
        for _ in range(args.repeats):
            clock, seconds = timed_extract(
                args.warmup,
                tmp / "images.csv",
                tmp / "features.h5",
                encoder=args.encoder,
                layer=args.layer,
                image_size=args.image_size,
                batch_size=args.batch_size,
                workers=args.workers,
                threads=args.threads,
                device=args.device,
                pretrained=not args.random_weights,
                precision=precision_name,
            )
            wall.append(len(images) / seconds)
            loop.append(clock.rate())
            rate, bare_flops = bare_forward(args, device, precision_name)
            bare.append(rate)
    return Measured(len(images), bare, loop, wall, bare_flops, clock.flops, clock.counted)


if __name__ == "__main__":
    main()
