"""How long the server's start spends importing Gradio, as Gradio imports itself, as the server
imports it (webui.gradio_import: without rewriting the components' type stubs or rendering their
event listeners' docstrings), and as the server did with the docstrings rendered:

    python tools/import_times.py [--runs N]

Each import in a fresh Python process (what a start pays), the ways taking turns; prints the
median, the fastest and the slowest of each in seconds, and each one's ratio to Gradio's own. torch
is imported first in every process, as the server has done by then (its import is not in the
figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAYS = {
    "import gradio": "import gradio",
    "webui.gradio_import": "from webui.gradio_import import import_gradio; import_gradio()",
    "webui.gradio_import, listeners' docstrings rendered": (
        "from webui import gradio_import; gradio_import.AFTER_IMPORT.pop(gradio_import.EVENTS_MODULE); "
        "gradio_import.import_gradio()"),
}
PROBE = """
import json, sys, time
import torch
started = time.perf_counter()
{statement}
print(json.dumps(time.perf_counter() - started))
"""


def seconds(statement: str) -> float:
    """One fresh process's time for `statement`."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(statement=statement)], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.runs):
        for way, statement in WAYS.items():
            samples[way].append(seconds(statement))
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.runs} fresh processes each, "
          "taking turns; seconds")
    print("| import | median | fastest | slowest |")
    print("|---|---|---|---|")
    for way, values in samples.items():
        print(f"| {way} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    plain, *others = (statistics.median(samples[way]) for way in WAYS)
    for way, median in zip(list(WAYS)[1:], others):
        print(f"{way} takes {median / plain:.2f}× the time of import gradio ({plain - median:.2f} s less)")


if __name__ == "__main__":
    main()
