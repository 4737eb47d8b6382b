"""The HTTP edge (webui/edge.py, webui/api.py's ApiGate): streaming body limits, the token before
the body, cheap checks before decoding, Host/Origin/CORS for browsers, and the API's error shape.

Each attack goes to a live `python app.py` and is judged by its answer, its time (a refusal
from a header or a size: under a second) and the server's memory (RSS high-water mark, reset
before the attack: under 100 MB of growth); the policy's rules are also checked on their own.
"""

from __future__ import annotations

import concurrent.futures
import select
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from support.app import (
    FAST_S,
    LOCAL_BASE,
    WAIT_S,
    block_worker,
    encode,
    error_of,
    make_case,
    make_settings,
    metric,
    serve,
    service_of,
    upload,
    wait_until,
)
from support.liveserver import LiveServer
from support.reliability import record
from webui.server import check_address_free

from webui.edge import BodyLimits, EdgeMiddleware, EdgePolicy

MB = 2**20
RSS_BOUND = 100 * MB
BOUNDARY = "edge-test-boundary"
EVIL = "http://evil.example"
TOKEN = "edge-" + "3b9d" * 8


# ------------------------------------------------------------------ helpers


def reset_peak_rss(server: LiveServer) -> int:
    """Reset the process's RSS high-water mark (Linux: clear_refs 5) and return its settled RSS,
    so that peak_rss() afterwards shows what the next requests cost, not the warm-up's peak."""
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")
    return server.settled_rss()


def bytes_written(server: LiveServer) -> int:
    """What the process has passed to write() so far: files (a spooled upload, the logs), not
    sockets (send())."""
    for line in Path(f"/proc/{server.process.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/PID/io")


