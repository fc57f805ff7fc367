"""Atomic outputs: nothing half-written survives, and a place that cannot be written gets one line."""

from __future__ import annotations

import pytest
import torch

from show_attend_tell.atomic import atomic_output, save_torch
from show_attend_tell.errors import SatError


def test_a_failure_leaves_neither_the_output_nor_its_partial(tmp_path):
    with pytest.raises(ValueError), atomic_output(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise ValueError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_writers_of_one_shared_output_at_once_each_use_their_own_partial_and_the_last_wins(tmp_path):
    out = tmp_path / "cache.json"
    with atomic_output(out, shared=True) as first, atomic_output(out, shared=True) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert out.read_text() == "first"  # the outer writer finished last
    assert list(tmp_path.iterdir()) == [out]


def test_two_writers_of_a_plain_output_at_once_the_later_fails_clearly_and_the_output_is_whole(tmp_path):
    out = tmp_path / "model.pt"
    with pytest.raises(SatError, match="cannot write"), atomic_output(out) as first:
        first.write_text("first")
        with atomic_output(out) as second:  # the same partial: what a shared output avoids
            second.write_text("second")
    assert out.read_text() == "second"


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


def test_a_file_output_named_like_an_existing_folder_is_refused_and_the_folder_kept(tmp_path):
    folder = tmp_path / "existing_folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "work.txt").write_text("the user's")
    with pytest.raises(SatError, match=r"existing_folder is a folder: refusing"):
        with atomic_output(folder) as tmp:
            tmp.write_text("vocab")
    assert (folder / "sub" / "work.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_folder"]


def test_a_folder_output_replaces_an_empty_folder_or_one_written_here(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for text in ("first", "second"):  # empty, then the first run's own folder
        with atomic_output(out, folder=True) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text(text)
        assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the mark adds no file
        assert (out / "a.txt").read_text() == text


def test_a_folder_output_never_replaces_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.jpg").write_text("the user's")
    with pytest.raises(SatError, match=r"out is a folder this tool did not write: refusing"):
        with atomic_output(out, folder=True) as tmp:
            tmp.mkdir()
    assert (out / "photo.jpg").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_written_here_that_the_user_added_to_is_kept(tmp_path):
    out = tmp_path / "out"
    with atomic_output(out, folder=True) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("ours")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(SatError, match=r"did not write"), atomic_output(out, folder=True) as tmp:
        tmp.mkdir()
    assert (out / "notes.txt").read_text() == "the user's"


def test_a_folder_that_takes_no_new_files_is_refused_before_the_work_starts():
    started = []
    with pytest.raises(SatError, match=r"cannot write /proc/self/model.pt: "):
        with atomic_output("/proc/self/model.pt"):
            started.append(True)
    assert not started


def test_a_full_disk_while_saving_weights_is_one_clear_error_and_leaves_nothing(tmp_path):
    (tmp_path / "model.pt.partial").symlink_to("/dev/full")  # every write to it fails with ENOSPC
    with pytest.raises(SatError, match=r"cannot write .*model.pt: No space left on device"):
        with atomic_output(tmp_path / "model.pt") as tmp:
            save_torch({"weights": torch.zeros(100_000)}, tmp)
    assert list(tmp_path.iterdir()) == []
