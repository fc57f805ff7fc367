"""Get dataset archives: resumable, md5-verified downloads (or links to local copies), and atomic extraction.

Archives are large (COCO is 19 GB) and links are flaky, so an interrupted download is kept as a
``.partial`` file and resumed with an HTTP Range request; nothing reaches its final name unverified.
Two fetches of the same file take turns (a lock file beside it): the second keeps what the first fetched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import lzma
import os
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .atomic import atomic_output, partial_path, remove
from .errors import SatError
from .progress import progress_bar

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "show-attend-tell (python urllib)"
# Statuses worth asking again: the server is overloaded or briefly broken, not refusing for good.
TRANSIENT_STATUS = {408, 429}
# Raised while reading broken archives: bad zip/tar structure, CRC errors, truncated compressed streams.
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


class _Interrupted(Exception):
    """A transfer failure that a later attempt, resuming from the bytes on disk, may get past."""


def fetch(
    source: str | None,
    dest: str | os.PathLike,
    md5: str | None,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Put the archive ``source`` (http(s)/file URL or local path) at ``dest``, checked against ``md5``.

    Downloads resume after interruptions, within a call (``retries`` times, waiting ``backoff``
    seconds, doubling) and across calls (from ``dest.partial``). A ``dest`` already downloaded (by an earlier
    call, or a concurrent one this call waited for) is kept if it matches ``md5``. Local archives are linked,
    not copied.
    """
    dest = Path(dest)
    if not source:
        raise SatError(
            f"no URL is configured for the archive {dest.name}: give the path (or file:// URL) of a copy "
            f"you already have instead"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = urllib.parse.urlsplit(source)
    scheme = url.scheme.lower()
    with _exclusive(dest):
        if scheme in ("http", "https"):
            return _download(source, dest, md5, retries=retries, timeout=timeout, backoff=backoff, progress=progress)
        local = Path(urllib.request.url2pathname(url.path)) if scheme == "file" else Path(source).expanduser()
        return _link(local, dest, md5, progress=progress)


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold ``dest.lock`` while fetching ``dest``, so that two fetches never write its ``.partial`` at once.

    The holder deletes the lock file before it lets go, leaving nothing behind; a waiter that then wakes up
    holding the deleted file takes the lock again on a new one, so the lock is never held twice.
    """
    lock = dest.with_name(dest.name + ".lock")
    while True:
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another fetch of %s is under way: waiting for it to finish", dest)
                fcntl.flock(f, fcntl.LOCK_EX)
            if _still_at(f, lock):
                try:
                    yield
                finally:
                    lock.unlink(missing_ok=True)
                return


def _still_at(f: IO, path: Path) -> bool:
    """Whether the open file ``f`` is still the file at ``path`` (not deleted or replaced since it was opened)."""
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def md5sum(path: str | os.PathLike, progress: bool = False) -> str:
    """The hex md5 of a file, read in chunks so archives of any size fit in memory."""
    path = Path(path)
    digest = hashlib.md5(usedforsecurity=False)
    with (
        open(path, "rb") as f,
        progress_bar(
            total=path.stat().st_size,
            desc=f"md5 {path.name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            enabled=progress,
        ) as bar,
    ):
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


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
        with atomic_output(dest_dir) as tmp:
            tmp.mkdir()
            # By content, not name: a download may be saved under any name.
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, tmp, progress)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, tmp, progress)
            else:
                raise _corrupt(archive, "neither a zip nor a tar archive")
    except tarfile.FilterError as e:
        raise SatError(f"refusing to extract {archive}: {e}") from e
    except ARCHIVE_ERRORS as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a real I/O problem (disk full, permissions), not a damaged archive
        raise _corrupt(archive, str(e) or type(e).__name__) from e
    return dest_dir


def _download(
    url: str, dest: Path, md5: str | None, *, retries: int, timeout: float, backoff: float, progress: bool
) -> Path:
    if _fetched(dest, md5, progress):
        return dest
    part = partial_path(dest)
    for attempt in range(retries + 1):
        try:
            length_known = _transfer(url, part, timeout, progress)
            break
        except _Interrupted as e:
            if attempt == retries:
                advice = (
                    f"the partial download is kept in {part} and running again resumes it"
                    if part.exists()
                    else "run again to retry"
                )
                attempts = f"{retries + 1} attempt" + ("s" if retries else "")
                raise SatError(f"downloading {url} failed after {attempts} ({e}); {advice}") from e
            wait = backoff * 2**attempt
            log.warning("downloading %s: %s; retrying in %g s", url, e, wait)
            time.sleep(wait)
    if md5 is None and not length_known:
        log.warning(
            "nothing verified %s (downloaded from %s): no md5 is configured and the server did not send "
            "its length, so the file may be truncated",
            dest,
            url,
        )
    else:
        _verify(part, md5, label=f"{dest} (downloaded from {url})", progress=progress, discard=True)
    os.replace(part, dest)
    return dest


def _fetched(dest: Path, md5: str | None, progress: bool) -> bool:
    """Whether ``dest`` is already there and matches ``md5``: only finished downloads are given that name."""
    if not dest.is_file():
        return False
    if md5 is not None and md5sum(dest, progress=progress) != md5.strip().lower():
        log.info("%s is there but does not match its md5: downloading it again", dest)
        return False
    log.info("%s is already there%s: keeping it", dest, " and matches its md5" if md5 else "")
    return True


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One attempt to complete ``part``, resuming from its current size; raises _Interrupted to retry.

    Returns whether the server gave the file's length, without which a body cut short cannot be told from
    a whole one.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:
            return _check_complete(part, have, e.headers.get("Content-Range"))
        if e.code >= 500 or e.code in TRANSIENT_STATUS:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from e
        raise SatError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise _Interrupted(_describe(e)) from e
    with response:
        start = have if response.status == 206 else 0
        if start != _range_start(response.headers.get("Content-Range"), default=start):
            part.unlink()
            raise _Interrupted("the server resumed from the wrong offset; starting over")
        if have and not start:
            log.info("%s: the server ignored the request to resume; starting over", url)
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        with (
            open(part, "ab" if start else "wb") as f,
            progress_bar(
                total=start + expected if expected is not None else None,
                initial=start,
                desc=part.name.removesuffix(".partial"),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                enabled=progress,
            ) as bar,
        ):
            for chunk in _chunks(response):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _Interrupted(f"the connection closed after {start + received} of {start + expected} bytes")
    return expected is not None


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The response body in chunks, with network failures turned into _Interrupted."""
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Interrupted(_describe(e)) from e
        if not chunk:
            return
        yield chunk


def _check_complete(part: Path, have: int, content_range: str | None) -> bool:
    """After a 416 (nothing left to send): drop a partial that is longer than the file on the server.

    Returns whether the server gave the file's length, which the partial then has.
    """
    total = re.fullmatch(r"bytes \*/(\d+)", (content_range or "").strip())
    if total and int(total.group(1)) != have:
        part.unlink()
        raise _Interrupted(f"the partial download ({have} bytes) is longer than the file; starting over")
    return total is not None


def _range_start(content_range: str | None, default: int) -> int:
    """First byte position of a 206 response's ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes (\d+)-", (content_range or "").strip())
    return int(match.group(1)) if match else default


def _describe(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # URLError wraps the socket error
    return str(reason if reason is not None else e) or type(e).__name__


def _link(source: Path, dest: Path, md5: str | None, *, progress: bool) -> Path:
    source = source.absolute()
    if source.is_dir():
        raise SatError(
            f"{source} is a folder: give an archive here; an already extracted folder goes in the "
            f"dataset's images.dirs instead"
        )
    if not source.is_file():
        raise SatError(f"local archive {source} not found")
    _verify(source, md5, label=str(source), progress=progress, discard=False)
    tmp = partial_path(dest)
    remove(tmp)
    os.symlink(source, tmp)
    os.replace(tmp, dest)
    return dest


def _verify(path: Path, md5: str | None, *, label: str, progress: bool, discard: bool) -> None:
    """Check ``path`` against ``md5``; ``discard`` deletes a bad download, which resuming could never fix."""
    if md5 is None:
        log.warning("no md5 configured: %s is not verified", label)
        return
    actual = md5sum(path, progress=progress)
    if actual == md5.strip().lower():
        return
    if discard:
        remove(path)
        advice = (
            "the download was deleted; run again to download it afresh (if it fails again, the URL or md5 is wrong)"
        )
    else:
        advice = "check that it is the right file and is complete (or fix the configured md5)"
    raise SatError(f"{label} has md5 {actual} but {md5.strip()} was expected: {advice}")


def _extract_zip(archive: Path, dest: Path, progress: bool) -> None:
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


def _extract_tar(archive: Path, dest: Path, progress: bool) -> None:
    with tarfile.open(archive) as tf:
        # The "data" filter refuses absolute paths, "..", links leaving dest and device files.
        tf.extractall(
            dest, members=progress_bar(tf, desc=f"extract {archive.name}", unit="file", enabled=progress), filter="data"
        )


def _corrupt(archive: Path, reason: str) -> SatError:
    return SatError(f"{archive} is corrupt or truncated ({reason}): delete it and run again to download it afresh")
