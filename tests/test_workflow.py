"""Real snakemake runs of the data stages and training on tiny configs: the demo set, a real Flickr8k sample."""

import hashlib
import json
import re
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import FLICKR8K_SAMPLE, REPO

pytestmark = pytest.mark.workflow

TINY_TRAIN = {"embed_dim": 16, "hidden_dim": 24, "attention_dim": 12, "batch_size": 16, "max_epochs": 2}
TINY_DEMO = {
    "demo": {"train": 12, "val": 4, "test": 4, "image_size": 128},
    "datasets": {"demo": {"features": {"batch_size": 8, "workers": 1}, "train": TINY_TRAIN}},
}


# The outputs of every stage that draws random numbers or runs float kernels (generation, CNN, training, beam).
RANDOM_STAGES = [
    "demo/features/efficientnet_lite0.h5",
    "demo/soft/model.pt",
    "demo/hard/model.pt",
    "demo/soft/captions_test.json",
    "demo/hard/captions_test.json",
    "demo/soft/attention_test.h5",
    "demo/hard/attention_test.h5",
]


def snakemake(workdir, *args, config=None, check=True):
    """Run the repository's workflow in ``workdir`` with ``config`` layered over config.yaml."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    if config is not None:  # last: --configfile takes every argument after it
        (workdir / "test_config.yaml").write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(workdir / "test_config.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def digests(root, paths):
    return {p: hashlib.md5((root / p).read_bytes()).hexdigest() for p in paths}


def assert_same_features(a, b):
    """Two features files hold the same data and attributes (their HDF5 layout may differ)."""
    with h5py.File(a) as one, h5py.File(b) as two:
        assert set(one) == set(two)
        for name in one:
            assert np.array_equal(one[name][:], two[name][:]), name
        assert {k: str(v) for k, v in one.attrs.items()} == {k: str(v) for k, v in two.attrs.items()}


def check_data_stages(results, dataset):
    """The artifacts of one dataset agree with each other row by row."""
    captions = pd.read_csv(results / dataset / "captions.csv", keep_default_na=False)
    images = pd.read_csv(results / dataset / "images.csv")
    vocab = pd.read_csv(results / dataset / "vocab.csv", keep_default_na=False)
    lengths = json.loads((results / dataset / "lengths.json").read_text())
    assert vocab["word"][:4].tolist() == ["<pad>", "<start>", "<end>", "<unk>"]
    words = dict(zip(vocab["index"], vocab["word"]))
    with h5py.File(results / dataset / "captions.h5") as f:
        tokens, n = f["tokens"][:], f["lengths"][:]
        assert len(tokens) == len(captions)
        assert np.array_equal(f["image_index"][:], captions["image_index"].to_numpy())
        row = 0
        decoded = [words[i] for i in tokens[row, 1 : n[row] + 1]]
        assert [w if w in set(vocab["word"]) else "<unk>" for w in captions["tokens"][row].split()] == decoded
    train = set(np.flatnonzero(captions["split"].to_numpy() == "train"))
    indexed = [i for rows in lengths["lengths"].values() for i in rows]
    assert sorted(indexed) == sorted(train)
    assert all(len(captions["tokens"][i].split()) == int(k) for k, rows in lengths["lengths"].items() for i in rows)
    (features_file,) = (results / dataset / "features").glob("*.h5")
    with h5py.File(features_file) as f:
        assert f["features"].dtype == np.float16
        assert f["features"].shape[0] == len(images)
        assert f["image_ids"][:].tolist() == images["image_id"].tolist()
        assert f["features"].chunks == (1, *f["features"].shape[1:])
        assert np.isfinite(f["features"][0].astype(np.float32)).all()
        return dict(f.attrs), f["features"].shape


def test_demo_data_stages_run_end_to_end_and_are_reproducible(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    snakemake(one, config=TINY_DEMO)
    # The second run stops where randomness ends: scores and figures are functions of the decoded captions.
    snakemake(two, *(f"results/{p}" for p in RANDOM_STAGES), config=TINY_DEMO)
    attrs, shape = check_data_stages(one / "results", "demo")
    assert attrs["encoder"] == "efficientnet_lite0" and attrs["layer"] == "blocks.4"
    assert shape == (20, 196, 112)
    assert "nothing to be done" in snakemake(one, "-n", config=TINY_DEMO).stdout.lower()
    artifacts = [
        "data/demo/dataset_demo.json",
        "data/demo/objects.json",
        "data/demo/images/demo_000000.jpg",
        "demo/captions.csv",
        "demo/vocab.csv",
        "demo/captions.h5",
        "demo/lengths.json",
        *RANDOM_STAGES,
    ]
    assert digests(one / "results", artifacts) == digests(two / "results", artifacts)
    assert (one / "results" / "logs" / "demo" / "features_efficientnet_lite0.log").stat().st_size > 0
    assert (one / "results" / "benchmarks" / "demo" / "prepare.tsv").exists()
    for model in ("soft", "hard"):
        log = pd.read_csv(one / "results" / "demo" / model / "train_log.csv")
        assert list(log["epoch"]) == [1, 2]
        assert (one / "results" / "demo" / model / "curves.png").stat().st_size > 0
    assert not (one / "results" / "checkpoints" / "demo" / "soft.pt").exists()
    table = pd.read_csv(one / "results" / "table1.csv")
    assert table[["dataset", "model"]].values.tolist() == [["demo", "soft"], ["demo", "hard"]]
    assert {"bleu_4", "meteor", "cider", "coco_bleu_4", "pointing", "naming"} <= set(table.columns)
    metrics = pd.read_csv(one / "results" / "demo" / "soft" / "metrics_test.csv")
    assert metrics["images"].item() == 4
    assert len(list((one / "results" / "demo" / "hard" / "figures_test").glob("*.png"))) == 4

    report = snakemake(one, "--report", "report.html", config=TINY_DEMO)
    assert (one / "report.html").stat().st_size > 100_000, report.stderr


def test_results_and_data_under_a_folder_with_a_space_and_a_quote_stay_there(tmp_path):
    """Every path reaches the shell quoted: the data stages run, and nothing lands outside the two folders."""
    odd = tmp_path / "Bob's data folder"
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = TINY_DEMO | {"results": str(odd / "results"), "data_dir": str(odd / "data")}
    targets = [str(odd / "results" / "demo" / name) for name in ("captions.h5", "lengths.json")]
    snakemake(workdir, *targets, str(odd / "results" / "demo" / "features" / "efficientnet_lite0.h5"), config=config)
    check_data_stages(odd / "results", "demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([odd.name, "work"])
    assert sorted(p.name for p in workdir.iterdir()) == [".snakemake", "test_config.yaml"]
    assert sorted(p.name for p in odd.iterdir()) == ["data", "results"]


def test_a_url_that_would_run_a_command_is_refused_by_the_schema(tmp_path):
    marker = tmp_path / "ran"
    config = {"archives": {"caption_datasets.zip": {"url": f"http://x/a'$(touch {marker})'", "md5": None}}}
    result = snakemake(tmp_path, "flickr8k_soft", config=config, check=False)
    assert result.returncode != 0 and "archives.caption_datasets.zip.url" in result.stdout + result.stderr
    assert not marker.exists()


def test_every_table1_row_is_a_named_target(tmp_path):
    for target in ("demo_soft", "flickr8k_hard", "coco_soft", "table1"):
        out = snakemake(tmp_path, "-n", target, config=TINY_DEMO).stdout
        assert "rule train:" in out or target == "table1" and "rule table1:" in out
    out = snakemake(tmp_path, "-n", "flickr8k_soft", config=TINY_DEMO).stdout
    assert "rule fetch:" in out and "rule evaluate:" in out and "rule grounding:" not in out


def test_train_threads_auto_trains_side_by_side_in_bfloat16_and_in_turn_on_all_cores_in_float32(tmp_path):
    def train_threads(precision):
        config = {"train_threads": "auto", "defaults": {"train": {"precision": precision}}}
        out = snakemake(tmp_path, "-n", "flickr8k_soft", "flickr8k_hard", config=config).stdout
        jobs = [job for job in out.split("rule ") if job.startswith("train:")]
        return [int(re.search(r"threads: (\d+)", job)[1]) if "threads:" in job else 1 for job in jobs]

    assert train_threads("bfloat16") == [1, 1]
    assert train_threads("float32") == [2, 2]


def test_an_invalid_config_stops_the_run_naming_the_key(tmp_path):
    result = snakemake(tmp_path, "-n", config={"demo": {"train": -5}}, check=False)
    assert result.returncode != 0
    assert "demo.train: -5 is less than the minimum of 1" in result.stdout + result.stderr


def test_features_in_shards_merge_into_what_one_job_writes(tmp_path):
    target = "results/demo/features/efficientnet_lite0.h5"
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for workdir, shards in ((single, 1), (sharded, 3)):
        workdir.mkdir()
        config = {
            **TINY_DEMO,
            "datasets": {
                "demo": {**TINY_DEMO["datasets"]["demo"], "features": {"batch_size": 8, "workers": 1, "shards": shards}}
            },
        }
        result = snakemake(workdir, target, config=config)
    out = result.stdout + result.stderr
    assert out.count("rule features_shard:") == 3 and "rule merge_features:" in out
    assert_same_features(single / target, sharded / target)
    assert not list((sharded / "results" / "demo" / "features" / "shards").glob("*.h5")), "shards are temporary"
    logs = sorted(p.name for p in (sharded / "results" / "logs" / "demo").glob("features_*-of-3.log"))
    assert logs == [f"features_efficientnet_lite0.{k}-of-3.log" for k in range(3)]


def test_train_processes_run_the_train_rule_as_ddp_processes_under_torchrun(tmp_path):
    snakemake(tmp_path, "results/demo/soft/model.pt", config={**TINY_DEMO, "train_processes": 2})
    log = (tmp_path / "results" / "logs" / "demo" / "train_soft.log").read_text()
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log and "x 2 processes" in log
    assert len(pd.read_csv(tmp_path / "results" / "demo" / "soft" / "train_log.csv")) == TINY_TRAIN["max_epochs"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_job_declared_to_have_a_gpu_on_a_machine_without_one_fails_saying_so(tmp_path):
    result = snakemake(
        tmp_path, "results/demo/features/efficientnet_lite0.h5", config={**TINY_DEMO, "gpus": 1}, check=False
    )
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "demo" / "features_efficientnet_lite0.log").read_text()
    assert "declared to have 1 GPU(s) (resource gpu=1) but 0 are visible" in log
    assert not list((tmp_path / "results" / "demo" / "features").glob("*.h5*"))


def test_workflow_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--lint"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_slurm_profile_plans_every_job_with_resources(tmp_path):
    result = snakemake(
        tmp_path,
        "-n",
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--slurm-no-account",
        config=TINY_DEMO,
    )
    out = result.stdout + result.stderr
    for rule in (
        "demo_dataset",
        "prepare",
        "vocab",
        "encode",
        "lengths",
        "features",
        "train",
        "decode",
        "evaluate",
        "figures",
        "grounding",
        "table1",
    ):
        assert f"rule {rule}:" in out
    assert "gpu=1" in out.replace(" ", "")


@pytest.mark.skipif(not FLICKR8K_SAMPLE.is_dir(), reason="real Flickr8k sample (../shared/data) not present")
def test_real_flickr8k_sample_flows_from_a_loopback_http_server_to_table1(tmp_path, range_server_factory):
    server = range_server_factory(FLICKR8K_SAMPLE)
    md5 = {
        name: hashlib.md5((FLICKR8K_SAMPLE / name).read_bytes()).hexdigest()
        for name in ("Flickr8k_Dataset.zip", "caption_datasets.zip")
    }
    config = {
        "run": ["flickr8k"],
        "archives": {name: {"url": server.url(name), "md5": md5[name]} for name in md5},
        "datasets": {
            "flickr8k": {
                "features": {  # two encoders stacked, as the flickr8k preset stacks three
                    "encoder": "efficientnet_lite0+efficientnet_lite1",
                    "layer": "blocks.4",
                    "image_size": 96,
                    "batch_size": 32,
                },
                "train": TINY_TRAIN | {"max_epochs": 1, "batch_size": 64},
            }
        },
    }
    snakemake(tmp_path, config=config)
    attrs, shape = check_data_stages(tmp_path / "results", "flickr8k")
    assert shape == (991, 36, 112 + 112)
    assert attrs["image_size"] == 96
    fetched = {entry["path"].rsplit("/", 1)[-1] for entry in server.log}
    assert fetched == set(md5)
    assert not list((tmp_path / "results" / "data").rglob("*.partial"))
    for model in ("soft", "hard"):
        assert len(pd.read_csv(tmp_path / "results" / "flickr8k" / model / "train_log.csv")) == 1
    table = pd.read_csv(tmp_path / "results" / "table1.csv")
    assert table["xu2015_bleu_4"].tolist() == [19.5, 21.3] and (table["images"] == 125).all()
