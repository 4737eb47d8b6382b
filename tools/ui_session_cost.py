"""What the server keeps for each page session of the UI, and for how many of them.

    python tools/ui_session_cost.py                         # app.py with the tiny checkpoint on the CPU
    python tools/ui_session_cost.py --sessions 2000 --step 250
    python tools/ui_session_cost.py --checkout /tmp/old     # another checkout's app.py, for a before and after

Every page opened in a browser is a Gradio session, and Gradio keeps a copy of the page's
components for each session that sent an event. Through the editor's server path as the page
speaks it (tools/ui_bench.py --client stream: both files uploaded, the queue joined, its event
stream read), a small repair is first made `--step` times in one session (what a repair itself
leaves), then once in each of `--sessions` new sessions; printed: the server's RSS after each
`--step` of them, and its growth per session since the line before. Growth that stops once the
server keeps as many sessions as it will (webui/ui.py's UI_SESSIONS) is the bound.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' launcher of app.py
sys.path.insert(0, str(ROOT / "tools"))
from support.liveserver import LiveServer  # noqa: E402
from support.paths import tiny_model  # noqa: E402
from ui_bench import QueueStreamPath, connect_gradio, write_case  # noqa: E402

SETTLE_S = 1.0  # for the server's threads to let go of a batch's last buffers before RSS is read


def repair_batch(path: QueueStreamPath, server: psutil.Process, repairs: int, new_sessions: bool) -> int:
    """The server's RSS, settled, after `repairs` repairs (each in a session of its own, or in
    the path's session)."""
    for _ in range(repairs):
        if new_sessions:
            path.session = uuid.uuid4().hex
        path.repair()
    time.sleep(SETTLE_S)
    return server.memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="new sessions in all, one repair each")
    parser.add_argument("--step", type=int, default=250, help="sessions between two readings")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose app.py is measured (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        photo, mask = write_case(Path(folder), 64, 48)
        with LiveServer.start(tiny_model(), Path(folder) / "server", app=args.checkout / "app.py") as server:
            path = QueueStreamPath(connect_gradio(server.url(""), None), server.url(""), photo, mask)
            path.session = "one-page"
            before = repair_batch(path, server.psutil, 20, new_sessions=False)  # warm-up
            print(f"server {server.url('')} ({args.checkout / 'app.py'}) · a 64×48 repair through the editor's server path")
            print(f"{'sessions':>9} {'server RSS':>11} {'growth per repair':>18}")
            rss = repair_batch(path, server.psutil, args.step, new_sessions=False)
            print(f"{1:>9} {rss / 2**20:>8.0f} MB {(rss - before) / args.step / 1024:>15.1f} kB"
                  f"   ({args.step} repairs in one session)")
            for done in range(args.step, args.sessions + 1, args.step):
                before, rss = rss, repair_batch(path, server.psutil, args.step, new_sessions=True)
                print(f"{done + 1:>9} {rss / 2**20:>8.0f} MB {(rss - before) / args.step / 1024:>15.1f} kB")


if __name__ == "__main__":
    main()
