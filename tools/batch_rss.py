"""The server's RSS over batches of jobs, and at rest once its sweep has run:

    python tools/batch_rss.py [--rounds 3] [--jobs 64] [--size 1280x960] [--model DIR] [--checkout DIR]

Starts app.py (the tiny test checkpoint on the CPU by default, with the tests' launcher), sends
--rounds batches of --jobs jobs (python -m loadreport jobs: all submitted, then each polled and
fetched), and prints the server's RSS at rest before them, after each batch, and after the
outputs sweep that hands the heap's free pages back (every 60 s). Each batch keeps the queue's
pending places full of decoded uploads while it runs; a server that lets go of a finished job's
upload comes back to about where it started, one that keeps something of every job grows with
each round, at rest too. `--checkout DIR`: run another checkout's app.py (e.g. `git worktree add
DIR <commit>`), to compare it with this one in the same conditions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The tests' helpers: one launcher of app.py, and where the test fixtures are.
sys.path.insert(0, str(ROOT / "tests"))
from lama.bench import source_commit  # noqa: E402
from support.liveserver import LiveServer  # noqa: E402
from support.paths import tiny_model  # noqa: E402

MB = 2**20
SWEEP_WAIT_S = 70  # the outputs sweep runs every 60 s (service.storage.Retention)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--size", default="1280x960")
    parser.add_argument("--model", type=Path, default=tiny_model())
    parser.add_argument("--checkout", type=Path, help="another checkout whose app.py runs (default: this one)")
    args = parser.parse_args()
    commit = source_commit(args.checkout)
    with tempfile.TemporaryDirectory() as folder, \
            LiveServer.start(args.model, Path(folder), app=(args.checkout or ROOT) / "app.py") as server:
        rows = [("at rest after /readyz", server.settled_rss())]
        for round_ in range(1, args.rounds + 1):
            subprocess.run([sys.executable, "-m", "loadreport", "jobs", "--url", server.base, "--sizes", args.size,
                            "--jobs", str(args.jobs)], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows.append((f"after batch {round_}", server.settled_rss()))
        time.sleep(SWEEP_WAIT_S)
        rows.append((f"{SWEEP_WAIT_S} s later, at rest", server.settled_rss()))
    print(f"app.py at commit {commit}; {args.rounds} batches of {args.jobs} jobs at {args.size} "
          f"(model {args.model.name}, CPU)")
    print("| server RSS | MB |")
    print("|---|---|")
    for label, rss in rows:
        print(f"| {label} | {rss / MB:.0f} |")


if __name__ == "__main__":
    main()