def stream_until_answered(server: LiveServer, head: str, total_mb: int) -> tuple[bytes, float, int]:
    """Send `head` and then a chunked multipart body of up to `total_mb` MB over a raw socket,
    1 MB at a time, until the server answers: (the answer as read until the server closes the
    connection, seconds until its first byte, MB sent before it). Unlike an HTTP client, which
    reads the answer only once it has sent the whole body, this times the server itself."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
        sent_mb, answer = 0, b""
        for part in chunked_file_upload(total_mb * MB):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            except OSError:  # the server closed the connection while the body was coming
                break
            sent_mb += len(part) // MB
        select.select([sock], [], [], 30)
        answered_s = time.perf_counter() - started
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # closed with our body unread: what was sent before still counts
            pass
    return answer, answered_s, sent_mb


def chunked_file_upload(total_bytes: int, field: str = "image"):
    """A multipart body streamed without Content-Length (httpx sends a generator chunked): the
    part's headers, then `total_bytes` of file content made up as it is sent."""
    yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="a.png"\r\n'
           "Content-Type: image/png\r\n\r\n").encode()
    chunk = bytes(MB)
    for _ in range(total_bytes // MB):
        yield chunk


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    response = call(*args, **kwargs)
    return response, time.perf_counter() - started


def sixteen_bit_png() -> bytes:
    """4096² RGBA at 16 bits: 134 KB of PNG, 128 MB once decoded."""
    return encode(np.zeros((4096, 4096, 4), np.uint16))


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def settled_files_under(server: LiveServer, folder: Path) -> list[Path]:
    """`files_under(folder)` once `server` has written every result it answered: the API answers
    before its file is written, so an earlier test's result may still be landing."""
    with httpx.Client(base_url=server.base, timeout=WAIT_S) as http:
        wait_until(lambda: metric(http.get("/metrics").text, "inpaint_saves_pending") == 0,
                   what="the server's answered results written")
    return files_under(folder)


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    """`python app.py` as it starts by default (loopback, no token, no allowed origins)."""
    folder = tmp_path_factory.mktemp("edge")
    with LiveServer.start(tiny_dir, folder, env={"TMPDIR": str(_tmp(folder))}) as live:
        yield live


@pytest.fixture(scope="module")
def protected(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge-token")
    with LiveServer.start(tiny_dir, folder, "--api-token", TOKEN, env={"TMPDIR": str(_tmp(folder))}) as live:
        yield live


def _tmp(folder: Path) -> Path:
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    return folder / "tmp"


# ------------------------------------------------------------------ streaming limits


def test_a_chunked_upload_is_refused_at_the_limit_as_it_streams(server):
    """Issue 12: a chunked 1.5 GB upload was read into memory before the 413 (+3 GB RSS)."""
    results_before = settled_files_under(server, server.folder / "outputs")
    with httpx.Client(base_url=server.base, timeout=30) as http:
        before_metrics = http.get("/metrics").text
        rss_before = reset_peak_rss(server)
        response, seconds = timed(http.post, "/api/v1/inpaint", content=chunked_file_upload(1500 * MB),
                                  headers=MULTIPART)
        growth = server.peak_rss() - rss_before
        message = error_of(response, 413, "upload_too_large")
        after_metrics = http.get("/metrics").text
    assert "101 MB" in message, message  # two files of 50 MB and 1 MB of form
    assert response.headers["connection"] == "close"
    assert seconds < FAST_S, f"refused after {seconds:.2f} s"
    assert growth < RSS_BOUND, f"RSS grew {growth / MB:.0f} MB"
    # Counted like every other refusal of a repair.
    assert metric(after_metrics, "inpaint_requests_total", status="413") == \
        metric(before_metrics, "inpaint_requests_total", status="413") + 1
    assert settled_files_under(server, server.folder / "outputs") == results_before
    record("Security: chunked 1.5 GB upload to /api/v1/inpaint", "answer, time, RSS growth",
           f"413 upload_too_large at 101 MB; {seconds:.2f} s; {growth / MB:.0f} MB", "413; < 1 s; < 100 MB")


@pytest.mark.parametrize("path, content_type", [("/gradio_api/queue/join", "application/json"),
                                                ("/gradio_api/component_server", "application/json"),
                                                ("/gradio_api/run/predict", "application/json"),
                                                ("/login", "application/x-www-form-urlencoded")])
def test_the_uis_json_routes_take_small_bodies_only(server, path, content_type):
    """Issue 12: Gradio's JSON routes accepted 300 MB bodies. Declared or chunked, past 1 MB: 413."""
    with httpx.Client(base_url=server.base, timeout=30) as http:
        rss_before = reset_peak_rss(server)
        declared, declared_s = timed(server.raw, (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                                                  f"Content-Type: {content_type}\r\n"
                                                  f"Content-Length: {300 * MB}\r\n\r\n").encode())
        chunked, chunked_s = timed(http.post, path, content=(b"a" * MB for _ in range(300)),
                                   headers={"content-type": content_type})
        growth = server.peak_rss() - rss_before
    assert declared[0] == 413 and b"the limit is 1 MB" in declared[1], declared
    assert chunked.status_code == 413 and "limit of 1 MB" in chunked.text, chunked.text
    assert max(declared_s, chunked_s) < FAST_S, (declared_s, chunked_s)
    assert growth < RSS_BOUND
    record(f"Security: 300 MB body to {path}", "answer (declared; chunked), slower time, RSS growth",
           f"413; 413; {max(declared_s, chunked_s):.2f} s; {growth / MB:.0f} MB", "413 at 1 MB; < 1 s; < 100 MB")


def test_the_uis_upload_route_takes_one_files_worth(server):
    with httpx.Client(base_url=server.base, timeout=30) as http:
        rss_before = reset_peak_rss(server)
        status, body = server.raw((f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                                   f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                                   f"Content-Length: {52 * MB}\r\n\r\n").encode())
        fine = http.post("/gradio_api/upload", files={"files": ("a.png", encode(make_case()[0]), "image/png")})
        growth = server.peak_rss() - rss_before
    assert status == 413, body
    assert fine.status_code == 200, fine.text
    assert growth < RSS_BOUND


def test_a_small_body_under_its_limit_is_untouched(server):
    """The limit is the route's: a body just under it arrives whole (the form parses)."""
    with httpx.Client(base_url=server.base, timeout=30) as http:
        response = http.post("/api/v1/inpaint", **upload(*make_case(), dilate=0))
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------ the token before the body


def test_a_wrong_token_is_refused_before_the_body_is_read(protected):
    """Issue 12: with a wrong token, 1 GB was spooled to the temporary folder before the 401."""
    head = (f"POST /api/v1/inpaint HTTP/1.1\r\nHost: 127.0.0.1:{protected.port}\r\nAuthorization: Bearer wrong\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n")
    rss_before = reset_peak_rss(protected)
    written_before = bytes_written(protected)
    answer, seconds, sent_mb = stream_until_answered(protected, head, 1000)
    written = bytes_written(protected) - written_before
    growth = protected.peak_rss() - rss_before
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 401") and b'"unauthorized"' in rest, answer[:300]
    # The rest of the body is not even drained: the server closes the connection.
    assert b"connection: close" in rest.lower()
    assert seconds < FAST_S
    assert written < 4 * MB, f"the server wrote {written / MB:.0f} MB while refusing a body by its headers"
    assert growth < RSS_BOUND
    # The right token still works, and only then is the body read.
    assert httpx.post(protected.url("/api/v1/inpaint"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                      **upload(*make_case())).status_code == 200
    record("Security: wrong token with a chunked 1 GB upload", "answer, time to answer, MB sent before it, "
           "bytes written (a spooled body), RSS growth",
           f"401 and close; {seconds:.3f} s; {sent_mb} MB; {written / MB:.1f} MB; {growth / MB:.0f} MB",
           "401; < 1 s; -; < 4 MB; < 100 MB")


# ------------------------------------------------------------------ cheap checks before decoding


def test_bad_form_values_are_refused_before_any_upload_is_decoded(server):
    """Issue 12: 16 simultaneous 16-bit 4096² PNGs with strategy=bogus got their 422 after up to
    25 s, RSS +3.8 GB. The form's values are checked before a pixel is decoded."""
    png = sixteen_bit_png()
    assert len(png) < 200 * 1024

    def one(_):
        with httpx.Client(base_url=server.base, timeout=60) as http:
            return timed(http.post, "/api/v1/inpaint", **upload(png, png, strategy="bogus"))

    rss_before = reset_peak_rss(server)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    growth = server.peak_rss() - rss_before
    for response, _ in answers:
        assert "bogus" in error_of(response, 422, "invalid_option")
    slowest = max(seconds for _, seconds in answers)
    assert slowest < FAST_S, f"the slowest 422 took {slowest:.2f} s"
    assert growth < RSS_BOUND, f"RSS grew {growth / MB:.0f} MB"
    record("Security: 16 simultaneous 16-bit 4096² PNGs with strategy=bogus", "answers, slowest, RSS growth",
           f"16 × 422; {slowest:.2f} s; {growth / MB:.0f} MB", "all 422; < 1 s; < 100 MB")


def test_a_full_queue_and_oversized_files_are_refused_before_decoding(tiny_dir, tmp_path, monkeypatch):
    settings = make_settings(tiny_dir, tmp_path, queue_capacity=1, max_upload_mb=1)
    png = sixteen_bit_png()
    with serve(settings) as client:
        service = service_of(client)
        decoded = []
        real_decode = service.decode
        monkeypatch.setattr(service, "decode", lambda *data: decoded.append(data) or real_decode(*data))
        big = bytes(2 * MB)  # over the 1 MB per file, within the 3 MB body
        error_of(client.post("/api/v1/inpaint", **upload(big, png)), 413, "image_too_large")
        error_of(client.post("/api/v1/inpaint", **upload(png, big)), 413, "mask_too_large")
        release = block_worker(service)
        try:
            response, seconds = timed(client.post, "/api/v1/inpaint", **upload(png, png))
            error_of(response, 503, "queue_full")
            assert int(response.headers["retry-after"]) >= 1 and seconds < FAST_S
        finally:
            release.set()
        assert decoded == [], "a refused upload was decoded"
        # The queue (capacity 1) has room again once the released job is out of it, not as it is released.
        wait_until(lambda: service.queue.depth == 0, what="the released job out of the queue")
        record("Security: full queue, and files over the per-file limit", "answers; uploads decoded before them",
               f"503 queue_full with Retry-After in {seconds:.2f} s, 413 image_too_large / mask_too_large; 0",
               "503 / 413 < 1 s; 0")
        assert client.post("/api/v1/inpaint", **upload(*make_case())).status_code == 200
        assert len(decoded) == 1


# ------------------------------------------------------------------ browsers: cross-site writes


def _upload_file():
    return {"files": {"files": ("a.png", encode(make_case()[0]), "image/png")}}


CROSS_SITE = [
    ("origin of another site", {"Origin": EVIL}),
    ("another port of this host", {"Origin": "http://127.0.0.1:1"}),
    ("sandboxed page (Origin: null)", {"Origin": "null"}),
    ("Sec-Fetch-Site: cross-site, no Origin", {"Sec-Fetch-Site": "cross-site"}),
]


@pytest.mark.parametrize("case", [name for name, _ in CROSS_SITE])
def test_cross_site_writes_are_refused_on_every_route(server, case):
    """Issue 12: with Origin: http://evil.example, POST /api/v1/inpaint answered 200 and wrote a file,
    /gradio_api/upload stored 1 MB and accept_blobs held memory."""
    headers = dict(CROSS_SITE)[case]
    written_before = set(settled_files_under(server, server.folder))
    with httpx.Client(base_url=server.base, timeout=30) as http:
        answers = {
            "/api/v1/inpaint": timed(http.post, "/api/v1/inpaint", headers=headers, **upload(*make_case())),
            "/gradio_api/upload": timed(http.post, "/gradio_api/upload", headers=headers, **_upload_file()),
            "/gradio_api/queue/join": timed(http.post, "/gradio_api/queue/join", headers=headers,
                                            json={"data": [], "fn_index": 0, "session_hash": "x"}),
            "/gradio_api/component_server": timed(http.post, "/gradio_api/component_server", headers=headers,
                                                  json={"component_id": 1, "fn_name": "accept_blobs", "data": {},
                                                        "session_hash": "x"}),
            "/login": timed(http.post, "/login", headers=headers, data={"username": "a", "password": "b"}),
        }
    error_of(answers["/api/v1/inpaint"][0], 403, "cross_site_request")
    for path, (response, seconds) in answers.items():
        assert response.status_code == 403, (path, response.status_code, response.text)
        assert "cross-site" in response.text and "--allowed-origins" in response.text
        assert seconds < FAST_S, (path, seconds)
    written = {p for p in set(settled_files_under(server, server.folder)) - written_before
               if p.is_relative_to(server.folder / "outputs") or p.is_relative_to(server.folder / "cache")}
    assert written == set(), "a cross-site repair or upload was stored"
    record(f"Security: cross-site POST ({case})", "answers on /api/v1/inpaint, /gradio_api/upload, queue/join, "
           "component_server, /login; files written", "5 × 403; 0", "all 403; 0")


def test_the_servers_own_pages_and_scripts_are_served(server):
    """Same origin (the UI's own page), by any loopback name, and no Origin (curl) pass."""
    with httpx.Client(base_url=server.base, timeout=30) as http:
        for origin in (server.base, f"http://localhost:{server.port}"):
            host = origin.removeprefix("http://")
            response = http.post("/gradio_api/upload", headers={"Origin": origin, "Host": host,
                                                                "Sec-Fetch-Site": "same-origin"}, **_upload_file())
            assert response.status_code == 200, (origin, response.text)
        assert http.post("/api/v1/inpaint", **upload(*make_case())).status_code == 200


# ------------------------------------------------------------------ browsers: Host (DNS rebinding)


FOREIGN_HOSTS = ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.5:{port}",
                 "localhost.evil.example:{port}", "bad host"]


def test_foreign_host_names_are_refused_on_a_loopback_bind(server):
    """Issue 12: any Host was accepted, so a page whose DNS name rebinds to 127.0.0.1 drove the service."""
    slowest = 0.0
    for host in (name.format(port=server.port) for name in FOREIGN_HOSTS):
        for path in ("/", "/config", "/healthz", "/api/v1/monitor"):
            (status, body), seconds = timed(server.raw, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert status == 421 and b"host name" in body, (host, path, status, body[:200])
            assert (b'"host_not_allowed"' in body) == path.startswith("/api/"), body
            slowest = max(slowest, seconds)
        with httpx.Client(base_url=server.base, timeout=30) as http:
            response = http.post("/api/v1/inpaint", headers={"Host": host}, **upload(*make_case()))
        error_of(response, 421, "host_not_allowed")
    assert slowest < FAST_S
    record("Security: DNS rebinding (a foreign Host on a loopback bind)",
           f"answers to {len(FOREIGN_HOSTS)} foreign Host names on /, /config, /healthz, /api/v1/monitor and "
           "POST /api/v1/inpaint; slowest", f"all 421; {slowest:.3f} s", "all 421; < 1 s")


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}",
                                  "LOCALHOST:{port}"])
