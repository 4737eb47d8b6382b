"""`python app.py` as a subprocess, for the fault and security tests, which need what
tests/liveserver.py leaves out: their own environment (secrets from env vars), limits set before
exec (RLIMIT_FSIZE), the same folders across a restart, and signals (SIGKILL, SIGTERM).

    with run_app(tiny_dir, folder) as app:
        httpx.get(app.url("/healthz"))
        app.process.send_signal(signal.SIGTERM)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
START_S = 60  # start-up and warm-up take a few seconds on the tiny model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class App:
    base: str
    port: int
    process: subprocess.Popen
    folder: Path
    log_path: Path  # the process's stdout and stderr
    ready_after_s: float = 0.0

    def url(self, path: str) -> str:
        return self.base + path

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def raw(self, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
        """Send `request` as it is (no client-side normalisation of the path); (status, body)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def get_raw(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: close",
                 *(f"{key}: {value}" for key, value in (headers or {}).items())]
        return self.raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def app_command(tiny_dir: Path, folder: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
            "--model", str(tiny_dir), "--device", "cpu", "--outputs-dir", str(folder / "outputs"),
            "--logs-dir", str(folder / "logs"), "--ui-cache-dir", str(folder / "cache"), *flags]


@contextlib.contextmanager
def run_app(tiny_dir: Path, folder: Path, *flags: str, env: dict[str, str] | None = None,
            preexec_fn: Callable[[], None] | None = None, log_name: str = "server.log") -> Iterator[App]:
    """Start app.py with the tiny model on the CPU, outputs, logs and the UI cache under `folder`;
    wait for /readyz 200; on the way out SIGTERM it, then SIGKILL it if it lingers. `env` adds to
    the caller's environment, from which LAMA_API_TOKEN and LAMA_AUTH are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")}
    environment.update(env or {})
    log_path = folder / log_name
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(app_command(tiny_dir, folder, port, *flags), cwd=folder, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    app = App(f"http://127.0.0.1:{port}", port, process, folder, log_path)
    try:
        deadline = started + START_S
        while True:
            if not app.alive():
                raise AssertionError(f"app.py exited with {process.returncode}:\n{app.output()[-3000:]}")
            try:
                if httpx.get(app.url("/readyz"), timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"app.py not ready within {START_S} s:\n{app.output()[-3000:]}")
            time.sleep(0.05)
        app.ready_after_s = time.monotonic() - started
        yield app
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
