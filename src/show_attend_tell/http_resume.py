"""One HTTP GET of a file into its ``.partial``, continuing from the bytes already there.

The resume is asked for with a Range request and checked against the server's reply (a server may
ignore it, resume from elsewhere, or answer 416 when nothing is left); every failure that a later
attempt could get past is raised as ``Interrupted``, which ``download`` retries.
"""

from __future__ import annotations

import http.client
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .errors import SatError
from .progress import progress_bar

log = logging.getLogger("show_attend_tell.download")  # part of a fetch: its messages keep that name

CHUNK = 1 << 20
USER_AGENT = "show-attend-tell (python urllib)"
# Statuses worth asking again: the server is overloaded or briefly broken, not refusing for good.
TRANSIENT_STATUS = {408, 429}


class Interrupted(Exception):
    """A transfer failure that a later attempt, resuming from the bytes on disk, may get past."""


def transfer(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One attempt to complete ``part``, resuming from its current size; raises Interrupted to retry.

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
            raise Interrupted(f"HTTP {e.code} {e.reason}") from e
        raise SatError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise Interrupted(_describe(e)) from e
    with response:
        start = have if response.status == 206 else 0
        if start != _range_start(response.headers.get("Content-Range"), default=start):
            part.unlink()
            raise Interrupted("the server resumed from the wrong offset; starting over")
        if have and not start:
            log.info("%s: the server ignored the request to resume; starting over", url)
        expected = _content_length(response.headers.get("Content-Length"))
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
        raise Interrupted(f"the connection closed after {start + received} of {start + expected} bytes")
    return expected is not None


def _content_length(header: str | None) -> int | None:
    """The body's length in bytes, or None when the header is missing or not a count (``abc``, negative):
    a broken header says nothing about the body, so the transfer goes on as if it gave no length."""
    return int(header) if header is not None and re.fullmatch(r"\s*\d+\s*", header) else None


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The response body in chunks, with network failures turned into Interrupted."""
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise Interrupted(_describe(e)) from e
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
        raise Interrupted(f"the partial download ({have} bytes) is longer than the file; starting over")
    return total is not None


def _range_start(content_range: str | None, default: int) -> int:
    """First byte position of a 206 response's ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes (\d+)-", (content_range or "").strip())
    return int(match.group(1)) if match else default


def _describe(e: BaseException) -> str:
    """The reason for a network failure in a few words, for the retry warning and the final error."""
    reason = getattr(e, "reason", None)  # URLError wraps the socket error
    return str(reason if reason is not None else e) or type(e).__name__
