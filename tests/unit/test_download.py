"""lama.download against a loopback HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lama.download import BIG_LAMA, KNOWN_MODELS, DownloadError, download, download_big_lama

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one chunk
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Route:
    body: bytes = PAYLOAD
    status: int = 200
    declared_length: int | None = None  # Content-Length to claim; default len(body)
    stall: bool = False  # send headers, then no body until the test ends


@dataclass
class Server:
    url: str
    routes: dict[str, Route]
    hits: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: Server = self.server.state  # type: ignore[attr-defined]
        state.hits.append(self.path)
        route = state.routes.get(self.path)
        if route is None or route.status != 200:
            self.send_error(404 if route is None else route.status)
            return
        length = len(route.body) if route.declared_length is None else route.declared_length
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if route.stall:
            state.release.wait(10)
            return
        self.wfile.write(route.body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    host, port = httpd.server_address[:2]
    state = Server(url=f"http://{host}:{port}", routes={})
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_download_writes_the_file(server, tmp_path):
    server.routes["/big-lama.pt"] = Route()
    dest = tmp_path / "big-lama.pt"
    result = download(f"{server.url}/big-lama.pt", dest, md5=PAYLOAD_MD5, progress=False)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert files_in(tmp_path) == ["big-lama.pt"]  # no .part left over


def test_download_verifies_sha256_and_creates_directories(server, tmp_path):
    server.routes["/w"] = Route()
    dest = tmp_path / "models" / "nested" / "w.bin"
    download(f"{server.url}/w", dest, sha256=PAYLOAD_SHA256.upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_discards_everything(server, tmp_path):
    server.routes["/big-lama.pt"] = Route()
    with pytest.raises(DownloadError) as caught:
        download(f"{server.url}/big-lama.pt", tmp_path / "big-lama.pt", md5=BIG_LAMA.md5,
                 progress=False)
    assert str(caught.value) == (
        f"checksum mismatch for big-lama.pt: expected md5 {BIG_LAMA.md5}, "
        f"got {PAYLOAD_MD5}; the file was discarded"
    )
    assert files_in(tmp_path) == []


def test_http_404_is_reported(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.url}/missing", tmp_path / "x.pt", progress=False)
    assert files_in(tmp_path) == []


def test_http_500_is_reported(server, tmp_path):
    server.routes["/broken"] = Route(status=500)
    with pytest.raises(DownloadError, match="HTTP 500"):
        download(f"{server.url}/broken", tmp_path / "x.pt", progress=False)


def test_short_read_is_an_error_and_leaves_nothing(server, tmp_path):
    server.routes["/short"] = Route(declared_length=len(PAYLOAD) + 1000)
    with pytest.raises(DownloadError, match=f"cut short: got {len(PAYLOAD)} of"):
        download(f"{server.url}/short", tmp_path / "x.pt", progress=False)
    assert files_in(tmp_path) == []


def test_stalled_server_times_out(server, tmp_path):
    server.routes["/stall"] = Route(stall=True)
    with pytest.raises(DownloadError, match="timed out"):
        download(f"{server.url}/stall", tmp_path / "x.pt", progress=False, timeout=0.3)
    assert files_in(tmp_path) == []


def test_present_verified_file_is_not_downloaded_again(server, tmp_path):
    server.routes["/big-lama.pt"] = Route()
    dest = tmp_path / "big-lama.pt"
    dest.write_bytes(PAYLOAD)
    assert download(f"{server.url}/big-lama.pt", dest, md5=PAYLOAD_MD5, progress=False) == dest
    assert server.hits == []


def test_present_file_with_wrong_content_is_replaced(server, tmp_path):
    server.routes["/big-lama.pt"] = Route()
    dest = tmp_path / "big-lama.pt"
    dest.write_bytes(b"an older, broken download")
    download(f"{server.url}/big-lama.pt", dest, md5=PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits == ["/big-lama.pt"]


def test_failed_download_keeps_an_existing_file_untouched(server, tmp_path):
    server.routes["/big-lama.pt"] = Route(body=b"wrong")
    dest = tmp_path / "big-lama.pt"
    dest.write_bytes(b"previous")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{server.url}/big-lama.pt", dest, md5=PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == b"previous"
    assert files_in(tmp_path) == ["big-lama.pt"]


def test_connection_refused(tmp_path):
    # A bound socket that never listens: connecting to its port is refused, reliably.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        with pytest.raises(DownloadError, match="cannot reach .*[Rr]efused"):
            download(f"http://127.0.0.1:{port}/big-lama.pt", tmp_path / "x.pt", progress=False)
    assert files_in(tmp_path) == []


def test_malformed_url(tmp_path):
    with pytest.raises(DownloadError, match="invalid URL"):
        download("not a url", tmp_path / "x.pt", progress=False)


def test_progress_bar_reports_the_transfer(server, tmp_path, capsys):
    server.routes["/big-lama.pt"] = Route()
    download(f"{server.url}/big-lama.pt", tmp_path / "big-lama.pt", progress=True)
    err = capsys.readouterr().err
    assert "big-lama.pt" in err and "1.00M/1.00M" in err


def test_download_big_lama_checks_the_known_md5_even_from_a_mirror(server, tmp_path):
    server.routes["/mirror/big-lama.pt"] = Route()
    with pytest.raises(DownloadError, match=f"expected md5 {BIG_LAMA.md5}"):
        download_big_lama(tmp_path, url=f"{server.url}/mirror/big-lama.pt")
    assert files_in(tmp_path) == []


def test_download_big_lama_into_a_directory(server, tmp_path, capsys):
    server.routes["/mirror/big-lama.pt"] = Route()
    path = download_big_lama(
        tmp_path / "models", url=f"{server.url}/mirror/big-lama.pt", md5=PAYLOAD_MD5
    )
    assert path == tmp_path / "models" / "big-lama.pt"
    assert path.read_bytes() == PAYLOAD


def test_known_models_record():
    assert KNOWN_MODELS["big-lama"] is BIG_LAMA
    assert BIG_LAMA.url.endswith("/" + BIG_LAMA.filename)
    assert BIG_LAMA.md5 == "e3aa4aaa15225a33ec84f9f4bc47e500"


def test_unwritable_destination_is_a_download_error(server, tmp_path):
    server.routes["/w"] = Route()
    (tmp_path / "models").write_text("a file where a directory should be")
    with pytest.raises(DownloadError, match="cannot write"):
        download(f"{server.url}/w", tmp_path / "models" / "w.pt", progress=False)


def test_failed_rename_leaves_no_part_file(server, tmp_path):
    server.routes["/w"] = Route()
    blocker = tmp_path / "w.pt"
    blocker.mkdir()
    (blocker / "keep").write_text("x")  # os.replace cannot put a file over this directory
    with pytest.raises(DownloadError, match=f"cannot write {blocker}"):
        download(f"{server.url}/w", blocker, md5=PAYLOAD_MD5, progress=False)
    assert files_in(tmp_path) == ["w.pt"]