def test_loopback_host_names_are_served(server, host):
    host = host.format(port=server.port)
    status, _ = server.raw(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert status == 200


def _policy(bind: str, hosts=(), origins=()) -> EdgePolicy:
    return EdgePolicy.create(bind, BodyLimits(MB), hosts, origins)


def test_on_a_public_bind_ip_addresses_and_listed_names_are_served():
    """Kubernetes probes and Prometheus send the pod's IP as Host: an IP names no DNS record to
    rebind, so IP literals pass; DNS names must be listed."""
    public = _policy("0.0.0.0", hosts=["lama.example.com", "::1"])
    for host in ("10.1.2.3:7860", "10.1.2.3", "[2001:db8::5]:7860", "localhost:7860", "Lama.Example.com",
                 "lama.example.com:443", None):
        assert public.host_allowed(host), host
    for host in ("evil.example", "lama.example.com.evil.example", "example.com", "a b", "[::1", "x:y"):
        assert not public.host_allowed(host), host
    assert _policy("0.0.0.0", hosts=["*"]).host_allowed("anything.example")
    loopback = _policy("127.0.0.1", hosts=["proxy.internal"])
    assert loopback.host_allowed("proxy.internal:7860") and not loopback.host_allowed("10.1.2.3")


def test_probes_answer_with_the_pod_ip_as_host_on_a_public_bind(tiny_dir, tmp_path):
    settings = make_settings(tiny_dir, tmp_path, host="0.0.0.0", allowed_hosts=["lama.example.com"])
    with serve(settings) as client:  # the app as bound; TestClient opens no socket
        for path in ("/livez", "/readyz", "/healthz", "/metrics"):
            assert client.get(path, headers={"Host": "10.244.1.17:7860"}).status_code == 200, path
        assert client.get("/", headers={"Host": "lama.example.com"}).status_code == 200
        error_of(client.get("/api/v1/monitor", headers={"Host": "rebound.example"}), 421, "host_not_allowed")


def test_bad_allowed_hosts_or_origins_stop_the_start_with_one_line(tiny_dir, tmp_path):
    for flags, words in ((["--allowed-origins", "evil.example"], "not an origin"),
                         (["--allowed-origins", "https://a.example/path"], "no path"),
                         (["--allowed-hosts", "https://lama.example.com"], "without scheme or port"),
                         (["--allowed-hosts", "lama.example.com:7860"], "without scheme or port")):
        with pytest.raises(SystemExit) as stopped:
            make_settings(tiny_dir, tmp_path, *flags)
        assert str(stopped.value).startswith("error: allowed_") and words in str(stopped.value), stopped.value
    settings = make_settings(tiny_dir, tmp_path, "--allowed-hosts", "a.example, b.example",
                             "--allowed-origins", "https://tools.example")
    assert settings.allowed_hosts == ["a.example", "b.example"]
    assert settings.allowed_origins == ["https://tools.example"]


def test_a_taken_port_stops_the_start_at_once_with_one_line(tiny_dir, tmp_path):
    """Said before the model loads (uvicorn would bind, and say Errno 98, only after the start-up)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match="app.py exited with 1"):
            with LiveServer.start(tiny_dir, tmp_path, port=port):
                pass
    output = (tmp_path / "server.log").read_text().strip()
    assert output == (f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
                      "(is another server running there? stop it, or pass --port)")


def test_an_address_that_is_not_this_host_s_stops_the_start_with_one_line():
    with pytest.raises(SystemExit) as stopped:
        check_address_free("192.0.2.1", 7860)  # TEST-NET-1: never a host's own address
    assert str(stopped.value) == ("error: cannot listen on 192.0.2.1:7860: Cannot assign requested address "
                                  "(not an address of this host)")
    check_address_free("localhost", 0)  # ::1 passed over where IPv6 is off, as uvicorn's asyncio does


# ------------------------------------------------------------------ browsers: CORS


def _cors(response) -> dict[str, str]:
    return {key: value for key, value in response.headers.items() if key.startswith("access-control-")}


@pytest.fixture(scope="module")
def named(tiny_dir, tmp_path_factory):
    """Reached under a DNS name, where Gradio's own CORS reflects any origin, with one allowed origin."""
    folder = tmp_path_factory.mktemp("edge-cors")
    with LiveServer.start(tiny_dir, folder, "--allowed-hosts", "lama.example",
                          "--allowed-origins", "https://tools.example") as live:
        yield live


def test_no_origin_is_reflected_and_only_listed_ones_may_read(server, named):
    """Issue 12: CORS reflected any localhost origin with credentials, and any origin when the
    Host was not localhost."""
    reflected = []
    for live, host in ((server, f"127.0.0.1:{server.port}"), (named, "lama.example")):
        with httpx.Client(base_url=live.base, timeout=30, headers={"Host": host}) as http:
            for origin in (EVIL, f"http://localhost:{live.port + 1}", "null"):
                for path in ("/config", "/", "/healthz", "/gradio_api/info"):
                    response = http.get(path, headers={"Origin": origin})
                    if _cors(response):
                        reflected.append((host, origin, path, _cors(response)))
                preflight, seconds = timed(http.options, "/gradio_api/upload", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST"})
                assert preflight.status_code == 403 and not _cors(preflight) and seconds < FAST_S
    assert reflected == []
    with httpx.Client(base_url=named.base, timeout=30, headers={"Host": "lama.example"}) as http:
        allowed = {"Origin": "https://tools.example"}
        read = http.get("/healthz", headers=allowed)
        assert _cors(read)["access-control-allow-origin"] == "https://tools.example"
        assert "access-control-allow-credentials" not in _cors(read)
        assert "Origin" in read.headers["vary"]
        preflight = http.options("/api/v1/inpaint", headers={**allowed, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 204 and _cors(preflight)["access-control-allow-origin"] == \
            "https://tools.example"
        assert "access-control-allow-credentials" not in _cors(preflight)
        repaired = http.post("/api/v1/inpaint", headers=allowed, **upload(*make_case()))
        assert repaired.status_code == 200 and _cors(repaired)["access-control-allow-origin"] == \
            "https://tools.example"
        error_of(http.post("/api/v1/inpaint", headers={"Origin": EVIL}, **upload(*make_case())), 403,
                 "cross_site_request")
    record("Security: CORS", "responses carrying Access-Control-Allow-* for unlisted origins (3 origins × 4 routes "
           "× Host localhost and a DNS name); credentials allowed", "0; never", "0; never")


# ------------------------------------------------------------------ the API's error shape


def test_every_api_error_has_the_documented_shape(server):
    """Issue 12: malformed multipart and unknown /api/v1/* routes answered {"detail": ...}."""
    with httpx.Client(base_url=server.base, timeout=30) as http:
        checks = [
            (http.post("/api/v1/inpaint", content=b"--x\r\njunk", headers={"content-type": "multipart/form-data"}),
             400, "invalid_request", "boundary"),
            (http.post("/api/v1/inpaint", content=b"--x\r\nno end", headers={
                "content-type": "multipart/form-data; boundary=x"}), 400, "invalid_request", "multipart"),
            (http.post("/api/v1/inpaint", content=b"{}", headers={"content-type": "application/json"}),
             422, "invalid_request", "image"),
            (http.get("/api/v1/nope"), 404, "not_found", "/api/v1/nope"),
            (http.post("/api/v2/inpaint"), 404, "not_found", "/api/v1/inpaint"),
            (http.get("/api/v1/inpaint"), 405, "method_not_allowed", "POST"),
            (http.delete("/api/v1/monitor"), 405, "method_not_allowed", "GET"),
        ]
        for response, status, code, word in checks:
            assert word in error_of(response, status, code), response.text
        assert http.get("/api/v1/inpaint").headers["allow"] == "POST"
    record("Malformed input: /api/v1/* errors", "answers in the documented {\"error\": {\"code\", \"message\"}} "
           "shape (malformed multipart, missing parts, unknown route, wrong method)",
           f"{len(checks)} of {len(checks)}", "all")


# ------------------------------------------------------------------ the middleware on its own


def _edge_app(handler, limit: int = 16, origins=()) -> TestClient:
    async def websocket(ws):
        await ws.accept()
        await ws.send_text("hello")
        await ws.close()

    inner = Starlette(routes=[Route("/", handler, methods=["GET", "POST"]), WebSocketRoute("/ws", websocket)])
    edge = EdgeMiddleware(inner, _policy("127.0.0.1", origins=origins) if origins else
                          EdgePolicy.create("127.0.0.1", BodyLimits(limit)))
    return TestClient(edge, base_url=LOCAL_BASE)


def test_the_edge_answers_413_whatever_the_app_makes_of_the_error():
    async def swallowing(request):
        try:
            await request.body()
        except Exception:  # an app that turns any error into its own 400
            return PlainTextResponse("bad request", status_code=400)
        return PlainTextResponse("read")

    with _edge_app(swallowing) as client:
        response = client.post("/", content=iter([b"x" * 10, b"x" * 10]))  # chunked: 20 bytes > 16
        assert response.status_code == 413 and "over the limit of 16 bytes" in response.text
        assert client.post("/", content=b"x" * 16).text == "read"


def test_the_edge_replaces_the_apps_cors_headers_and_refuses_foreign_websockets():
    async def reflecting(request):
        return PlainTextResponse("ok", headers={"Access-Control-Allow-Origin": request.headers.get("origin", "*"),
                                                "Access-Control-Allow-Credentials": "true"})

    with _edge_app(reflecting, origins=["https://tools.example"]) as client:
        assert _cors(client.get("/", headers={"Origin": EVIL})) == {}
        assert _cors(client.get("/", headers={"Origin": "https://tools.example"})) == {
            "access-control-allow-origin": "https://tools.example", "access-control-expose-headers": "*"}
        with client.websocket_connect("/ws", headers={"Origin": LOCAL_BASE, "Host": "127.0.0.1"}) as ws:
            assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/ws", headers={"Origin": EVIL}) as ws:
                ws.receive_text()
