"""The editor's server path through gradio_client (webui/client_api.py), against a live server:
the same job as POST /api/v1/inpaint gives the same bytes, with gradio_client's defaults and with
the Client webui/client_api.py recommends (one TLS context for all its requests, the result's
URL), refusals arrive as the service's messages, and with --auth the endpoint needs the login
(tests/test_ui_hardening.py checks the routes themselves). What a browser page reports about the
user's wait: tests/test_editor_browser.py."""

from __future__ import annotations

import runpy
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError

from support.liveserver import LiveServer
from support.paths import ROOT
from support.app import encode, make_case

USER, PASSWORD = "bo", "pw-" + "81f2a4c0" * 3


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tiny_dir, tmp_path_factory.mktemp("client-api")) as server:
        yield server


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path]:
    image, mask = make_case(160, 120, box=(30, 40, 70, 120))
    (tmp_path / "holiday.jpg").write_bytes(encode(image, ".jpg"))
    (tmp_path / "mask.png").write_bytes(encode(mask))
    return tmp_path / "holiday.jpg", tmp_path / "mask.png"


def test_the_ui_path_through_gradio_client_gives_the_api_s_result(server: LiveServer, job):
    photo, mask = job
    client = Client(server.base, verbose=False)
    path = Path(client.predict(handle_file(photo), handle_file(mask), api_name="/repair"))
    answer = httpx.post(server.url("/api/v1/inpaint"), timeout=60,
                        files={"image": (photo.name, photo.read_bytes()), "mask": (mask.name, mask.read_bytes())})
    assert answer.status_code == 200, answer.text
    assert path.read_bytes() == answer.content, "the UI's path and the API repaired the same job differently"
    assert path.name == "holiday_repaired.png"
    # What the client downloaded is the file the service saved (published, not re-encoded).
    saved = {file.read_bytes() for file in (server.folder / "outputs").rglob("*.png")}
    assert path.read_bytes() in saved


def test_the_recommended_client_builds_no_tls_context_per_request(server: LiveServer, job, monkeypatch):
    """gradio_client opens a new HTTP client for each of its requests (two uploads, the queue's
    join, its event stream, a download), and httpx builds a TLS context for each, loading the CA
    bundle even for http://: most of the UI path's cost beyond the API's (docs/EDITOR.md). Given
    one context as ssl_verify, as webui/client_api.py recommends, a repair loads none."""
    photo, mask = job
    client = Client(server.base, verbose=False, ssl_verify=httpx.create_ssl_context(), download_files=False)
    loads = []
    load_verify_locations = ssl.SSLContext.load_verify_locations

    def counted(context: ssl.SSLContext, *args, **kwargs):
        loads.append(args or kwargs)
        return load_verify_locations(context, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    result = client.predict(handle_file(photo), handle_file(mask), api_name="/repair")
    assert loads == [], "gradio_client built a TLS context of its own for a request"
    monkeypatch.undo()
    # The answer names the published file itself (Gradio neither copied nor hashed it into a
    # folder of its own), by URL; its bytes are the API's for the same job.
    assert result["orig_name"] == "holiday_repaired.png"
    assert Path(result["path"]).parent.parent == (server.folder / "cache" / "editor").resolve()
    fetched = httpx.get(result["url"], timeout=60)
    answer = httpx.post(server.url("/api/v1/inpaint"), timeout=60,
                        files={"image": (photo.name, photo.read_bytes()), "mask": (mask.name, mask.read_bytes())})
    assert fetched.status_code == answer.status_code == 200, (fetched.text, answer.text)
    assert fetched.content == answer.content


def test_a_refusal_reaches_the_client_as_the_service_s_message(server: LiveServer, job, tmp_path: Path):
    photo, _ = job
    (tmp_path / "small.png").write_bytes(encode(make_case(16, 16, box=(2, 2, 8, 8))[1]))
    client = Client(server.base, verbose=False)
    with pytest.raises(AppError, match="mask is 16×16 but the image is 160×120"):
        client.predict(handle_file(photo), handle_file(tmp_path / "small.png"), api_name="/repair")
    with pytest.raises(AppError, match="strategy must be one of"):
        client.predict(handle_file(photo), handle_file(photo), strategy="sideways", api_name="/repair")
    assert httpx.get(server.url("/readyz")).status_code == 200  # and the server goes on


def test_with_auth_the_endpoint_needs_the_login(tiny_dir: Path, tmp_path: Path, job):
    photo, mask = job
    with LiveServer.start(tiny_dir, tmp_path / "authed", "--auth", f"{USER}:{PASSWORD}") as server:
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(server.base, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(server.base, auth=(USER, "wrong"), verbose=False)
        # Nor can the endpoint's queue be joined directly without the session.
        join = httpx.post(server.url("/gradio_api/queue/join"), json={"data": [], "fn_index": 1, "session_hash": "s"})
        assert join.status_code == 401
        client = Client(server.base, auth=(USER, PASSWORD), verbose=False)
        assert Path(client.predict(handle_file(photo), handle_file(mask), api_name="/repair")).stat().st_size > 0


def test_the_server_s_queued_events_leave_matplotlib_unloaded(server: LiveServer, job):
    """Gradio would import matplotlib (installed for the resource report) at the first queued event,
    a wait of a quarter of a second in the first repair from the page after each start
    (webui/gradio_import.py): after a repair through the queue no file of it is mapped."""
    photo, mask = job
    client = Client(server.base, verbose=False)
    assert Path(client.predict(handle_file(photo), handle_file(mask), api_name="/repair")).stat().st_size > 0
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "/matplotlib/" not in maps and "/torch/" in maps  # the check sees the server's own libraries


def test_the_ui_path_spoken_as_the_page_does_gives_the_api_s_result(server: LiveServer, job):
    """tools/ui_bench.py --client stream: the upload route, the queue's join and its event stream
    read as it arrives (no polling), over one connection, repair after repair in one session as a
    page's; the same bytes as the API's."""
    bench = runpy.run_path(str(ROOT / "tools" / "ui_bench.py"))
    photo, mask = job
    client = bench["connect_gradio"](server.base, None)
    path = bench["QueueStreamPath"](client, server.base, photo, mask)
    for _ in range(2):  # the session's event stream opened again for its next repair
        waited, model = path.repair()
        assert 0 < model < waited
    answer = httpx.post(server.url("/api/v1/inpaint"), timeout=60,
                        files={"image": (photo.name, photo.read_bytes()), "mask": (mask.name, mask.read_bytes())})
    assert answer.status_code == 200, answer.text
    # The newest two results saved: the page's path's, then the API's.
    saved = sorted((server.folder / "outputs").rglob("*.png"), key=lambda file: file.stat().st_mtime_ns)
    assert saved[-2].read_bytes() == answer.content, "the page's path repaired the job differently"
