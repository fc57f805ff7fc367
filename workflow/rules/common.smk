# Settings and path helpers shared by the rules. Config is checked here, before any rule runs.

import json
import os
import shlex
import sys
from pathlib import Path

from show_attend_tell import cpu
from show_attend_tell.config import check, sources, stem, train_settings
from show_attend_tell.errors import SatError

# Rules call the `sat` command installed beside the Python that runs Snakemake (a venv need not be active).
shell.prefix(f'set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; ')

try:
    DATASETS = check(config, workflow.source_path("../schemas/config.schema.yaml"))
except SatError as e:
    raise WorkflowError(str(e)) from None

RESULTS = config["results"]
DATA = config["data_dir"]
ENV = "../../envs/sat.yaml"
TRAIN_OUTPUTS = ("model.pt", "train_log.csv", "curves.png")


wildcard_constraints:
    dataset="|".join(DATASETS),
    encoder="[a-z0-9_+]+",  # encoders joined by "+" stack their maps
    model="|".join(config["models"]),
    split="train|val|test",


STEMS = {stem(name): name for name in config["archives"]}
SOURCES = {name: sources(ds, DATA) for name, ds in DATASETS.items()}


def features_settings(wildcards) -> dict:
    """The dataset's feature settings; an encoder other than the configured one uses its default layer."""
    settings = dict(DATASETS[wildcards.dataset]["features"])
    if wildcards.encoder != settings["encoder"]:
        settings["layer"] = None
    return settings


def datasets_pattern(sharded: bool) -> str:
    """Wildcard pattern of the datasets whose features are (or are not) encoded in several shards."""
    names = [n for n, ds in DATASETS.items() if (ds["features"]["shards"] > 1) == sharded]
    return "|".join(names) or "(?!)"  # (?!) matches nothing


def feature_shards(wildcards) -> list[str]:
    n = DATASETS[wildcards.dataset]["features"]["shards"]
    folder = f"{RESULTS}/{wildcards.dataset}/features/shards"
    return [f"{folder}/{wildcards.encoder}.{k}-of-{n}.h5" for k in range(n)]


def shard_option(wildcards) -> list[str]:
    return ["--shard", f"{wildcards.k}/{wildcards.n}"]


def archive_file(wildcards) -> str:
    return f"{DATA}/archives/{STEMS[wildcards.stem]}"


def random_weights_option(wildcards) -> list[str]:
    return [] if DATASETS[wildcards.dataset]["features"]["pretrained"] else ["--random-weights"]


def features_path(dataset: str) -> str:
    return f"{RESULTS}/{dataset}/features/{DATASETS[dataset]['features']['encoder']}.h5"


def features_file(wildcards) -> str:
    return features_path(wildcards.dataset)


def training_processes(wildcards, resources) -> int:
    """Data-parallel training processes: `train_processes`, or one per GPU the job was given."""
    return config["train_processes"] or max(1, int(resources.gpu))


def training_threads(wildcards) -> int:
    """The training job's threads: `train_threads`, or for auto 1 where it may train in bfloat16, else `threads`."""
    precision = train_settings(config, DATASETS, wildcards.dataset, wildcards.model)["precision"]
    return cpu.training_threads(config["train_threads"], precision, config["threads"])


def model_settings(wildcards) -> str:
    """The model's training settings on the dataset, as the JSON that `sat train` reads."""
    return json.dumps(train_settings(config, DATASETS, wildcards.dataset, wildcards.model), sort_keys=True)


def row_targets(dataset: str, model: str) -> list[str]:
    """What one row of Table 1 needs: the model, its curves, metrics and figures (and grounding on the demo)."""
    folder = f"{RESULTS}/{dataset}/{model}"
    splits = sorted(set(DATASETS[dataset]["decode"]["splits"]) | {config["report"]["split"]})
    targets = [f"{folder}/{out}" for out in TRAIN_OUTPUTS]
    targets += [
        f"{folder}/{name}_{split}{ext}" for split in splits for name, ext in (("metrics", ".csv"), ("figures", ""))
    ]
    if DATASETS[dataset]["source"] == "demo":
        targets += [f"{folder}/grounding_{split}.csv" for split in splits]
    return targets


def table1_inputs(wildcards) -> dict[str, str]:
    """Metrics, attention (for encoder and beam), training log and demo grounding of every dataset in `run` x model."""
    inputs, split = {}, config["report"]["split"]
    for dataset in config["run"]:
        for model in config["models"]:
            folder = f"{RESULTS}/{dataset}/{model}"
            inputs[f"{dataset}_{model}_metrics"] = f"{folder}/metrics_{split}.csv"
            inputs[f"{dataset}_{model}_attention"] = f"{folder}/attention_{split}.h5"
            inputs[f"{dataset}_{model}_train_log"] = f"{folder}/train_log.csv"
            if DATASETS[dataset]["source"] == "demo":
                inputs[f"{dataset}_{model}_grounding"] = f"{folder}/grounding_{split}.csv"
    return inputs


def table1_rows(wildcards, input) -> list[str]:
    """`--row DATASET MODEL METRICS ATTENTION TRAIN_LOG GROUNDING` arguments of `sat table1`, one list item each."""
    rows = []
    for dataset in config["run"]:
        for model in config["models"]:
            key = f"{dataset}_{model}"
            rows += [
                "--row",
                dataset,
                model,
                *(input[f"{key}_{part}"] for part in ("metrics", "attention", "train_log")),
                input.get(f"{key}_grounding", "-"),
            ]
    return rows


def dataset_targets(names: list[str]) -> list[str]:
    """Everything the workflow produces for each dataset: data stages, then every model's Table 1 row."""
    return [
        path
        for name in names
        for path in (
            f"{RESULTS}/{name}/vocab.csv",
            f"{RESULTS}/{name}/captions.h5",
            f"{RESULTS}/{name}/lengths.json",
            features_path(name),
            *(target for model in config["models"] for target in row_targets(name, model)),
        )
    ]
