"""Write outputs under a temporary name and rename them into place, so no half-written file survives."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import SatError, first_line

# The nanoseconds of the modification time given to every folder written here: the mark that lets a later run
# replace it. A mark rather than a file inside, since a folder's listing is the stage's output; adding or
# removing an entry (the user's work) changes the time and so erases the mark.
FOLDER_MARK_NS = 271_828_182
# Errors of the place written to, whichever file they name (a full disk names none).
_PLACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary sibling of ``path`` that work in progress is written to."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, keep_partial: bool = False, folder: bool = False, shared: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on failure remove it.

    ``keep_partial`` leaves the temporary file after a failure, for work that resumes from it.
    ``folder``: the output is a directory. A file output never replaces a folder, and a folder output only
    an empty one or one written here (marked), so a mistyped output name cannot delete the user's folder.
    ``shared``: other processes may write ``path`` at the same time (a per-machine cache), so each writes a
    temporary file of its own name, and the last to finish wins.
    A place that cannot be written (a read-only file system, a parent that is a file) is a SatError naming
    the output, not a traceback.
    """
    path = Path(path)
    check_writable(path, folder)
    tmp = _own_partial(path) if shared else partial_path(path)
    try:
        yield tmp
    except BaseException as e:
        if not keep_partial:
            with contextlib.suppress(OSError):
                remove(tmp)
        if isinstance(e, OSError) and (e.errno in _PLACE_ERRORS or str(tmp) in f"{e.filename} {e}"):
            raise _unwritable(path, e) from e
        raise
    _check_replaceable(path, folder)  # again: the work may have taken long
    try:
        if folder:
            _mark(tmp)
        if _is_folder(path):
            shutil.rmtree(path)  # empty, or written here: checked above
        os.replace(tmp, path)
    except OSError as e:
        raise _unwritable(path, e) from e


def _own_partial(path: Path) -> Path:
    """A temporary sibling of ``path`` that no other process uses: ``path``'s partial name and a unique part."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".partial")
    except OSError as e:
        raise _unwritable(path, e) from e
    os.close(fd)
    return Path(name)


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """SatError unless ``path`` can be written as an output (its folder made, a file created in it, no folder
    of the user's in the way): long work checks its outputs first, so it does not fail only at the end."""
    path = Path(path)
    _check_replaceable(path, folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise _unwritable(path, e) from e


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a Python file, so that a full disk is an OSError like any other write
    (torch's own file writer reports it as a RuntimeError about zip positions)."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def _is_folder(path: Path) -> bool:
    """A real directory; a link to one is replaced as a link, its target left alone."""
    return path.is_dir() and not path.is_symlink()


def _check_replaceable(path: Path, folder: bool) -> None:
    """Refuse to replace a folder with a file, or a folder this module did not write that holds anything."""
    if not _is_folder(path):
        return
    if not folder:
        raise SatError(f"{path} is a folder: refusing to replace it with a file (remove it, or name another output)")
    if path.stat().st_mtime_ns % 10**9 != FOLDER_MARK_NS and any(path.iterdir()):
        raise SatError(
            f"{path} is a folder this tool did not write: refusing to replace it (remove it, or name another output)"
        )


def _mark(folder: Path) -> None:
    """Give ``folder`` the modification time (now, to the second) that says this module wrote it."""
    ns = int(folder.stat().st_mtime) * 10**9 + FOLDER_MARK_NS
    os.utime(folder, ns=(ns, ns))


def _unwritable(path: Path, e: OSError) -> SatError:
    return SatError(f"cannot write {path}: {e.strerror or first_line(e)}")


def remove(path: str | os.PathLike) -> None:
    """Remove a file, link or directory if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
