"""Time one dataset's rows of Table 1 from its archives: the real workflow, minutes per stage, and the host.

Runs `snakemake {dataset}_soft {dataset}_hard table1` with your config file (archives, results folder)
in a fresh results folder, then reads the per-job benchmark files the rules write and prints the
minutes of every stage, the wall-clock of the whole run, and the machine it ran on (CPU model,
native bfloat16 or not, matmul peaks measured in the same run), followed by Table 1.

    .venv/bin/python benchmarks/dataset_row.py --configfile my_flickr8k.yaml
    .venv/bin/python benchmarks/dataset_row.py --configfile my_flickr8k.yaml --dataset flickr8k --cores 2

The config file must point `archives:` at the dataset's archives and `results:` and `data_dir:` at
folders of their own: the dataset's results and the downloaded and extracted archives are deleted
first, unless --keep is given.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from show_attend_tell.machine import describe, summary

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", required=True, type=Path)
    p.add_argument("--dataset", default="flickr8k")
    p.add_argument("--models", nargs="+", default=["soft", "hard"])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep what the results folder holds (resume a run)")
    args = p.parse_args()
    config = yaml.safe_load(args.configfile.read_text())
    results = Path(config.get("results", "results"))
    data_dir = Path(config.get("data_dir", results / "data"))
    if not args.keep:  # everything the row makes, from the download on
        for folder in (
            results / args.dataset,
            results / "benchmarks" / args.dataset,
            results / "checkpoints" / args.dataset,
            data_dir / "archives",
            data_dir / "extracted",
        ):
            shutil.rmtree(folder, ignore_errors=True)
    torch.set_num_threads(args.cores)
    host = summary(describe())
    print(f"host: {host}", flush=True)

    targets = [f"{args.dataset}_{m}" for m in args.models] + ["table1"]
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "--cores",
            str(args.cores),
            "--configfile",
            str(args.configfile),
            "--config",
            f"run=[{args.dataset}]",
            "--",
            *targets,
        ],
        cwd=REPO,
        check=True,
    )
    wall = (time.perf_counter() - t0) / 60

    stages = []
    for tsv in sorted((results / "benchmarks" / args.dataset).glob("*.tsv")):
        stages.append(
            {
                "stage": tsv.stem,
                "minutes": pd.read_csv(tsv, sep="\t")["s"].iloc[-1] / 60,
                "max_rss_mb": pd.read_csv(tsv, sep="\t")["max_rss"].iloc[-1],
            }
        )
    table = pd.DataFrame(stages)
    print(f"\n{args.dataset}: {', '.join(targets)} in {wall:.1f} min wall-clock on {args.cores} cores")
    print(f"host: {host}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for model in args.models:
        trained = table[table["stage"] == f"train_{model}"]["minutes"]
        if len(trained):
            print(f"training {model}: {trained.iloc[0]:.1f} min")
    print()
    print((results / "table1.md").read_text())


if __name__ == "__main__":
    main()
