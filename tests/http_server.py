"""A loopback HTTP file server with Range support and fault injection, to test downloads without the internet.

Faults are armed per file name and disarm themselves once used:
``drop_after[name] = n`` sends only n body bytes of the next response and then closes the connection;
``fail_next[name] = [500, 503]`` answers the next requests with those statuses;
``hold[name] = event`` makes the next response wait for the event after its headers, as a slow download;
``ignore_range`` names files whose Range requests get the whole file (200), like servers without resume;
``no_length`` names files sent without a Content-Length (the body ends where the connection closes);
``bad_length[name] = "abc"`` sends that Content-Length instead of the true one, as a broken server might.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypedDict

import pytest


class Request(TypedDict):
    """One request as the server saw and answered it (a dict, so tests can compare it to a literal)."""

    method: str
    path: str
    range: str | None
    status: int


class RangeServer:
    """Serves the files under ``root`` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.log: list[Request] = []
        self.drop_after: dict[str, int] = {}
        self.fail_next: dict[str, list[int]] = {}
        self.hold: dict[str, threading.Event] = {}
        self.ignore_range: set[str] = set()
        self.no_length: set[str] = set()
        self.bad_length: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        # A short poll interval so stop() (which waits for the next poll) does not add half a second per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{urllib.parse.quote(name)}"

    def ranges(self, name: str) -> list[str | None]:
        """The Range headers of the GET requests for ``name``, in order."""
        return [r["range"] for r in self.log if r["path"] == "/" + urllib.parse.quote(name)]

    def start(self) -> RangeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_fault(self, name: str) -> tuple[int | None, int | None, threading.Event | None]:
        """The status to fail with, the byte count to drop after and the event to wait for, each used up once taken."""
        with self._lock:
            statuses = self.fail_next.get(name)
            status = statuses.pop(0) if statuses else None
            if statuses == []:
                del self.fail_next[name]
            drop = None if status else self.drop_after.pop(name, None)
            hold = None if status else self.hold.pop(name, None)
            return status, drop, hold


def _handler_for(server: RangeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            range_header = self.headers.get("Range")
            path = server.root / name
            fail, drop, hold = server._take_fault(name)
            if fail:
                return self._empty(fail, range_header)
            if ".." in Path(name).parts or not path.is_file():
                return self._empty(HTTPStatus.NOT_FOUND, range_header)
            data = path.read_bytes()
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            ranged = match is not None and name not in server.ignore_range
            start = int(match.group(1)) if ranged else 0
            if ranged and start >= len(data):
                return self._empty(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, range_header, {"Content-Range": f"bytes */{len(data)}"}
                )
            status = HTTPStatus.PARTIAL_CONTENT if ranged else HTTPStatus.OK
            body = data[start:]
            self._record(status, range_header)
            self.send_response(status)
            if name not in server.no_length:
                self.send_header("Content-Length", server.bad_length.get(name, str(len(body))))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if hold:
                hold.wait()
            self.wfile.write(body if drop is None else body[:drop])
            self.close_connection = True

        def _empty(self, status: int, range_header: str | None, headers: dict[str, str] | None = None) -> None:
            self._record(status, range_header)
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _record(self, status: int, range_header: str | None) -> None:
            server.log.append(Request(method=self.command, path=self.path, range=range_header, status=int(status)))

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: tests assert on ``server.log`` instead."""

    return Handler


@pytest.fixture
def range_server_factory() -> Iterator[Callable[[str | Path], RangeServer]]:
    """Start a RangeServer for a folder; every server started is stopped after the test."""
    servers: list[RangeServer] = []

    def start(root: str | Path) -> RangeServer:
        servers.append(RangeServer(root).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
