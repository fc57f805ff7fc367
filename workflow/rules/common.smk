# Settings and path helpers shared by the rules. Config is checked here, before any rule runs.

import json
import os
import shlex
import sys
from pathlib import Path

from show_attend_tell.config import check, train_settings
from show_attend_tell.errors import SatError

# Rules call the `sat` command installed beside the Python that runs Snakemake (a venv need not be active).
shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; ")

try:
    DATASETS = check(config, workflow.source_path("../schemas/config.schema.yaml"))
except SatError as e:
    raise WorkflowError(str(e)) from None

RESULTS = config["results"]
DATA = config["data_dir"]
ENV = "../../envs/sat.yaml"
TRAIN_OUTPUTS = ("model.pt", "train_log.csv", "curves.png")
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")


wildcard_constraints:
    dataset="|".join(DATASETS),
    encoder="[a-z0-9_]+",
    model="|".join(config["models"]),
    split="train|val|test",


def stem(archive: str) -> str:
    """Folder name an archive is extracted to: its file name without the archive suffix."""
    for suffix in ARCHIVE_SUFFIXES:
        if archive.endswith(suffix):
            return archive[: -len(suffix)]
    return archive


STEMS = {stem(name): name for name in config["archives"]}


def extracted(archive: str) -> str:
    return f"{DATA}/extracted/{stem(archive)}"


def captions_source(wildcards) -> str:
    """What the captions JSON comes from: the generated demo folder, an extracted archive folder, or a file."""
    ds = DATASETS[wildcards.dataset]
    if ds["source"] == "demo":
        return f"{DATA}/demo"
    if "file" in ds["captions"]:
        return ds["captions"]["file"]
    return extracted(ds["captions"]["archive"])


def captions_json(wildcards) -> str:
    """The Karpathy-schema JSON itself."""
    ds = DATASETS[wildcards.dataset]
    if ds["source"] == "demo":
        return f"{DATA}/demo/dataset_demo.json"
    if "file" in ds["captions"]:
        return ds["captions"]["file"]
    return os.path.join(extracted(ds["captions"]["archive"]), ds["captions"]["member"])


def image_dirs(wildcards) -> list[str]:
    """Folders searched, in order, for each image's <filepath>/<filename>."""
    ds = DATASETS[wildcards.dataset]
    if ds["source"] == "demo":
        return [f"{DATA}/demo"]
    if ds["images"].get("dirs"):
        return ds["images"]["dirs"]
    folder = ds["images"].get("folder", "")
    return [os.path.join(extracted(a), folder) if folder else extracted(a) for a in ds["images"]["archives"]]


def image_sources(wildcards) -> list[str]:
    """What the image folders come from: extracted archive folders (built by rules) or the user's folders."""
    ds = DATASETS[wildcards.dataset]
    if ds["source"] == "demo":
        return [f"{DATA}/demo"]
    if ds["images"].get("dirs"):
        return ds["images"]["dirs"]
    return [extracted(a) for a in ds["images"]["archives"]]


def features_settings(wildcards) -> dict:
    """The dataset's feature settings; an encoder other than the configured one uses its default layer."""
    settings = dict(DATASETS[wildcards.dataset]["features"])
    if wildcards.encoder != settings["encoder"]:
        settings["layer"] = None
    return settings


def features_path(dataset: str) -> str:
    return f"{RESULTS}/{dataset}/features/{DATASETS[dataset]['features']['encoder']}.h5"


def model_settings(wildcards) -> str:
    """The model's training settings on the dataset, as the JSON that `sat train` reads."""
    return json.dumps(train_settings(config, DATASETS, wildcards.dataset, wildcards.model), sort_keys=True)


def dataset_targets(names: list[str]) -> list[str]:
    """Everything the data stages and the training produce for each dataset."""
    return [
        path
        for name in names
        for path in (
            f"{RESULTS}/{name}/vocab.csv",
            f"{RESULTS}/{name}/captions.h5",
            f"{RESULTS}/{name}/lengths.json",
            features_path(name),
            *(f"{RESULTS}/{name}/{model}/{out}" for model in config["models"] for out in TRAIN_OUTPUTS),
        )
    ]
