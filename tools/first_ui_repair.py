"""The page's first repair after the server's start against its next ones, in Chromium:

    python tools/first_ui_repair.py [--variants base,matplotlib-switch] [--starts 3] [--repairs 4]
                                    [--size 1280x960] [--port 7871] [-- app.py flags...]

Each start is `python tools/pipeline_probe.py serve VARIANT` with the app.py flags given (by default
the tiny test checkpoint on the CPU), up to /readyz (tools/readyz_times.py's launcher); then a page
of Debian's Chromium, in a browser context of its own (nothing cached from an earlier start), opens
a JPEG photo and repairs it --repairs times with the same mask, each timed from the click to the
result on screen as the page itself shows it (tools/ui_bench.py's PagePath). Prints, per start, the
first repair's wait and the median of the others, both with the page's own split, and the server's
RSS after them; then each variant's medians. The variants take turns, in reverse order every other
round, so that a drift of the machine falls on all alike. The figures belong to the machine they
ran on and are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
# The tests' helpers (Chromium as the browser tests start it, the fixtures) and the other tools.
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
from readyz_times import serving  # noqa: E402
from ui_bench import PagePath, write_case  # noqa: E402  (before OpenCV's import: lama sets its caps)
from support.browser import chromium  # noqa: E402, I001
from support.paths import tiny_model  # noqa: E402

MB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="base,matplotlib-switch", help="tools/pipeline_probe.py's, comma-separated")
    parser.add_argument("--starts", type=int, default=3, help="starts of each variant")
    parser.add_argument("--repairs", type=int, default=4, help="repairs from one page after each start (at least 2)")
    parser.add_argument("--size", default="1280x960", help="the photo's, WxH")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("flags", nargs="*", help="app.py's flags (after --)")
    args = parser.parse_args()
    if args.repairs < 2:
        parser.error("--repairs must be at least 2: the first and the next ones")
    variants = args.variants.split(",")
    flags = args.flags or ["--device", "cpu", "--model", str(tiny_model())]
    width, height = (int(side) for side in args.size.split("x"))
    firsts: dict[str, list[float]] = {variant: [] for variant in variants}
    nexts: dict[str, list[float]] = {variant: [] for variant in variants}
    print(f"{os.cpu_count()} cores; app.py {' '.join(flags)}; a {width}×{height} JPEG, {args.repairs} repairs "
          f"from one page after each of {args.starts} starts of each variant, taking turns", flush=True)
    with tempfile.TemporaryDirectory(prefix="first-ui-repair-") as temporary, chromium() as browser:
        photo, mask = write_case(Path(temporary), width, height)
        for round_ in range(args.starts):
            for variant in variants if round_ % 2 == 0 else variants[::-1]:
                folder = Path(temporary) / f"{variant}-{round_}"
                folder.mkdir()
                with serving(variant, flags, args.port, folder) as (server, _):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    page.set_default_timeout(120_000)
                    path = PagePath(page, f"http://127.0.0.1:{args.port}", photo, mask)
                    waits, lines = [], []
                    for _ in range(args.repairs):
                        waits.append(path.repair()[0])
                        lines.append(path.line)
                    rss = psutil.Process(server.pid).memory_info().rss
                    context.close()
                firsts[variant].append(waits[0])
                nexts[variant].append(statistics.median(waits[1:]))
                print(f"{variant}: first {lines[0]!r}; next ones {nexts[variant][-1]:.2f} s (last: {lines[-1]!r}); "
                      f"server RSS after them {rss / MB:.0f} MB", flush=True)
    print("| variant | first repair, s (median) | next ones, s (median) | first / next |")
    print("|---|---|---|---|")
    for variant in variants:
        first, following = statistics.median(firsts[variant]), statistics.median(nexts[variant])
        print(f"| {variant} | {first:.2f} | {following:.2f} | {first / following:.2f} |")


if __name__ == "__main__":
    main()
