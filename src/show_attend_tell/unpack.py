"""Unpack downloaded archives (zip, or tar plain/gz/bz2/xz) into a folder: all or nothing, and nothing outside it."""

from __future__ import annotations

import lzma
import os
import tarfile
import zipfile
import zlib
from pathlib import Path

from .atomic import atomic_output, partial_path, remove
from .errors import SatError
from .progress import progress_bar

# Raised while reading broken archives: bad zip/tar structure, CRC errors, truncated compressed streams.
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


def unpack(archive: str | os.PathLike, dest_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Extract a zip or tar (plain, gz, bz2, xz) archive into ``dest_dir``, all or nothing.

    Members are written to ``dest_dir.partial`` and renamed into place at the end, so an interrupted
    or failed extraction never leaves a folder that looks complete. Members that would land outside
    ``dest_dir`` are refused: archives come from the internet.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise SatError(f"archive {archive} not found")
    remove(partial_path(dest_dir))
    try:
        with atomic_output(dest_dir, folder=True) as tmp:
            tmp.mkdir()
            # By content, not name: a download may be saved under any name.
            if zipfile.is_zipfile(archive):
                _unpack_zip(archive, tmp, progress)
            elif tarfile.is_tarfile(archive):
                _unpack_tar(archive, tmp, progress)
            else:
                raise _corrupt(archive, "neither a zip nor a tar archive")
    except tarfile.FilterError as e:
        raise SatError(f"refusing to extract {archive}: {e}") from e
    except ARCHIVE_ERRORS as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a real I/O problem (disk full, permissions), not a damaged archive
        raise _corrupt(archive, str(e) or type(e).__name__) from e
    return dest_dir


def _unpack_zip(archive: Path, dest: Path, progress: bool) -> None:
    """Refuse the whole archive if any member would land outside ``dest``, before writing anything."""
    root = os.path.abspath(dest)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            target = os.path.normpath(os.path.join(root, info.filename))
            if os.path.isabs(info.filename) or not target.startswith(root + os.sep):
                raise SatError(
                    f"refusing to extract {archive}: member {info.filename!r} would be written "
                    f"outside the destination folder"
                )
        for info in progress_bar(members, desc=f"extract {archive.name}", unit="file", enabled=progress):
            zf.extract(info, dest)


def _unpack_tar(archive: Path, dest: Path, progress: bool) -> None:
    """Write the members through tarfile's "data" filter, which raises FilterError for an unsafe one."""
    with tarfile.open(archive) as tf:
        # The "data" filter refuses absolute paths, "..", links leaving dest and device files.
        tf.extractall(
            dest, members=progress_bar(tf, desc=f"extract {archive.name}", unit="file", enabled=progress), filter="data"
        )


def _corrupt(archive: Path, reason: str) -> SatError:
    """The error for a damaged archive, which no rerun fixes until the archive is fetched afresh."""
    return SatError(f"{archive} is corrupt or truncated ({reason}): delete it and run again to download it afresh")
