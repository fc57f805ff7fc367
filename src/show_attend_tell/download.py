"""Get dataset archives: resumable, md5-verified downloads, or links to local copies.

Archives are large (COCO is 19 GB) and links are flaky, so an interrupted download is kept as a
``.partial`` file and resumed (see ``http_resume``); nothing reaches its final name unverified.
Two fetches of the same file take turns (a lock file beside it): the second keeps what the first fetched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .atomic import partial_path, remove
from .errors import SatError
from .http_resume import CHUNK, Interrupted, transfer
from .progress import progress_bar

log = logging.getLogger(__name__)


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


def _download(
    url: str, dest: Path, md5: str | None, *, retries: int, timeout: float, backoff: float, progress: bool
) -> Path:
    """Download ``url`` to ``dest`` unless it is there already, retrying interruptions; verify before naming it."""
    if _fetched(dest, md5, progress):
        return dest
    part = partial_path(dest)
    for attempt in range(retries + 1):
        try:
            length_known = transfer(url, part, timeout, progress)
            break
        except Interrupted as e:
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


def _link(source: Path, dest: Path, md5: str | None, *, progress: bool) -> Path:
    """Symlink the local archive ``source`` at ``dest`` once it verifies: archives are too large to copy."""
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
