"""Data-parallel training under torchrun, tested with 2 CPU processes (gloo): same gradients, same run, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import pandas as pd
import pytest
import torch
from conftest import TESTS
from test_train import TIMING, TINY, run, sigterm_at_batch

from show_attend_tell.demo_stages import train_command
from show_attend_tell.distributed import World
from show_attend_tell.errors import SatError

# Exact settings: without dropout and (hard) with the expected context only, no draw depends on the process count.
EXACT = TINY | {"dropout": 0.0}


def torchrun(*args: str, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]


def sat_train(stages, out, processes: int, settings: dict) -> list[str]:
    return train_command(
        stages, out, settings, "--seed", "0", "--threads", "2", "--device", "cpu", "--processes", str(processes)
    )


def test_a_process_shares_a_batch_by_rows_and_weights_its_mean_loss_by_its_share():
    rows = torch.arange(5).numpy()
    shares = [World(rank, 2).share(rows) for rank in range(2)]
    assert [s[0].tolist() for s in shares] == [[0, 2, 4], [1, 3]]
    assert [s[1] for s in shares] == [2 * 3 / 5, 2 * 2 / 5]
    one_row = [World(rank, 2).share(rows[:1]) for rank in range(2)]
    assert [(s[0].tolist(), s[1]) for s in one_row] == [([0], 2.0), ([0], 0.0)]


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_two_processes_compute_the_gradients_of_one_process_with_the_same_global_batch(stages, tmp_path, attention):
    settings = json.dumps(EXACT | {"attention": attention, "semi_sampling_p": 1.0})
    script = str(TESTS / "ddp_gradients.py")
    for command in (
        [sys.executable, script, str(stages), settings, str(tmp_path / "one.pt")],
        torchrun(script, str(stages), settings, str(tmp_path / "two.pt")),
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command[:6])} ...:\n{result.stderr[-5000:]}"
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("one", "two"))
    assert one["sizes"][0] == TINY["batch_size"] and one["sizes"][1:] == [3, 1]
    for a, b in zip(one["results"], two["results"], strict=True):
        assert a["step"]["captions"] == b["step"]["captions"] and a["step"]["words"] == b["step"]["words"]
        assert b["step"]["loss"] == pytest.approx(a["step"]["loss"], rel=1e-5)
        assert b["step"]["nll"] == pytest.approx(a["step"]["nll"], rel=1e-5)
        for name, grad in a["grads"].items():
            torch.testing.assert_close(b["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_two_process_run_resumes_a_one_process_checkpoint_to_the_same_training(stages, tmp_path, monkeypatch):
    # A node budget that holds the features for one process, not for two: those read them per batch.
    with h5py.File(stages / "features.h5") as f:
        settings = EXACT | {"features_memory_gb": 1.5 * f["features"].nbytes / 2**30}
    clean = tmp_path / "clean"
    run(stages, clean, **settings)
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:
        sigterm_at_batch(m, 3)
        with pytest.raises(SatError, match="stopped by SIGTERM in epoch 1"):
            run(stages, resumed, **settings)
    result = subprocess.run(sat_train(stages, resumed, 2, settings), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "x 2 processes" in result.stderr
    assert "reading it per batch" in result.stderr
    assert not (resumed / "checkpoint.pt").exists()
    logs = [pd.read_csv(d / "train_log.csv").drop(columns=TIMING) for d in (clean, resumed)]
    pd.testing.assert_frame_equal(*logs, rtol=1e-4)


def test_sigterm_to_torchrun_stops_every_process_after_one_batch_and_one_process_finishes_the_run(stages, tmp_path):
    settings = TINY | {"max_epochs": 10, "patience": 10}
    job = subprocess.Popen(sat_train(stages, tmp_path, 2, settings), stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first epoch's checkpoint: training is under way in both processes
    os.kill(job.pid, signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "stopped by SIGTERM" in stderr and "checkpoint saved" in stderr, stderr[-3000:]
    assert checkpoint.exists() and not (tmp_path / "model.pt").exists()
    table = run(stages, tmp_path, **settings)  # one process continues the two processes' checkpoint
    assert list(table["epoch"]) == list(range(1, 11))
    assert (tmp_path / "model.pt").exists() and not checkpoint.exists()


def test_two_processes_run_the_self_critical_epochs_each_sampling_its_share_of_the_images(stages, tmp_path):
    settings = TINY | {"max_epochs": 1, "self_critical_epochs": 1}
    result = subprocess.run(sat_train(stages, tmp_path, 2, settings), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "x 2 processes" in result.stderr and "self-critical fine-tuning: 1 epochs" in result.stderr
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log["objective"]) == ["cross_entropy", "self_critical"] and log["reward"].iloc[1] > 0
