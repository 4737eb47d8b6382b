"""Where a server's start went: the seconds from the process's start to each milestone the
composition root and the warm-up mark, logged in one line once the server is ready.

/readyz is answered from the same moment, so the line's last figure is what a readiness probe
waits (its initial delay is set from it), and the ones before say which step a slow start spent
its time in: on a GPU box the start is one interpreter's work from torch's import to the warm-up
(docs/BENCHMARKS.md), and which step grew differs from start to start.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil


def process_age_s() -> float:
    """Seconds since this process started. On Linux from the kernel's clock ticks since boot
    (/proc/self/stat and /proc/uptime, 10 ms steps): psutil's start time adds the boot time,
    which the kernel gives in whole seconds, and was up to a second early."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return time.time() - psutil.Process().create_time()


class StartupTimeline:
    def __init__(self, started_at: float | None = None):
        """`started_at`: when the process started, on time.monotonic()'s clock (process_age_s's
        reading by default)."""
        self.started_at = time.monotonic() - process_age_s() if started_at is None else started_at
        self._marks: list[tuple[float, str]] = []
        self._lock = threading.Lock()  # the model loads, the app is built and warmed up on three threads

    def mark(self, milestone: str) -> float:
        """Records `milestone` as reached now; returns its seconds since the process started."""
        seconds = time.monotonic() - self.started_at
        with self._lock:
            self._marks.append((seconds, milestone))
        return seconds

    def milestones(self) -> list[tuple[float, str]]:
        """(seconds since the process started, milestone), in the order they were reached."""
        with self._lock:
            return sorted(self._marks)

    def summary(self, ready: str = "ready") -> str:
        """'ready 9.2 s after the process started (torch imported at 3.1 s, …)': `ready` marked now,
        the milestones before it in the order they were reached."""
        seconds = self.mark(ready)
        steps = ", ".join(f"{milestone} at {at:.1f} s" for at, milestone in self.milestones() if milestone != ready)
        return f"{ready} {seconds:.1f} s after the process started" + (f" ({steps})" if steps else "")
