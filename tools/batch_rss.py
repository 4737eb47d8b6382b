"""The server's RSS over batches of repairs sent through one of its paths, and at rest once its
sweep has run:

    python tools/batch_rss.py [--via jobs|api|ui] [--rounds 3] [--jobs 64] [--size 1280x960]
                              [--model DIR] [--checkout DIR]

Starts app.py (the tiny test checkpoint on the CPU by default, with the tests' launcher), sends
--rounds batches of --jobs repairs of the load benchmark's photo-like JPEG and stroke mask, and
prints the server's RSS at rest before them, after each batch, and after the outputs sweep that
hands the heap's free pages back (every 60 s). The batches go
- with --via jobs (the default): as a script's batch of jobs (python -m loadreport jobs: all
  submitted, then each polled and fetched), which keeps the queue's pending places full of
  decoded uploads while it runs;
- with --via api: as direct repairs (POST /api/v1/inpaint) from four clients at once
  (python -m loadreport load --clients 4 --requests N);
- with --via ui: through the editor's server path, one after another (gradio_client's
  /repair, as tools/ui_bench.py --client gradio sends it: Gradio's queue, the UI's upload
  folder and cache).
A server that lets go of a finished repair comes back to about where it started, one that keeps
something of every repair grows with each round, at rest too. `--checkout DIR`: run another
checkout's app.py (e.g. `git worktree add DIR <commit>`), to compare it with this one in the same
conditions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The tests' helpers (one launcher of app.py, where the test fixtures are) and tools/ui_bench.py.
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
from lama.bench import source_commit  # noqa: E402
from support.liveserver import LiveServer  # noqa: E402
from support.paths import tiny_model  # noqa: E402

MB = 2**20
SWEEP_WAIT_S = 70  # the outputs sweep runs every 60 s (service.storage.Retention)
API_CLIENTS = 4


def loadreport(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "loadreport", *arguments], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ui_sender(url: str, size: str, folder: Path):
    """Sends one batch of repairs through the editor's server path (gradio_client's /repair)."""
    from loadreport import images
    from ui_bench import GradioClientPath, connect_gradio

    width, height = (int(side) for side in size.split("x"))
    photo, mask = folder / "photo.jpg", folder / "mask.png"
    photo.write_bytes(images.jpeg(images.photo(width, height, 1)))
    mask.write_bytes(images.png(images.stroke_mask(width, height, 0.08, 1)))
    path = GradioClientPath(connect_gradio(url, None), url, photo, mask)

    def send(count: int) -> None:
        for _ in range(count):
            path.repair()

    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--via", choices=("jobs", "api", "ui"), default="jobs", help="the path the repairs take")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=64, help="repairs per batch")
    parser.add_argument("--size", default="1280x960")
    parser.add_argument("--model", type=Path, default=tiny_model())
    parser.add_argument("--checkout", type=Path, help="another checkout whose app.py runs (default: this one)")
    args = parser.parse_args()
    commit = source_commit(args.checkout)
    with tempfile.TemporaryDirectory() as folder, \
            LiveServer.start(args.model, Path(folder), app=(args.checkout or ROOT) / "app.py") as server:
        if args.via == "jobs":
            def send(count: int) -> None:
                loadreport("jobs", "--url", server.base, "--sizes", args.size, "--jobs", str(count))
        elif args.via == "api":
            def send(count: int) -> None:
                loadreport("load", "--url", server.base, "--sizes", args.size, "--clients", str(API_CLIENTS),
                           "--requests", str(count), "--settings", "default", "--warmup", "0")
        else:
            send = ui_sender(server.base, args.size, Path(folder))
        rows = [("at rest after /readyz", server.settled_rss())]
        for round_ in range(1, args.rounds + 1):
            send(args.jobs)
            rows.append((f"after batch {round_}", server.settled_rss()))
        time.sleep(SWEEP_WAIT_S)
        rows.append((f"{SWEEP_WAIT_S} s later, at rest", server.settled_rss()))
    print(f"app.py at commit {commit}; {args.rounds} batches of {args.jobs} repairs at {args.size} via {args.via} "
          f"(model {args.model.name}, CPU)")
    print("| server RSS | MB |")
    print("|---|---|")
    for label, rss in rows:
        print(f"| {label} | {rss / MB:.0f} |")


if __name__ == "__main__":
    main()
