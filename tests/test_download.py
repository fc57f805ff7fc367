"""Archives arrive whole and verified, or not at all; interrupted downloads resume; bad archives are named."""

import errno
import hashlib
import io
import logging
import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FLICKR8K_SAMPLE

from show_attend_tell.download import fetch, md5sum
from show_attend_tell.errors import SatError
from show_attend_tell.unpack import unpack

FAST = {"backoff": 0.01, "timeout": 10.0, "progress": False}
MEMBERS = {"a.txt": b"alpha\n", "sub/b.txt": b"bravo\n" * 100, "sub/deep/c.bin": os.urandom(200_000)}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def blob(tmp_path):
    """A 300 kB file of random bytes in a served folder, with its md5."""
    served = tmp_path / "served"
    served.mkdir()
    data = os.urandom(300_000)
    (served / "blob.bin").write_bytes(data)
    return served, data, md5(data)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def html_error_page(path: Path) -> Path:
    """What a misconfigured mirror serves under an archive's name."""
    path.write_text("<html><body>404 Not Found</body></html>")
    return path


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def wait_until(condition: Callable[[], object], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- fetch over HTTP ---------------------------------------------------------------------------------------


def test_downloads_over_http_verifies_md5_and_leaves_no_partial(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    dest = tmp_path / "out" / "blob.bin"

    assert fetch(server.url("blob.bin"), dest, digest, **FAST) == dest

    assert dest.read_bytes() == data
    assert not (tmp_path / "out" / "blob.bin.partial").exists()
    assert server.log == [{"method": "GET", "path": "/blob.bin", "range": None, "status": 200}]


def test_a_dropped_connection_is_resumed_with_a_range_request_on_the_retry(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    server.drop_after["blob.bin"] = 100_000
    dest = tmp_path / "blob.bin"

    fetch(server.url("blob.bin"), dest, digest, retries=2, **FAST)

    assert dest.read_bytes() == data
    assert server.ranges("blob.bin") == [None, "bytes=100000-"]
    assert [r["status"] for r in server.log] == [200, 206]


def test_when_retries_run_out_the_partial_is_kept_and_the_next_call_resumes_it(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    server.drop_after["blob.bin"] = 120_000
    dest = tmp_path / "blob.bin"

    with pytest.raises(SatError, match="partial download is kept .* running again resumes it"):
        fetch(server.url("blob.bin"), dest, digest, retries=0, **FAST)
    assert (tmp_path / "blob.bin.partial").stat().st_size == 120_000
    assert not dest.exists()

    fetch(server.url("blob.bin"), dest, digest, retries=0, **FAST)
    assert dest.read_bytes() == data
    assert server.ranges("blob.bin") == [None, "bytes=120000-"]


@pytest.mark.parametrize("md5_known", [True, False], ids=["md5", "no-md5"])
def test_a_body_shorter_than_its_content_length_is_resumed_not_accepted(
    tmp_path, blob, range_server_factory, md5_known
):
    served, data, digest = blob
    server = range_server_factory(served)
    server.drop_after["blob.bin"] = 100_000

    fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest if md5_known else None, retries=1, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data
    assert server.ranges("blob.bin") == [None, "bytes=100000-"]


def test_a_partial_left_by_a_killed_run_is_resumed_not_restarted(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    (tmp_path / "blob.bin.partial").write_bytes(data[:250_000])

    fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data
    assert server.log == [{"method": "GET", "path": "/blob.bin", "range": "bytes=250000-", "status": 206}]


def test_a_complete_partial_answered_with_416_is_verified_and_kept(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    (tmp_path / "blob.bin.partial").write_bytes(data)

    fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data
    assert [r["status"] for r in server.log] == [416]


def test_a_server_that_ignores_range_makes_the_download_start_over(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    server.ignore_range.add("blob.bin")
    (tmp_path / "blob.bin.partial").write_bytes(data[:50_000])

    fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data  # not the first 50 kB twice
    assert server.log == [{"method": "GET", "path": "/blob.bin", "range": "bytes=50000-", "status": 200}]


def test_a_checksum_mismatch_names_both_md5s_and_keeps_nothing(tmp_path, blob, range_server_factory):
    served, _, digest = blob
    server = range_server_factory(served)
    wrong = "0" * 32

    with pytest.raises(SatError) as err:
        fetch(server.url("blob.bin"), tmp_path / "blob.bin", wrong, **FAST)

    assert digest in str(err.value) and wrong in str(err.value)
    assert server.url("blob.bin") in str(err.value)
    assert list(tmp_path.iterdir()) == [served]


def test_a_404_fails_at_once_without_retrying(tmp_path, blob, range_server_factory):
    served, _, _ = blob
    server = range_server_factory(served)

    with pytest.raises(SatError, match="404") as err:
        fetch(server.url("missing.zip"), tmp_path / "missing.zip", None, retries=3, **FAST)

    assert server.url("missing.zip") in str(err.value)
    assert len(server.log) == 1


def test_transient_server_errors_are_retried_until_the_download_succeeds(tmp_path, blob, range_server_factory):
    served, data, digest = blob
    server = range_server_factory(served)
    server.fail_next["blob.bin"] = [500, 503]

    fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, retries=2, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data
    assert [r["status"] for r in server.log] == [500, 503, 200]


def test_persistent_server_errors_give_up_after_the_retries(tmp_path, blob, range_server_factory):
    served, _, digest = blob
    server = range_server_factory(served)
    server.fail_next["blob.bin"] = [500] * 3

    with pytest.raises(SatError, match="after 3 attempts .*HTTP 500"):
        fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, retries=2, **FAST)
    assert len(server.log) == 3


def test_an_unreachable_server_is_retried_then_reported(tmp_path):
    with pytest.raises(SatError, match="after 2 attempts"):
        fetch("http://127.0.0.1:9/blob.bin", tmp_path / "blob.bin", None, retries=1, **FAST)


def test_without_an_md5_the_download_is_kept_with_a_warning(tmp_path, blob, range_server_factory, caplog):
    served, data, _ = blob
    server = range_server_factory(served)

    with caplog.at_level(logging.WARNING):
        fetch(server.url("blob.bin"), tmp_path / "blob.bin", None, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data
    assert "not verified" in caplog.text


def test_without_an_md5_or_a_content_length_the_log_says_the_file_may_be_truncated(
    tmp_path, blob, range_server_factory, caplog
):
    served, data, _ = blob
    server = range_server_factory(served)
    server.no_length.add("blob.bin")
    server.drop_after["blob.bin"] = 100_000  # cut short: nothing can tell
    dest = tmp_path / "blob.bin"

    with caplog.at_level(logging.WARNING):
        fetch(server.url("blob.bin"), dest, None, **FAST)

    assert dest.read_bytes() == data[:100_000]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"nothing verified {dest}" in warning.getMessage() and "may be truncated" in warning.getMessage()


def test_without_a_content_length_the_md5_still_verifies_the_download(tmp_path, blob, range_server_factory, caplog):
    served, data, digest = blob
    server = range_server_factory(served)
    server.no_length.add("blob.bin")

    with caplog.at_level(logging.WARNING):
        fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data
    assert not caplog.records


@pytest.mark.parametrize("length", ["abc", "-5", ""])
def test_an_invalid_or_negative_content_length_is_taken_as_no_length(
    tmp_path, blob, range_server_factory, length, caplog
):
    served, data, digest = blob
    server = range_server_factory(served)
    server.bad_length["blob.bin"] = length

    with caplog.at_level(logging.WARNING):
        fetch(server.url("blob.bin"), tmp_path / "blob.bin", digest, **FAST)

    assert (tmp_path / "blob.bin").read_bytes() == data  # read to the end of the body, verified by its md5
    assert not caplog.records


@pytest.mark.parametrize(
    "errno_, named, line",
    [
        (errno.EROFS, True, "error: {lock}: Read-only file system"),
        (errno.ENOSPC, False, "error: No space left on device"),  # an OSError naming no file
    ],
)
def test_sat_fetch_to_a_destination_that_cannot_be_written_is_one_error_line(
    tmp_path, blob, monkeypatch, capsys, errno_, named, line
):
    import builtins

    from show_attend_tell import download
    from show_attend_tell.cli import main

    served, _, _ = blob
    dest = tmp_path / "out" / "blob.bin"
    lock = dest.with_name("blob.bin.lock")

    def unwritable(file, *args, **kwargs):
        if Path(file) == lock:
            raise OSError(errno_, os.strerror(errno_), *([str(lock)] if named else []))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(download, "open", unwritable, raising=False)
    assert main(["--no-progress", "fetch", str(served / "blob.bin"), str(dest)]) == 1
    assert capsys.readouterr().err.splitlines() == [line.format(lock=lock)]


# --- two fetches of the same file ----------------------------------------------------------------------------


def test_a_second_fetch_waits_for_the_first_and_keeps_its_download(tmp_path, blob, range_server_factory, caplog):
    served, data, digest = blob
    server = range_server_factory(served)
    server.hold["blob.bin"] = release = threading.Event()
    dest = tmp_path / "blob.bin"

    with caplog.at_level(logging.INFO), ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(fetch, server.url("blob.bin"), dest, digest, **FAST)
            wait_until(lambda: server.log)  # the first is downloading, held up by the server
            second = pool.submit(fetch, server.url("blob.bin"), dest, digest, **FAST)
            wait_until(lambda: "waiting for it to finish" in caplog.text)
        finally:
            release.set()
        assert first.result() == second.result() == dest

    assert dest.read_bytes() == data
    assert len(server.log) == 1
    assert sorted(tmp_path.iterdir()) == [dest, served]  # no lock file or partial left behind


def test_a_fetch_that_waited_for_a_failed_one_resumes_its_partial(tmp_path, blob, range_server_factory, caplog):
    served, data, digest = blob
    server = range_server_factory(served)
    server.hold["blob.bin"] = release = threading.Event()
    server.drop_after["blob.bin"] = 120_000
    dest = tmp_path / "blob.bin"

    with caplog.at_level(logging.INFO), ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(fetch, server.url("blob.bin"), dest, digest, retries=0, **FAST)
            wait_until(lambda: server.log)
            second = pool.submit(fetch, server.url("blob.bin"), dest, digest, retries=0, **FAST)
            wait_until(lambda: "waiting for it to finish" in caplog.text)
        finally:
            release.set()
        with pytest.raises(SatError, match="partial download is kept"):
            first.result()
        assert second.result() == dest

    assert dest.read_bytes() == data
    assert server.ranges("blob.bin") == [None, "bytes=120000-"]


def test_a_file_already_fetched_is_kept_if_its_md5_matches_and_fetched_again_if_not(
    tmp_path, blob, range_server_factory
):
    served, data, digest = blob
    server = range_server_factory(served)
    dest = tmp_path / "blob.bin"
    dest.write_bytes(data)

    fetch(server.url("blob.bin"), dest, digest, **FAST)
    assert server.log == []

    dest.write_bytes(b"an older version")
    fetch(server.url("blob.bin"), dest, digest, **FAST)
    assert dest.read_bytes() == data
    assert server.ranges("blob.bin") == [None]


# --- fetch from local copies -------------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_a_local_archive_is_linked_not_copied(tmp_path, blob, as_url):
    served, data, digest = blob
    source = served / "blob.bin"
    dest = tmp_path / "data" / "blob.bin"

    fetch(source.as_uri() if as_url else str(source), dest, digest, progress=False)

    assert dest.is_symlink() and os.readlink(dest) == str(source)
    assert dest.read_bytes() == data
    assert not (tmp_path / "data" / "blob.bin.partial").exists()


def test_a_relative_local_path_is_linked_by_its_absolute_path(tmp_path, blob, monkeypatch):
    served, _, digest = blob
    monkeypatch.chdir(tmp_path)

    fetch("served/blob.bin", tmp_path / "blob.bin", digest, progress=False)

    assert os.readlink(tmp_path / "blob.bin") == str(served / "blob.bin")


def test_a_local_archive_with_the_wrong_md5_is_reported_and_left_alone(tmp_path, blob):
    served, data, digest = blob

    with pytest.raises(SatError, match=digest):
        fetch(str(served / "blob.bin"), tmp_path / "blob.bin", "f" * 32, progress=False)

    assert (served / "blob.bin").read_bytes() == data
    assert not (tmp_path / "blob.bin").exists()


def test_a_missing_local_archive_is_an_error(tmp_path):
    with pytest.raises(SatError, match="not found"):
        fetch(str(tmp_path / "nope.zip"), tmp_path / "x.zip", None, progress=False)


def test_a_folder_is_refused_and_pointed_to_images_dirs(tmp_path, blob):
    served, _, _ = blob
    with pytest.raises(SatError, match="give an archive here.*images.dirs"):
        fetch(str(served), tmp_path / "x.zip", None, progress=False)


@pytest.mark.parametrize("source", [None, ""])
def test_no_source_asks_for_a_local_path(tmp_path, source):
    with pytest.raises(SatError, match="no URL is configured.*path"):
        fetch(source, tmp_path / "x.zip", None, progress=False)


def test_md5sum_streams_a_file(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert md5sum(tmp_path / "f") == md5(data)


# --- unpack ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,maker",
    [
        ("a.zip", make_zip),
        ("a.tar", lambda p, m: make_tar(p, m, "w")),
        ("a.tar.gz", make_tar),
        ("a.tgz", make_tar),
        ("a.tar.bz2", lambda p, m: make_tar(p, m, "w:bz2")),
        ("a.tar.xz", lambda p, m: make_tar(p, m, "w:xz")),
        ("zip-without-extension", make_zip),
    ],
)
def test_extracts_zip_and_tar_archives_whole(tmp_path, name, maker):
    archive = maker(tmp_path / name, MEMBERS)

    assert unpack(archive, tmp_path / "out", progress=False) == tmp_path / "out"

    assert tree(tmp_path / "out") == MEMBERS
    assert not (tmp_path / "out.partial").exists()


def test_a_stale_partial_folder_from_a_killed_run_is_discarded(tmp_path):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "junk.txt").write_text("half-written")

    unpack(make_zip(tmp_path / "a.zip", MEMBERS), tmp_path / "out", progress=False)

    assert tree(tmp_path / "out") == MEMBERS


@pytest.mark.parametrize(
    "archive",
    [
        lambda d: truncate(make_zip(d / "a.zip", MEMBERS)),
        lambda d: truncate(make_tar(d / "a.tar.gz", MEMBERS)),
        lambda d: truncate(make_tar(d / "a.tar", MEMBERS, "w")),
        lambda d: truncate(make_tar(d / "a.tar.bz2", MEMBERS, "w:bz2")),
        lambda d: html_error_page(d / "a.zip"),
    ],
    ids=["truncated-zip", "truncated-tar.gz", "truncated-tar", "truncated-tar.bz2", "not-an-archive"],
)
def test_a_truncated_or_foreign_archive_is_named_corrupt_and_leaves_no_folder(tmp_path, archive):
    path = archive(tmp_path)

    with pytest.raises(SatError, match="corrupt or truncated .*delete it and run again") as err:
        unpack(path, tmp_path / "out", progress=False)

    assert str(path) in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_zip_member_with_a_bad_crc_is_named_corrupt(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("c.bin", MEMBERS["sub/deep/c.bin"])
    raw = bytearray(archive.read_bytes())
    raw[1000] ^= 0xFF  # inside the stored data: the CRC check catches it
    archive.write_bytes(bytes(raw))

    with pytest.raises(SatError, match="corrupt or truncated .*CRC"):
        unpack(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "sub/../../evil.txt", "/tmp/evil.txt"])
def test_a_zip_member_escaping_the_destination_is_refused(tmp_path, member):
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"ok", member: b"evil"})

    with pytest.raises(SatError, match="refusing"):
        unpack(archive, tmp_path / "x" / "out", progress=False)

    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x" / "evil.txt").exists()
    assert not (tmp_path / "x" / "out").exists() and not (tmp_path / "x" / "out.partial").exists()


def test_a_tar_member_escaping_the_destination_is_refused(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"ok.txt": b"ok", "../evil.txt": b"evil"})

    with pytest.raises(SatError, match="refusing"):
        unpack(archive, tmp_path / "x" / "out", progress=False)

    assert not (tmp_path / "x" / "evil.txt").exists()
    assert not (tmp_path / "x" / "out").exists() and not (tmp_path / "x" / "out.partial").exists()


def test_a_tar_symlink_pointing_outside_is_refused(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)

    with pytest.raises(SatError, match="refusing"):
        unpack(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_archive_is_an_error(tmp_path):
    with pytest.raises(SatError, match="not found"):
        unpack(tmp_path / "nope.zip", tmp_path / "out", progress=False)


# --- the real Flickr8k sample ------------------------------------------------------------------------------


@pytest.mark.skipif(not FLICKR8K_SAMPLE.is_dir(), reason="real Flickr8k sample (../shared/data) not present")
def test_real_flickr8k_text_archive_downloads_and_extracts(tmp_path, range_server_factory):
    server = range_server_factory(FLICKR8K_SAMPLE)

    archive = fetch(
        server.url("Flickr8k_text.zip"), tmp_path / "Flickr8k_text.zip", "dfa01f98751df96c8f280831c7243b0e", **FAST
    )
    out = unpack(archive, tmp_path / "Flickr8k_text", progress=False)

    tokens = (out / "Flickr8k.token.txt").read_text().splitlines()
    assert tokens and all("#" in line.split("\t")[0] for line in tokens)
