"""One owner for every thread (service/lifecycle.py) and the draining server (webui/server.py)."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.lifecycle import Lifecycle
from support.app import make_settings, serve
from webui.server import DrainingServer

SERVICE_THREADS = ("monitor-sampler", "outputs-retention", "gpu-worker-", "warm-up")


def service_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.is_alive() and t.name.startswith(SERVICE_THREADS))


def test_parts_start_in_order_and_stop_in_reverse_even_when_one_fails_to_stop():
    events = []
    lifecycle = Lifecycle()
    lifecycle.add("a", lambda: events.append("start a"), lambda: events.append("stop a"))
    lifecycle.add("made running", None, lambda: 1 / 0)
    lifecycle.add("b", lambda: events.append("start b"), lambda: events.append("stop b"))
    lifecycle.start()
    lifecycle.start()  # a second start starts nothing twice
    assert events == ["start a", "start b"] and lifecycle.running == ["a", "made running", "b"]
    lifecycle.stop()
    assert events == ["start a", "start b", "stop b", "stop a"] and lifecycle.running == []


def test_the_lifespan_starts_before_the_first_request_and_stops_after_the_last():
    events = []
    lifecycle = Lifecycle()
    lifecycle.add("part", lambda: events.append("start"), lambda: events.append("stop"))
    app = FastAPI(lifespan=lifecycle.lifespan)
    app.get("/")(lambda: events.append("request") or {})
    with TestClient(app) as client:
        client.get("/")
        assert events == ["start", "request"]
    assert events == ["start", "request", "stop"]


def test_the_app_starts_its_threads_with_the_lifespan_and_leaves_none_running(tiny_dir, tmp_path):
    before = service_threads()
    with serve(make_settings(tiny_dir, tmp_path)) as client:
        running = service_threads()
        assert {"monitor-sampler", "outputs-retention", "gpu-worker-0"} <= set(running), running
        assert client.post("/api/v1/inpaint").status_code == 422  # it serves
    assert service_threads() == before, "a thread of the service outlived the app"


class FakeService:
    def __init__(self):
        self.draining, self.in_flight = False, 1

    def start_draining(self):
        self.draining = True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def draining_server():
    app = FastAPI()
    service = FakeService()
    app.get("/readyz")(lambda: {"draining": service.draining})
    ended = threading.Event()
    port = free_port()
    server = DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None), service,
                            timeout_s=30, end_streams=ended.set)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield server, service, ended, f"http://127.0.0.1:{port}", thread
    server.should_exit = True
    thread.join(10)


def test_a_sigterm_drains_while_the_port_stays_open_then_shuts_down(draining_server):
    server, service, ended, url, thread = draining_server
    server.handle_exit(signal.SIGTERM, None)
    deadline = time.monotonic() + 5
    while not service.draining:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    # A repair is in flight: still listening, so probes read the drain instead of a refused connection.
    assert httpx.get(f"{url}/readyz").json() == {"draining": True}
    assert thread.is_alive() and not ended.is_set()
    service.in_flight = 0
    thread.join(10)
    assert not thread.is_alive() and ended.is_set(), "the server did not stop once nothing was in flight"


def test_a_second_signal_stops_at_once(draining_server):
    server, service, ended, _url, thread = draining_server
    server.handle_exit(signal.SIGTERM, None)
    time.sleep(0.2)
    server.handle_exit(signal.SIGINT, None)
    thread.join(10)
    assert not thread.is_alive() and service.in_flight == 1
