"""`python app.py` as a subprocess on 127.0.0.1: the one launcher of every live-server test
(real HTTP, a real process whose memory, threads and files can be watched, signals, limits
set before exec, its own environment, the same folders across a restart).

    with LiveServer.start(tiny_dir, folder, "--queue-capacity", "4") as server:
        httpx.get(server.url("/healthz"))
        server.rss()  # bytes
        server.process.send_signal(signal.SIGTERM)
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
import psutil

ROOT = Path(__file__).resolve().parents[2]
START_S = 60  # start-up and warm-up; a few seconds normally
STOP_S = 40  # SIGTERM drains in-flight repairs for up to 30 s (--shutdown-timeout-s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    base: str
    port: int
    process: subprocess.Popen
    folder: Path
    log_path: Path  # the process's stdout and stderr
    ready_after_s: float = 0.0

    @property
    def psutil(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def url(self, path: str) -> str:
        return self.base + path

    def rss(self) -> int:
        return self.psutil.memory_info().rss

    def peak_rss(self) -> int:
        """The process's RSS high-water mark (VmHWM): catches an allocation that came and
        went between two readings. Linux only."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/PID/status")

    def settled_rss(self, readings: int = 5, interval_s: float = 0.02) -> int:
        """The lowest of a few readings: what the process holds, without a transient
        buffer that is being freed as the reading is taken."""
        values = []
        for _ in range(readings):
            values.append(self.rss())
            time.sleep(interval_s)
        return min(values)

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

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

    @classmethod
    @contextlib.contextmanager
    def start(cls, tiny_dir: Path, folder: Path, *flags: str, env: dict[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None, log_name: str = "server.log",
              port: int | None = None, app: Path = ROOT / "app.py") -> Iterator[LiveServer]:
        """Start app.py with the tiny model on the CPU, outputs, logs and the UI cache under
        `folder`; wait until /readyz answers 200; on the way out SIGTERM it, then SIGKILL it
        if it lingers. `env` adds to the caller's environment, from which LAMA_API_TOKEN and
        LAMA_AUTH are removed (secrets of the caller must not protect the server under test).
        `port`: a given one (a replica restarted where its load balancer expects it), else a free one.
        `app`: another checkout's app.py, for a tool that compares it with this one."""
        folder.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        environment = {key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")}
        environment.update(env or {})
        log_path = folder / log_name
        started = time.monotonic()
        command = [sys.executable, str(app), "--host", "127.0.0.1", "--port", str(port),
                   "--model", str(tiny_dir), "--device", "cpu", "--outputs-dir", str(folder / "outputs"),
                   "--logs-dir", str(folder / "logs"), "--ui-cache-dir", str(folder / "cache"), *flags]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=preexec_fn)
        server = cls(f"http://127.0.0.1:{port}", port, process, folder, log_path)
        try:
            deadline = started + START_S
            while True:
                if not server.alive():
                    raise AssertionError(f"app.py exited with {process.returncode}:\n{server.log_tail()}")
                try:
                    if httpx.get(server.url("/readyz"), timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"app.py not ready within {START_S} s:\n{server.log_tail()}")
                time.sleep(0.05)
            server.ready_after_s = time.monotonic() - started
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(15)
