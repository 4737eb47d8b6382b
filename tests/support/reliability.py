"""Figures the reliability tests measure, for docs/RELIABILITY.md.

A test calls `record(case, figure, measured, bound)` next to the assertion that checks the
figure; when the environment names a file in LAMA_RELIABILITY_JSON, one JSON line
{"case", "figure", "measured", "bound", "test", "ts"} is appended to it (nothing happens
otherwise). `python tests/render_reliability.py FILE` turns the lines into the table:

    LAMA_RELIABILITY_JSON=/tmp/rel.jsonl pytest tests/live/test_load.py tests/live/test_soak.py ...
    python tests/render_reliability.py /tmp/rel.jsonl > docs/RELIABILITY.md

Lines are appended with one write each (O_APPEND), so xdist workers and several test
processes can share the file.
"""

from __future__ import annotations

import json
import os
import time

ENV = "LAMA_RELIABILITY_JSON"


def record(case: str, figure: str, measured: str, bound: str, test: str | None = None) -> None:
    """Note one measured figure: `case` is the row's name, its group before the colon
    ("Load: burst of 24 simultaneous requests"), `figure` what was measured ("answered
    200"), `measured` the value as people read it ("24 / 24"), `bound` what the test
    asserts ("all 24"). `test` names the test; by default the one running now."""
    path = os.environ.get(ENV)
    if not path:
        return
    if test is None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    line = json.dumps({"case": case, "figure": figure, "measured": str(measured), "bound": str(bound),
                       "test": test, "ts": time.time()}, ensure_ascii=False)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
