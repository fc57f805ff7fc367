"""Does a commit change what the workflow makes? The tiny demo run at each commit, artifact by artifact.

For a refactor, "behaviour unchanged" means the same artifacts for the same config and seed. This runs
the whole default workflow (demo set, features, soft and hard training, decoding, metrics, figures,
Table 1) on a tiny demo config at each commit given, on one core, from a `git archive` of the commit,
and prints, for each commit after the first, the artifacts that differ from the previous one's:

    .venv/bin/python benchmarks/same_artifacts.py 463401a^ 463401a        # one commit against its parent
    .venv/bin/python benchmarks/same_artifacts.py 4ea829b 2964058 6a5a65d  # a chain, pair by pair

Digests leave out what is measured rather than computed: logs, the per-job benchmark files, the training
minutes of Table 1 and the seconds and tokens/s of train_log.csv. HDF5 files are compared by their
datasets and attributes (the file bytes hold timestamps). Runs are kept under --work, one folder per
commit, so a chain can be extended without rerunning what is there.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "demo": {"train": 12, "val": 4, "test": 4, "image_size": 128},
    "datasets": {
        "demo": {
            "features": {"batch_size": 8, "workers": 1},
            "train": {"embed_dim": 16, "hidden_dim": 24, "attention_dim": 12, "batch_size": 16, "max_epochs": 2},
        }
    },
}
MEASURED = ("logs", "benchmarks")


def short_sha(commit: str) -> str:
    """``commit``'s abbreviated hash; exits with a message if it names no commit."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", commit], capture_output=True, text=True)
    if sha.returncode != 0:
        sys.exit(f"error: not a commit: {commit}")
    return sha.stdout.strip()


def unpack(commit: str, source: Path) -> Path:
    """The files of ``commit`` (a ``git archive``, no work-tree changes) in ``source``."""
    source.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    return source


def run_at(commit: str, work: Path) -> Path:
    """The results folder of the tiny demo workflow at ``commit`` (run once, then reused)."""
    root = work / short_sha(commit)
    if (root / "done").exists():
        return root / "run" / "results"
    source = unpack(commit, root / "source")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = os.environ | {"PYTHONPATH": str(source / "src")}  # the commit's package, not the installed one
    cmd = [sys.executable, "-m", "snakemake", "-s", str(source / "Snakefile"), "-d", str(root / "run")]
    cmd += ["--cores", "1", "--configfile", str(root / "tiny.yaml")]
    print(f"{commit}: running the tiny demo workflow (log: {root / 'snakemake.log'})", flush=True)
    with (root / "snakemake.log").open("w") as log:
        if subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"error: the workflow failed at {commit}: see {root / 'snakemake.log'}")
    (root / "done").touch()
    return root / "run" / "results"


def h5_digest(path: Path) -> str:
    digest = hashlib.md5()

    def add(name: str, obj: h5py.HLObject) -> None:
        digest.update(name.encode())
        digest.update(repr(sorted((k, str(v)) for k, v in obj.attrs.items())).encode())
        if isinstance(obj, h5py.Dataset):
            data = np.asarray(obj[()])  # a scalar dataset reads as a bare value; strings as objects
            digest.update(repr(data.tolist()).encode() if data.dtype == object else np.ascontiguousarray(data).data)

    with h5py.File(path, "r") as f:
        add("/", f)
        f.visititems(add)
    return digest.hexdigest()


def digest(path: Path) -> str:
    """What ``path`` holds, less what is measured (times, speeds)."""
    if path.suffix == ".h5":
        return h5_digest(path)
    if path.suffix == ".csv" and path.name in ("table1.csv", "train_log.csv"):
        table = pd.read_csv(path)
        measured = [c for c in table if c == "train_minutes" or c.endswith("_seconds") or c.endswith("_per_s")]
        return hashlib.md5(table.drop(columns=measured).to_csv().encode()).hexdigest()
    if path.name == "table1.md":  # its fifth column is the measured training time
        rows = ["|".join(c for i, c in enumerate(line.split("|")) if i != 4) for line in path.read_text().splitlines()]
        return hashlib.md5("\n".join(rows).encode()).hexdigest()
    return hashlib.md5(path.read_bytes()).hexdigest()


def manifest(results: Path) -> dict[str, str]:
    return {
        str(p.relative_to(results)): digest(p)
        for p in sorted(results.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and not set(MEASURED) & set(p.relative_to(results).parts)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("commits", nargs="+", help="two or more commits, compared pair by pair in this order")
    p.add_argument("--work", type=Path, default=Path("results/same_artifacts"), help="where the runs are kept")
    args = p.parse_args()
    if len(args.commits) < 2:
        sys.exit("error: give at least two commits")
    manifests = [manifest(run_at(c, args.work.resolve())) for c in args.commits]
    for (a, ma), (b, mb) in zip(zip(args.commits, manifests), zip(args.commits[1:], manifests[1:])):
        differ = sorted(k for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k))
        print(f"{a} -> {b}: {len(mb)} artifacts, {len(differ)} differ" + "".join(f"\n  {k}" for k in differ))


if __name__ == "__main__":
    main()
