"""Training tokens/s with 1..N data-parallel processes (`sat train --processes N`), end to end.

Builds the data stages of a generated demo set once (real features from the offline encoder), then
trains one epoch per process count with the same global batch and reports the tokens/s of
train_log.csv (training steps only, validation excluded) and the speed-up over one process.

    .venv/bin/python benchmarks/ddp_throughput.py                       # CPU: gloo, threads shared
    .venv/bin/python benchmarks/ddp_throughput.py --device cuda --processes 1 2 4 --threads 16

On the CPU the processes share ``--threads`` cores, so this measures whether DDP's split of each
batch beats intra-op threading on the same cores; on GPUs it measures scaling across devices.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from show_attend_tell import demo_stages


def train_once(root: Path, processes: int, settings: dict, device: str, threads: int) -> float:
    out = root / f"p{processes}"
    out.mkdir(exist_ok=True)
    command = demo_stages.train_command(
        root, out, settings, "--device", device, "--threads", str(threads), "--processes", str(processes)
    )
    subprocess.run(command, check=True, capture_output=True)
    return float(pd.read_csv(out / "train_log.csv")["tokens_per_s"].iloc[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=600, help="training images of the demo set (5 captions each)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the job, shared among its processes")
    p.add_argument("--batch-size", type=int, default=64, help="the global minibatch")
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--attention-dim", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    settings = {
        "embed_dim": args.embed_dim,
        "hidden_dim": args.hidden_dim,
        "attention_dim": args.attention_dim,
        "batch_size": args.batch_size,
        "max_epochs": 1,
        "val_images": 20,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo_stages.build(root, args.images, 20, 0, image_size=160, encoder_size=224, seed=args.seed)
        print(
            f"{args.images * 5} training captions, global batch {args.batch_size}, device {args.device}, "
            f"{args.threads} threads; model {args.embed_dim}/{args.hidden_dim}/{args.attention_dim}"
        )
        base = None
        for n in args.processes:
            rate = train_once(root, n, settings, args.device, args.threads)
            base = base or rate
            print(f"{n} process(es): {rate:8.0f} tokens/s   x{rate / base:.2f}")


if __name__ == "__main__":
    main()
