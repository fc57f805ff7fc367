"""The workflow, unchanged, on a real one-node SLURM cluster: jobs go through sbatch, outputs equal a local run's."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import slurm_cluster
from conftest import REPO
from test_workflow import TINY_DEMO, digests, snakemake

pytestmark = pytest.mark.workflow

TARGETS = ["results/demo/captions.h5", "results/demo/lengths.json", "results/demo/features/efficientnet_lite0.h5"]
ARTIFACTS = ["demo/captions.csv", "demo/vocab.csv", "demo/captions.h5", "demo/lengths.json",
             "demo/features/efficientnet_lite0.h5"]


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
    (remote / "config.yaml").write_text((local / "test_config.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(remote),
           "--configfile", str(remote / "config.yaml"), "--executor", "slurm", "--jobs", "4",
           "--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-keep-successful-logs",
           "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
           "--latency-wait", "10", *TARGETS]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cluster.env, cwd=remote)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    submitted = {rule: job for job, rule in re.findall(r"SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", out)}
    assert set(submitted) >= {"demo_dataset", "prepare", "vocab", "encode", "lengths", "features"}
    for rule, job in submitted.items():
        assert list((remote / ".snakemake" / "slurm_logs").glob(f"rule_{rule}/**/{job}.log")), rule
    assert digests(remote / "results", ARTIFACTS) == digests(local / "results", ARTIFACTS)
