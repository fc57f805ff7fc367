"""How many threads a training job takes: what `train_threads` says, or for auto what the job may train in."""

import pytest

from show_attend_tell import cpu


@pytest.mark.parametrize(
    "native, precision, threads",
    [
        (True, "auto", 1),  # bfloat16 side by side: overhead-bound steps gain little from a second thread
        (True, "bfloat16", 1),
        (True, "float32", 2),  # float32 gains ~1.8x from two threads: one model after the other
        (False, "auto", 2),  # auto is float32 without native bfloat16
        (False, "float32", 2),
        (False, "bfloat16", 1),
    ],
)
def test_auto_gives_one_thread_where_the_job_may_train_in_bfloat16_and_all_where_float32(
    monkeypatch, native, precision, threads
):
    monkeypatch.setattr(cpu, "native_bfloat16", lambda: native)
    assert cpu.training_threads("auto", precision, threads=2) == threads


def test_a_number_of_threads_is_taken_as_given(monkeypatch):
    monkeypatch.setattr(cpu, "native_bfloat16", lambda: False)
    assert cpu.training_threads(1, "float32", threads=2) == 1
    assert cpu.training_threads(4, "bfloat16", threads=2) == 4


def test_the_cpu_is_named_and_its_bfloat16_read_from_its_flags():
    assert cpu.model()
    flags = cpu._cpuinfo().split()
    assert cpu.native_bfloat16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
