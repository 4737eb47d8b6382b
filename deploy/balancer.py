"""deploy/haproxy.cfg run as it ships, in front of replicas on this box: the environment that
names the replicas and the binds, the command, and HAProxy's own view through its stats page.
The HAProxy tests (tests/live/test_haproxy.py) and the replicas benchmark (tools/replicas.py)
both run the balancer through this module, so they run the same thing.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

CONFIG = Path(__file__).resolve().with_name("haproxy.cfg")
MAX_REPLICAS = 8  # LAMA_REPLICA_1 .. LAMA_REPLICA_8 in haproxy.cfg
DEBIAN_PATH = "/usr/sbin/haproxy"  # not on a user's PATH on Debian


def replica_names(count: int) -> list[str]:
    """HAProxy's names for LAMA_REPLICA_1 .. count: r1, r2, ..."""
    return [f"r{index}" for index in range(1, count + 1)]


def haproxy_environment(replicas: Sequence[str], bind: str, stats_bind: str) -> dict[str, str]:
    """The variables haproxy.cfg reads: `replicas` are host:port, in the order of r1, r2, ..."""
    if not 1 <= len(replicas) <= MAX_REPLICAS:
        raise ValueError(f"haproxy.cfg names 1 to {MAX_REPLICAS} replicas, not {len(replicas)}")
    return {"LAMA_LB_BIND": bind, "LAMA_LB_STATS_BIND": stats_bind,
            **{f"LAMA_REPLICA_{index}": address for index, address in enumerate(replicas, 1)}}


def find_haproxy() -> str | None:
    path = shutil.which("haproxy") or DEBIAN_PATH
    return path if Path(path).exists() else None


def haproxy_command(binary: str) -> list[str]:
    """In the foreground (-db), logging to its output: the caller owns the process."""
    return [binary, "-db", "-f", str(CONFIG)]


@dataclass
class Balancer:
    url: str
    stats_url: str

    def stats(self, backend: str = "api") -> dict[str, dict[str, str]]:
        """HAProxy's stats rows of `backend`, by server name (and BACKEND for the whole)."""
        text = httpx.get(self.stats_url + "/;csv", timeout=5).text.lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == backend}

    def states(self, backend: str = "api") -> dict[str, str]:
        """HAProxy's view of each server of `backend`: UP, DOWN, "UP 1/2" (rising) ..."""
        return {name: row["status"] for name, row in self.stats(backend).items() if name != "BACKEND"}

    def sessions(self, backend: str = "api") -> dict[str, int]:
        """Requests HAProxy has sent each server of `backend` since it started (its total sessions)."""
        return {name: int(row["stot"] or 0) for name, row in self.stats(backend).items() if name != "BACKEND"}

    def resent(self) -> int:
        """Requests of the API's backend that HAProxy sent again (another try, another replica)."""
        row = self.stats()["BACKEND"]
        return int(row["wretr"] or 0) + int(row["wredis"] or 0)

    def wait_state(self, name: str, state: str, timeout_s: float, backend: str = "api") -> None:
        """Until HAProxy sees `name` in `state`; its stats page may not listen yet at first."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                seen: dict[str, str] | str = self.states(backend)
            except httpx.TransportError as error:
                seen = f"stats page not answering: {error}"
            if isinstance(seen, dict) and seen.get(name) == state:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy did not see {backend}/{name} {state} within {timeout_s:g} s (now {seen})")
            time.sleep(0.1)
