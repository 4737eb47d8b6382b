"""A live server's start-up line (service/startup.py) has every milestone in order and agrees with
its start as a client sees it."""

from __future__ import annotations

import re
import time

from support.liveserver import LiveServer


def test_a_live_server_logs_its_start_up_as_a_client_saw_it(tmp_path, tiny_dir):
    with LiveServer.start(tiny_dir, tmp_path) as server:
        seen_ready_after_s = server.ready_after_s
        deadline = time.monotonic() + 10
        while "start-up: " not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in server.output().splitlines() if "start-up: " in line)
    ready = float(re.search(r"ready (\d+\.\d) s after the process started", line).group(1))
    # Marked just before /readyz could answer 200: no later than the client saw it (which started
    # counting before it spawned the process), but for the line's rounding to a tenth of a second
    # and the kernel's 10-ms clock ticks. (Counted from psutil's start time, it read up to a second late.)
    assert 0 < ready <= seen_ready_after_s + 0.1, (line, seen_ready_after_s)
    steps = re.findall(r"(\w[\w ]*?) at (\d+\.\d) s", line)
    names = [name for name, _ in steps]
    at = {name: float(seconds) for name, seconds in steps}
    assert set(names) == {"torch imported", "model loaded", "Gradio imported", "app built", "serving", "warmed up"}
    assert at["torch imported"] <= at["model loaded"] <= at["app built"]
    assert at["Gradio imported"] <= at["app built"] <= at["serving"] <= at["warmed up"] <= ready
