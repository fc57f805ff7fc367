"""Write outputs under a temporary name and rename them into place, so no half-written file survives."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary sibling of ``path`` that work in progress is written to."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it.

    ``keep_partial`` leaves the temporary file after a failure, for work that resumes from it.
    Works for files and directories.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        if not keep_partial:
            remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


def remove(path: str | os.PathLike) -> None:
    """Remove a file, link or directory if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
