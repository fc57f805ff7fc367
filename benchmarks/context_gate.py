"""How much of the image does a trained decoder let through? Its context gate, teacher-forced on one split.

Each word's context z_t enters the LSTM and the deep output scaled by the gate sigmoid(beta_t) (section
4.2.1). This prints, over every word of the split's captions (the expected context, no dropout, as decoding
sees it): the mean gate, the mean norm of z_t before and after it, and the attention's entropy per word. A
model trained with sampled locations (hard attention) may learn to discount a context that is sometimes
one random cell; this measures whether it did.

    R=results/trainval/flickr8k
    .venv/bin/python benchmarks/context_gate.py $R $R/soft/model.pt $R/hard/model.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from show_attend_tell import objectives
from show_attend_tell.data import Features, read_encoded, teacher_batch
from show_attend_tell.machine import describe, summary
from show_attend_tell.model import load_model


def gate_statistics(model: torch.nn.Module, captions, features: Features, rows: np.ndarray, batch: int) -> dict:
    """Means over the words of ``rows`` (captions of one length per batch, so no padding is counted)."""
    gates, gated, entropy = [], [], []
    # from_h's last output is f_beta(h_{t-1}); gates_z's input is the gated context (model.py).
    hooks = [
        model.from_h.register_forward_hook(lambda m, i, o: gates.append(torch.sigmoid(o[..., -1].float()))),
        model.gates_z.register_forward_hook(lambda m, i, o: gated.append(i[0].float().norm(dim=-1))),
    ]
    try:
        with torch.no_grad():
            for length in np.unique(captions.lengths[rows]):
                same = rows[captions.lengths[rows] == length]
                for part in np.array_split(same, -(-len(same) // batch)):
                    inputs, _, mask = teacher_batch(captions, part)
                    out = model(features[captions.image_index[part]].float(), inputs)
                    entropy.append(objectives.attention_entropy(out.alphas.float(), mask).sum())
    finally:
        for hook in hooks:
            hook.remove()
    beta, z = torch.cat([g.flatten() for g in gates]), torch.cat([n.flatten() for n in gated])
    return {
        "words": len(beta),
        "gate": float(beta.mean()),
        "context_norm": float((z / beta).mean()),
        "gated_norm": float(z.mean()),
        "entropy_per_word": float(sum(entropy)) / len(beta),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="a dataset's results folder: captions.h5, vocab.csv, features/")
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(summary(describe()))
    captions = read_encoded(args.dataset / "captions.h5", args.dataset / "vocab.csv")
    rows = np.flatnonzero(captions.splits == args.split)
    if not len(rows):
        raise SystemExit(f"no {args.split} captions in {args.dataset / 'captions.h5'}")
    for path in args.models:
        model, document = load_model(path)
        encoder = document.get("features", {}).get("encoder")
        files = sorted((args.dataset / "features").glob("*.h5"))
        if not files:
            raise SystemExit(f"no features file in {args.dataset / 'features'}: run the features stage first")
        file = next((f for f in files if f.stem == encoder), files[0] if len(files) == 1 else None)
        if file is None:
            raise SystemExit(f"which of {[f.name for f in files]} did {path} train on? keep one in features/")
        stats = gate_statistics(model, captions, Features(file), rows, args.batch_size)
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        print(f"{path}: {len(rows)} {args.split} captions, {shown}")


if __name__ == "__main__":
    main()
