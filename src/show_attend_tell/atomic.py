"""Write outputs under a temporary name and rename them into place, so no half-written file survives."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import SatError


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary sibling of ``path`` that work in progress is written to."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it.

    ``keep_partial`` leaves the temporary file after a failure, for work that resumes from it.
    Works for files and directories. A place that cannot be written (a read-only file system, a parent
    that is a file) is a SatError naming the output, not a traceback.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(path, e) from e
    try:
        yield tmp
    except BaseException as e:
        if not keep_partial:
            with contextlib.suppress(OSError):
                remove(tmp)
        if isinstance(e, OSError) and str(tmp) in f"{e.filename} {e}":
            raise _unwritable(path, e) from e
        raise
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as e:
        raise _unwritable(path, e) from e


def _unwritable(path: Path, e: OSError) -> SatError:
    return SatError(f"cannot write {path}: {e.strerror or str(e).splitlines()[0]}")


def remove(path: str | os.PathLike) -> None:
    """Remove a file, link or directory if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
