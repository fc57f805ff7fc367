"""Does bfloat16 feature extraction change what the captioner sees? Two features files of the same images compared.

Extract the same images.csv twice, once with ``--precision float32`` and once with ``--precision bfloat16``
(both are float16 on disk), then compare: the cosine similarity of every annotation vector with its
float32 counterpart (quantiles over all N x L vectors) and the relative L2 error. With a trained model
(and the captions it was trained on), both files' validation images are also decoded with beam search and
scored as model selection scores them, and the share of identical captions is counted.

    R=results/trainval/flickr8k
    .venv/bin/sat features $R/images.csv /tmp/bf16.h5 --encoder efficientnet_lite2 --layer blocks.6 \\
        --image-size 224 --precision bfloat16
    .venv/bin/python benchmarks/feature_precision.py $R/features/efficientnet_lite2.h5 /tmp/bf16.h5 \\
        --model results/trainval/flickr8k/soft/model.pt --captions $R/captions.h5 --vocab $R/vocab.csv \\
        --captions-csv $R/captions.csv
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import torch

from show_attend_tell import validation
from show_attend_tell.data import Features, read_encoded
from show_attend_tell.decode import beam_search
from show_attend_tell.distributed import World
from show_attend_tell.machine import describe, summary
from show_attend_tell.model import load_model

QUANTILES = (0.0, 0.001, 0.01, 0.5)


def similarity(reference: str, other: str, chunk: int = 256) -> tuple[np.ndarray, float]:
    """Cosine similarity of each annotation vector of ``other`` with ``reference``'s, and the relative L2 error."""
    cosines, err, norm = [], 0.0, 0.0
    with h5py.File(reference, "r") as a, h5py.File(other, "r") as b:
        if a["features"].shape != b["features"].shape:
            raise SystemExit(f"{reference} and {other} hold features of other shapes")
        for start in range(0, a["features"].shape[0], chunk):
            x = torch.from_numpy(a["features"][start : start + chunk]).float()
            y = torch.from_numpy(b["features"][start : start + chunk]).float()
            cosines.append(torch.nn.functional.cosine_similarity(x, y, dim=-1, eps=1e-8).flatten().numpy())
            err += float(((x - y) ** 2).sum())
            norm += float((x**2).sum())
    return np.concatenate(cosines), (err / norm) ** 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", help="features extracted in float32")
    p.add_argument("other", help="the same images' features extracted in another precision")
    p.add_argument("--model", help="a model trained on such features: decode the validation images of both")
    p.add_argument("--captions", help="captions.h5 of the model's dataset")
    p.add_argument("--vocab", help="vocab.csv")
    p.add_argument("--captions-csv", help="captions.csv (the references)")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--val-images", type=int, default=None, help="validation images decoded (default: all)")
    args = p.parse_args()

    host = describe(torch.device("cpu"))
    print(f"host: {summary(host)}")
    for path in (args.reference, args.other):
        with h5py.File(path, "r") as f:
            print(f"{path}: {f['features'].shape}, precision {f.attrs.get('precision', 'float32 (not recorded)')}")
    cosines, relative = similarity(args.reference, args.other)
    qs = ", ".join(f"{q:g}: {np.quantile(cosines, q):.5f}" for q in QUANTILES)
    print(
        f"cosine similarity per annotation vector ({cosines.size} vectors), quantiles {qs}; mean {cosines.mean():.5f}"
    )
    print(f"relative L2 error over all features: {relative:.5f}")
    if not args.model:
        return
    model, _ = load_model(args.model)
    captions = read_encoded(args.captions, args.vocab)
    vset = validation.validation_set(captions, args.captions_csv, args.val_images)
    decoded = {}
    for path in (args.reference, args.other):
        features = Features(path)
        tokens = beam_search(model, features[vset.images].float(), captions.vocab, beam_size=args.beam_size).tokens
        scores = validation.measure(  # which leaves the model in training mode
            model, captions, features, vset, beam_size=args.beam_size, max_length=30, batch_size=250, world=World()
        )
        model.eval()
        decoded[path] = [tuple(t) for t in tokens]
        print(
            f"{path}: validation NLL {scores['nll_per_word']:.4f} per word, beam {args.beam_size}: "
            f"BLEU-4 {scores['bleu4']:.4f}, CIDEr {scores['cider']:.4f}"
        )
    same = np.mean([a == b for a, b in zip(decoded[args.reference], decoded[args.other], strict=True)])
    print(f"identical captions: {same:.1%} of {len(vset.images)} validation images")


if __name__ == "__main__":
    main()
