"""Downloads for real, from a file:// mirror and a loopback HTTP server of the small zips."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fewnorm.data.download import download
from fewnorm.data.files import KNOWN_FILES
from fewnorm.errors import DataError

pytestmark = pytest.mark.data

SMALL = ("images_background_small1.zip", "images_background_small2.zip")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def serve() -> Iterator[functools.partial[str]]:
    """``serve(directory)`` -> base URL of a loopback HTTP server for that directory."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield functools.partial(start)
    for server in servers:
        server.shutdown()
        server.server_close()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _assert_valid(directory: Path) -> None:
    for name in SMALL:
        assert _md5(directory / name) == KNOWN_FILES[name].md5
    assert sorted(p.name for p in directory.iterdir()) == list(SMALL)  # no temporary files


def test_file_mirror_then_skip(omniglot_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWNORM_MIRROR", (omniglot_root / "omniglot").as_uri())
    seen: dict[str, tuple[int, int | None]] = {}
    results = download(
        "omniglot",
        "minimal",
        tmp_path,
        progress=lambda name, done, total: seen.__setitem__(name, (done, total)),
    )
    assert [r.status for r in results] == ["downloaded", "downloaded"]
    _assert_valid(tmp_path / "omniglot")
    for name in SMALL:
        assert seen[name] == (KNOWN_FILES[name].size, KNOWN_FILES[name].size)
    again = download("omniglot-minimal", root=tmp_path)  # its default subset is minimal
    assert [r.status for r in again] == ["present", "present"]


def test_http_mirror(
    omniglot_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: functools.partial[str],
) -> None:
    monkeypatch.setenv("FEWNORM_MIRROR", serve(omniglot_root / "omniglot"))
    results = download("omniglot", "minimal", tmp_path)
    assert {r.status for r in results} == {"downloaded"}
    assert all(r.url and r.url.startswith("http://127.0.0.1:") for r in results)
    _assert_valid(tmp_path / "omniglot")


def test_corrupt_local_copy_is_replaced(
    omniglot_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "omniglot"
    target.mkdir()
    (target / SMALL[0]).write_bytes(b"truncated")
    monkeypatch.setenv("FEWNORM_MIRROR", (omniglot_root / "omniglot").as_uri())
    results = download("omniglot", "minimal", tmp_path)
    assert [r.status for r in results] == ["downloaded", "downloaded"]
    _assert_valid(target)


def test_corrupt_mirror_leaves_nothing(
    omniglot_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: functools.partial[str],
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = (omniglot_root / "omniglot" / SMALL[0]).read_bytes()
    (mirror / SMALL[0]).write_bytes(data[:-1000] + bytes(1000))  # same size, damaged tail
    shutil.copy(omniglot_root / "omniglot" / SMALL[1], mirror / SMALL[1])
    monkeypatch.setenv("FEWNORM_MIRROR", serve(mirror))
    with pytest.raises(DataError) as info:
        download("omniglot", "minimal", tmp_path / "root")
    message = str(info.value)
    assert SMALL[0] in message
    assert "corrupt" in message
    assert KNOWN_FILES[SMALL[0]].md5 in message
    # The damaged file was not kept, not even partially; the good one is in place.
    assert [p.name for p in (tmp_path / "root" / "omniglot").iterdir()] == [SMALL[1]]


def test_mirror_without_the_big_zips(
    omniglot_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: functools.partial[str],
) -> None:
    base = serve(omniglot_root / "omniglot")
    monkeypatch.setenv("FEWNORM_MIRROR", base)
    with pytest.raises(DataError) as info:
        download("omniglot", "full", tmp_path)
    message = str(info.value)
    assert f"{base}images_background.zip" in message
    assert "images_evaluation.zip" in message
    assert "FEWNORM_MIRROR" in message
    assert list((tmp_path / "omniglot").iterdir()) == []


def test_unreachable_and_invalid_mirrors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWNORM_MIRROR", (tmp_path / "nowhere").as_uri())
    with pytest.raises(DataError, match=r"could not download file://.*FEWNORM_MIRROR"):
        download("omniglot", "minimal", tmp_path / "root")
    assert list((tmp_path / "root" / "omniglot").iterdir()) == []
    monkeypatch.setenv("FEWNORM_MIRROR", "ftp://example.org/omniglot/")
    with pytest.raises(DataError, match="file://, http:// or https://"):
        download("omniglot", "minimal", tmp_path / "root")
    with pytest.raises(DataError, match="unknown subset 'tiny'"):
        download("omniglot", "tiny", tmp_path / "root")
