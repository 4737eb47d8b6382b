"""`python app.py` as a subprocess on 127.0.0.1, for the tests that need a real server
(real HTTP, a real process whose memory, threads and files can be watched).

    with LiveServer.start(tiny_dir, folder, "--queue-capacity", "4") as server:
        httpx.get(server.url("/healthz"))
        server.rss()  # bytes
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
START_S = 60  # start-up and warm-up; a few seconds normally


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    base: str
    process: subprocess.Popen
    folder: Path
    log_path: Path

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

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    @classmethod
    @contextlib.contextmanager
    def start(cls, tiny_dir: Path, folder: Path, *flags: str, env: dict[str, str] | None = None
              ) -> Iterator[LiveServer]:
        """Start app.py with the tiny model on the CPU, outputs and logs under `folder`
        (`env`: variables to add to its environment); wait until /readyz answers 200;
        terminate it (then kill) on the way out."""
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        # Secrets in the caller's environment must not protect the server under test.
        env = {**{key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")},
               **(env or {})}
        log_path = folder / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                 "--model", str(tiny_dir), "--device", "cpu", "--outputs-dir", str(folder / "outputs"),
                 "--logs-dir", str(folder / "logs"), *flags],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = cls(f"http://127.0.0.1:{port}", process, folder, log_path)
        try:
            deadline = time.monotonic() + START_S
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
            yield server
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
