"""Self-critical fine-tuning of a trained model, validated after every epoch (docs/flickr8k_preset.md).

Starts from a model file the train stage wrote (its weights, vocabulary and settings) and runs the train
stage's own self-critical step (``self_critical.backward``) for ``--epochs`` epochs at ``--learning-rate``
with ``--batch-images`` images a batch, each followed by the train stage's validation at ``--beam`` (the
teacher-forced NLL, BLEU-4 and CIDEr of decoding), and greedy decoding's CIDEr-D and length. The model file
is not changed. On the Flickr8k results of ``dataset_row.py --keep`` (benchmarks/flickr8k_trainval.yaml):

    .venv/bin/python benchmarks/self_critical_finetune.py results/trainval/flickr8k soft/model.pt \\
        --learning-rate 2e-4 --batch-images 32 --epochs 6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from show_attend_tell import precision, self_critical, validation
from show_attend_tell.data import Features, read_encoded, references
from show_attend_tell.decode import beam_search
from show_attend_tell.distributed import World
from show_attend_tell.machine import describe, summary
from show_attend_tell.minibatch import seed_step
from show_attend_tell.model import load_model
from show_attend_tell.settings import Settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a dataset's results folder (captions.h5, vocab.csv, features/...)")
    p.add_argument("model", help="the model file, relative to the results folder")
    p.add_argument("--features", default="features/efficientnet_lite2.h5")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--batch-images", type=int, default=32)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--precision", default="float32", choices=sorted(precision.DTYPES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"host: {summary(describe())}", flush=True)
    root, world = args.results, World()
    model, document = load_model(root / args.model)
    trained = {k: v for k, v in document["settings"].items() if k in Settings.__dataclass_fields__}
    settings = Settings.from_config(
        trained | {"self_critical_samples": args.samples, "self_critical_batch_size": args.batch_images}
    )
    captions = read_encoded(root / "captions.h5", root / "vocab.csv")
    features = Features(root / args.features)
    vset = validation.validation_set(captions, root / "captions.csv", None)
    critic = self_critical.CiderD(references(root / "captions.csv", "train"))
    val_critic = self_critical.CiderD(vset.references)
    images = np.unique(captions.image_index[captions.splits == "train"])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)

    def validate(epoch: int, reward: float, seconds: float) -> None:
        with precision.autocast(world.device, args.precision):
            m = validation.measure(
                model, captions, features, vset, beam_size=args.beam, max_length=30, batch_size=250, world=world
            )
            greedy = beam_search(model, features[vset.images].float(), captions.vocab, beam_size=1)
        words = [[captions.vocab[w] for w in ws] for ws in greedy.tokens]
        ciderd = np.mean([val_critic.score(int(i), w) for i, w in zip(vset.images, words)])
        print(
            f"epoch {epoch}: samples' reward {reward:.3f}, {seconds:.0f} s; validation NLL {m['nll_per_word']:.3f}, "
            f"beam {args.beam} BLEU-4 {m['bleu4']:.4f} CIDEr {m['cider']:.4f}; greedy CIDEr-D {ciderd:.4f}, "
            f"{np.mean([len(w) for w in words]):.2f} words",
            flush=True,
        )

    validate(0, float("nan"), 0.0)
    for epoch in range(args.epochs):
        t0, reward, count = time.perf_counter(), 0.0, 0
        for step, rows in enumerate(self_critical.image_batches(images, args.batch_images, args.seed, epoch)):
            seed_step(args.seed, epoch, step, 0)
            optimizer.zero_grad(set_to_none=True)
            sums = self_critical.backward(
                model, features, rows, critic, captions.vocab, settings, world, precision_name=args.precision
            )
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm or float("inf"))
            optimizer.step()
            reward, count = reward + sums.reward, count + sums.captions
        validate(epoch + 1, reward / count, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
