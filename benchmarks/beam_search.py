"""Batched beam search against decoding one image at a time: captions/s, and whether the captions agree.

Both run the same `beam_search` on the same model and features: once on a batch of images (every time
step one forward pass for all images x beams), once image by image. A trained model file gives real
captions; without one a randomly initialised captioner of the given dimensions stands in.

Roofline: the host line gives the matmul peaks measured in the same run; each row gives the GFLOP/s it
achieved and its share of the peak of the dtype the decoder ran in. The FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` on one extra, untimed batched call over all the images
(matmul FLOPs, 2 per multiply-add; log-softmax, top-k and the beams' bookkeeping are not counted). One
image at a time does the same work: an image takes the same decoder steps alone as in the batch (it
leaves the batch when its own beams are done), so wherever its caption is the same both rows are
credited the same FLOPs.

    .venv/bin/python benchmarks/beam_search.py --model results/demo/soft/model.pt \\
        --features results/demo/features/efficientnet_lite0.h5
    .venv/bin/python benchmarks/beam_search.py            # random model, paper dimensions
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import roofline
import torch

from show_attend_tell.data import Features
from show_attend_tell.decode import beam_search
from show_attend_tell.devices import resolve_device
from show_attend_tell.machine import describe
from show_attend_tell.model import Captioner, ModelConfig, load_model
from show_attend_tell.text import SPECIALS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a trained model.pt (default: a random captioner of paper dimensions)")
    p.add_argument("--features", help="the features HDF5 it was trained on (default: random annotations)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-length", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    host = describe(device)
    print(roofline.host_line(host), flush=True)
    if args.model:
        model, document = load_model(args.model, device)
        vocab = document["vocab"]
    else:
        vocab = list(SPECIALS) + [f"w{i}" for i in range(10000)]
        torch.manual_seed(0)
        model = Captioner(ModelConfig(len(vocab), 196, 512, embed_dim=512, hidden_dim=1800, attention_dim=512))
        model = model.to(device).eval()
    if args.features:
        store = Features(args.features)
        feats = store[np.arange(min(args.images, store.n_images))].float()
    else:
        feats = torch.randn(
            args.images,
            model.config.num_locations,
            model.config.feature_dim,
            generator=torch.Generator().manual_seed(0),
        )
    feats = feats.to(device)
    settings = dict(beam_size=args.beam_size, max_length=args.max_length)

    beam_search(model, feats[:2], vocab, **settings)  # warm-up
    _, flops = roofline.count(lambda: beam_search(model, feats, vocab, **settings))
    t0 = time.perf_counter()
    batched = beam_search(model, feats, vocab, **settings)
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [beam_search(model, feats[i : i + 1], vocab, **settings) for i in range(len(feats))]
    alone_s = time.perf_counter() - t0

    same = sum(a.tokens[0] == b for a, b in zip(alone, batched.tokens, strict=True))
    n = len(feats)
    print(
        f"beam {args.beam_size}, max {args.max_length} words, {n} images, {device} "
        f"({torch.get_num_threads()} threads), model {args.model or 'random, paper dimensions'}"
    )
    for label, seconds in (("batched", batched_s), ("one at a time", alone_s)):
        achieved = roofline.row(n / seconds, flops.flops / n, "caption", flops.dtype, host, device, flops.dtype_share)
        print(f"{label:16s} {n / seconds:8.1f} captions/s{achieved}")
    print(f"speed-up         {alone_s / batched_s:8.1f}x; identical captions: {same} of {n}")


if __name__ == "__main__":
    main()
