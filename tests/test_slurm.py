"""The workflow, unchanged, on a real one-node SLURM cluster: jobs go through sbatch, outputs equal a local run's."""

from __future__ import annotations

import getpass
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import slurm_cluster
import yaml
from conftest import REPO
from test_workflow import TINY_DEMO, TINY_TRAIN, assert_same_features, digests, snakemake

pytestmark = pytest.mark.workflow

TARGETS = ["results/demo/captions.h5", "results/demo/lengths.json", "results/demo/features/efficientnet_lite0.h5"]
ARTIFACTS = ["demo/captions.csv", "demo/vocab.csv", "demo/captions.h5", "demo/lengths.json"]


def on_slurm(workdir, *args):
    """The snakemake command line that runs the workflow in ``workdir`` through sbatch (config in config.yaml)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--executor",
        "slurm",
        "--jobs",
        "4",
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
        "--latency-wait",
        "10",
        *args,
    ]


def slurm_jobs(out: str) -> list[tuple[str, str]]:
    """(SLURM job id, rule) of every job snakemake submitted, from its output."""
    return re.findall(r"SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    try:
        running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"could not start a local SLURM cluster: {e}")
    yield running
    running.stop()


def test_the_data_stages_run_as_slurm_jobs_and_equal_a_local_run(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    remote.mkdir()
    snakemake(local, *TARGETS, config=TINY_DEMO)
    # The cluster run encodes the features in two shard jobs: merged, they equal the local single job's.
    sharded = {
        **TINY_DEMO,
        "datasets": {
            "demo": {**TINY_DEMO["datasets"]["demo"], "features": {"batch_size": 8, "workers": 1, "shards": 2}}
        },
    }
    (remote / "config.yaml").write_text(yaml.safe_dump(sharded))
    result = subprocess.run(on_slurm(remote, *TARGETS), capture_output=True, text=True, env=cluster.env, cwd=remote)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    submitted = {rule: job for job, rule in slurm_jobs(out)}
    assert set(submitted) >= {
        "demo_dataset",
        "prepare",
        "vocab",
        "encode",
        "lengths",
        "features_shard",
        "merge_features",
    }
    for rule, job in submitted.items():
        assert list((remote / ".snakemake" / "slurm_logs").glob(f"rule_{rule}/**/{job}.log")), rule
    assert digests(remote / "results", ARTIFACTS) == digests(local / "results", ARTIFACTS)
    assert_same_features(remote / TARGETS[-1], local / TARGETS[-1])


def test_a_training_job_cancelled_on_the_cluster_resumes_when_snakemake_resubmits_it(cluster, tmp_path):
    long = {
        **TINY_DEMO,
        "datasets": {
            "demo": {**TINY_DEMO["datasets"]["demo"], "train": TINY_TRAIN | {"max_epochs": 40, "patience": 40}}
        },
    }
    snakemake(tmp_path, *TARGETS, config=long)  # the data stages, locally
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(long))
    output = tmp_path / "snakemake.out"
    with output.open("w") as sink:
        run = subprocess.Popen(
            on_slurm(tmp_path, "--retries", "1", "results/demo/soft/model.pt"),
            env=cluster.env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    checkpoint = tmp_path / "results" / "checkpoints" / "demo" / "soft.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "training never wrote its first checkpoint"
    subprocess.run(["scancel", "--user", getpass.getuser()], env=cluster.env, check=True)  # as a pre-emption
    run.wait(timeout=600)
    out = output.read_text()
    assert run.returncode == 0, out[-5000:]
    trains = [job for job, rule in slurm_jobs(out) if rule == "train"]
    assert len(set(trains)) == 2, out[-5000:]  # the cancelled job and its resubmission
    log = (tmp_path / "results" / "logs" / "demo" / "train_soft.log").read_text()
    # Mid-epoch: the job caught SLURM's SIGTERM and saved where it was (epoch-end checkpoints say batch 0).
    assert re.search(r"resuming from \S+: epoch \d+, batch [1-9]", log), log[-3000:]
    assert len(pd.read_csv(tmp_path / "results" / "demo" / "soft" / "train_log.csv")) == 40
    assert not checkpoint.exists()
