"""Atomic outputs: nothing half-written survives, and a place that cannot be written gets one line."""

from __future__ import annotations

import pytest

from show_attend_tell.atomic import atomic_output
from show_attend_tell.errors import SatError


def test_a_failure_leaves_neither_the_output_nor_its_partial(tmp_path):
    with pytest.raises(ValueError), atomic_output(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise ValueError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_an_output_whose_parent_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "results").write_text("a file where a folder should be")
    with pytest.raises(SatError, match=r"cannot write .*results/demo/vocab.csv: (Not a directory|File exists)"):
        with atomic_output(tmp_path / "results" / "demo" / "vocab.csv") as tmp:
            tmp.write_text("x")


def test_a_partial_that_cannot_be_opened_is_one_clear_error(tmp_path):
    (tmp_path / "out.txt.partial").mkdir()  # something in the way of the temporary file
    with pytest.raises(SatError, match=r"cannot write .*out.txt: Is a directory"):
        with atomic_output(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
