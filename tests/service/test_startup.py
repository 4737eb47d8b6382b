"""service/startup.py: the start-up's milestones, from the process's start, in the line the
warm-up logs once the server is ready; and a live server's line agrees with its start as a
client sees it."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

from lama.engine import InpaintEngine
from service.startup import StartupTimeline
from service.warmup import WarmUp
from support.liveserver import LiveServer
from support.paths import ROOT
from support.service import repair_service


def test_a_process_s_age_is_counted_from_its_own_start():
    before = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3); "
                           "from service.startup import process_age_s; print(process_age_s())"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    lifetime = time.monotonic() - before
    assert done.returncode == 0, done.stderr
    assert 0.3 <= float(done.stdout) <= lifetime


def test_the_summary_lists_the_milestones_in_the_order_they_were_reached():
    timeline = StartupTimeline(started_at=time.monotonic() - 2.0)
    timeline.mark("model loaded")
    timeline.mark("Gradio imported")
    summary = timeline.summary()
    match = re.fullmatch(r"ready (\d+\.\d) s after the process started "
                         r"\(model loaded at (\d+\.\d) s, Gradio imported at (\d+\.\d) s\)", summary)
    assert match, summary
    ready, loaded, imported = map(float, match.groups())
    assert 2.0 <= loaded <= imported <= ready < 60


def test_the_warm_up_logs_the_start_up_once_the_service_is_ready(tmp_path, tiny_dir, caplog):
    caplog.set_level(logging.INFO)
    timeline = StartupTimeline(started_at=time.monotonic() - 5.0)
    timeline.mark("app built")
    engine = InpaintEngine(tiny_dir, device="cpu")
    with repair_service(engine, tmp_path) as service:
        warm_up = WarmUp(engine, service.queue, service, "balanced", timeline=timeline)
        warm_up.start()
        warm_up.stop()
        assert service.warm
    line = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("start-up: "))
    assert re.fullmatch(r"start-up: ready \d+\.\d s after the process started \(app built at \d+\.\d s, "
                        r"serving at \d+\.\d s, warmed up at \d+\.\d s\)", line), line
    messages = [record.getMessage() for record in caplog.records]
    assert messages.index(line) > next(i for i, m in enumerate(messages) if m.startswith("warm: ready to serve"))


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
