"""service/startup.py: the start-up's milestones, from the process's start, in the line the
warm-up logs once the server is ready (a live server's line: tests/live/test_startup_line.py)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

from lama.engine import InpaintEngine
from service.startup import StartupTimeline
from service.warmup import WarmUp
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
