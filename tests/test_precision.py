"""Precision: auto takes bfloat16 only where this machine's own probe finds it clearly faster."""

from __future__ import annotations

import time

import pytest
import torch

from show_attend_tell import precision
from show_attend_tell.errors import SatError

CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type: True)


def timings(**seconds):
    """A probe that answers these seconds per step and records what it was asked."""
    asked = []

    def probe(name):
        asked.append(name)
        return seconds[name]

    probe.asked = asked
    return probe


@pytest.mark.parametrize(
    ("fp32", "bf16", "expected"),
    [
        (1.0, 0.4, "bfloat16"),  # clearly faster
        (1.0, 0.9, "float32"),  # faster, but within what timing noise could flip
        (1.0, 1.5, "float32"),  # slower, as at small model sizes
        (1.0, 80.0, "float32"),  # emulated
    ],
)
def test_auto_never_picks_a_precision_its_probe_found_slower(native, fp32, bf16, expected):
    probe = timings(float32=fp32, bfloat16=bf16)
    assert precision.choose("auto", CPU, probe) == expected
    assert probe.asked == ["float32", "bfloat16"] * 3  # in turn, best of three each


def test_auto_keeps_each_precisions_best_time_so_a_busy_moment_does_not_decide(native):
    times = {"float32": iter([3.0, 1.0, 1.0]), "bfloat16": iter([0.9, 0.9, 0.9])}  # float32 was slowed once
    assert precision.choose("auto", CPU, lambda name: next(times[name])) == "float32"


def test_auto_without_native_bfloat16_is_float32_without_probing(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type: False)
    probe = timings()  # any call would raise KeyError
    assert precision.choose("auto", CPU, probe) == "float32" and probe.asked == []


@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_an_explicit_precision_is_taken_as_given(name):
    probe = timings()
    assert precision.choose(name, CPU, probe) == name and probe.asked == []


def test_an_unknown_precision_is_named():
    with pytest.raises(SatError, match="unknown precision 'fp8'; choose one of auto, float32, bfloat16, float16"):
        precision.choose("fp8", CPU, timings())


@pytest.mark.parametrize("float16", [False, True])
def test_float16_is_refused_off_cuda_and_wherever_gradients_are_computed(float16):
    with pytest.raises(SatError, match="float16 is for feature extraction on CUDA only"):
        precision.choose("float16", CPU, timings(), float16=float16)
    with pytest.raises(SatError, match="float16 is for feature extraction on CUDA only"):
        precision.choose("float16", torch.device("cuda"), timings())  # training: float16 not allowed


@pytest.mark.parametrize(("fp16", "expected"), [(0.3, "float16"), (0.9, "float32")])
def test_auto_on_a_cuda_gpu_without_native_bfloat16_probes_float16_where_allowed(monkeypatch, fp16, expected):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type: False)
    monkeypatch.setattr(precision, "device_name", lambda device: "Tesla V100")
    gpu = torch.device("cuda")
    probe = timings(float32=1.0, float16=fp16)
    assert precision.choose("auto", gpu, probe, float16=True) == expected
    assert set(probe.asked) == {"float32", "float16"}
    untouched = timings()  # training (float16 not allowed) keeps float32 without probing
    assert precision.choose("auto", gpu, untouched) == "float32" and untouched.asked == []


def test_the_real_probe_here_picks_the_faster_of_what_it_measured():
    """On this machine, timing a real matmul-heavy step: the choice is never the slower measurement."""
    measured: dict[str, list[float]] = {}

    def probe(name):
        a = torch.randn(256, 512)
        b = torch.randn(512, 512)
        with precision.autocast(CPU, name):
            t0 = time.perf_counter()
            for _ in range(20):
                a @ b
            measured.setdefault(name, []).append(time.perf_counter() - t0)
        return measured[name][-1]

    chosen = precision.choose("auto", CPU, probe)
    if measured:  # native bfloat16 here: both were timed, and each is judged by its best time
        best = {name: min(times) for name, times in measured.items()}
        assert best[chosen] <= min(best.values()) * precision.MIN_SPEEDUP
    else:
        assert chosen == "float32" and not precision.native_bfloat16("cpu")


def test_bfloat16_autocast_computes_matmuls_in_bfloat16_and_float32_does_not():
    a = torch.randn(4, 8)
    with precision.autocast(CPU, "bfloat16"):
        assert (a @ a.T).dtype == torch.bfloat16
    with precision.autocast(CPU, "float32"):
        assert (a @ a.T).dtype == torch.float32


def test_a_verdict_is_remembered_per_machine_and_workload(native):
    first = timings(float32=1.0, bfloat16=0.5)
    assert precision.choose("auto", CPU, first, workload="train L=49") == "bfloat16" and first.asked
    again = timings()  # probing again would raise: the first verdict stands, so runs cannot flip near the threshold
    assert precision.choose("auto", CPU, again, workload="train L=49") == "bfloat16" and again.asked == []
    other = timings(float32=1.0, bfloat16=2.0)
    assert precision.choose("auto", CPU, other, workload="train L=196") == "float32" and other.asked
    assert precision.verdicts_file().exists()


def test_a_verdicts_file_that_cannot_be_written_costs_only_a_probe_next_time(native, monkeypatch, tmp_path):
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not_a_folder"))
    assert precision.choose("auto", CPU, timings(float32=1.0, bfloat16=0.5), workload="w") == "bfloat16"
    probe = timings(float32=1.0, bfloat16=0.5)
    assert precision.choose("auto", CPU, probe, workload="w") == "bfloat16" and probe.asked


def test_an_unreadable_verdicts_file_means_measuring_again(native):
    precision.verdicts_file().parent.mkdir(parents=True, exist_ok=True)
    precision.verdicts_file().write_text("{torn")
    probe = timings(float32=1.0, bfloat16=0.5)
    assert precision.choose("auto", CPU, probe, workload="w") == "bfloat16" and probe.asked
