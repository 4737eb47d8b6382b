"""Who holds the GIL while the server is under load, or where its threads spend their time:
py-spy's samples, summed per function.

    py-spy record --gil --format raw -r 100 -d 8 -p PID -o gil.raw   # samples only while a thread holds the GIL
    python tools/gil_profile.py gil.raw --seconds 8 --rate 100
    py-spy record --threads --format raw -r 100 -d 8 -p PID -o profile.raw   # every running thread
    python tools/gil_profile.py profile.raw --seconds 8 --rate 100 --held-by profile

    py-spy record --threads --idle --format raw -r 200 -p PID -o start.raw   # every thread, waiting or not
    python tools/gil_profile.py start.raw --seconds 10 --rate 200 --held-by profile --by-thread 8

`bash tools/gpu_soak.sh OUT gil` runs the first two on the GPU box against the real server with 16
clients, `bash tools/gpu_soak.sh OUT profile` the last two with one client at 2560×1920, and
`bash tools/gpu_soak.sh OUT startup-profile` samples a restart from its first moment to /readyz,
thread by thread.
Prints the share of the time some thread held the GIL (samples / (seconds × rate); with --threads,
how many threads ran on average) and the
functions that held it most, by their own samples and with their callees (py-spy's raw format:
one line per distinct stack, frames separated by ';', the sample count last). With --by-thread,
also each thread's samples and the functions it spent them in (py-spy --threads writes the thread
first in each stack; with --gil, that is which thread held the GIL and doing what).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


def stacks(raw: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw lines as (frames, outermost first; samples); lines of no stack left out."""
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def profile(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, own samples per frame, samples per frame with its callees)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, samples in stacks(raw):
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, own, inclusive


THREAD_FRAME = "thread ("  # how py-spy --threads begins a stack: "thread (27096): MainThread"


def by_thread(raw: str) -> dict[str, tuple[int, Counter[str]]]:
    """Per thread (its first frame), its samples and its samples per frame with the callees,
    largest first; stacks that name no thread (py-spy without --threads) are left out. py-spy
    names a thread once Python's threading knows it: a thread's samples from before that count
    under its name where one thread of that id has one (ids are reused once a thread ends)."""
    threads: dict[str, tuple[int, Counter[str]]] = {}
    for frames, count in stacks(raw):
        if not frames[0].startswith(THREAD_FRAME):
            continue
        samples, inclusive = threads.get(frames[0], (0, Counter()))
        for frame in set(frames[1:]):
            inclusive[frame] += count
        threads[frames[0]] = (samples + count, inclusive)
    for unnamed in [thread for thread in threads if ":" not in thread]:
        named = [thread for thread in threads if thread.startswith(unnamed + ":")]
        if len(named) == 1:
            samples, inclusive = threads.pop(unnamed)
            threads[named[0]] = (threads[named[0]][0] + samples, threads[named[0]][1] + inclusive)
    return dict(sorted(threads.items(), key=lambda item: -item[1][0]))


def thread_report(raw: str, rate: float, top: int) -> str:
    """Each thread's seconds (samples / rate) and where it spent them, for the `top` functions."""
    lines = []
    for thread, (samples, inclusive) in by_thread(raw).items():
        lines += ["", f"{thread}: {samples} samples, {samples / rate:.2f} s", "", "| samples | s | function (file:line) |",
                  "|---|---|---|"]
        lines += [f"| {count} | {count / rate:.2f} | {frame} |" for frame, count in inclusive.most_common(top)]
    return "\n".join(lines)


def report(raw: str, seconds: float, rate: float, top: int = 25, sampled: str = "gil") -> str:
    total, own, inclusive = profile(raw)
    if sampled == "gil":
        first = f"{total} samples with the GIL held in {seconds:g} s at {rate:g} Hz: " \
                f"some thread held it {total / (seconds * rate):.0%} of the time"
    else:  # py-spy --threads: every running thread's samples, the thread (id and name) their first frame
        first = f"{total} samples of running threads in {seconds:g} s at {rate:g} Hz: " \
                f"{total / (seconds * rate):.2f} threads running on average"
    lines = [first]
    for title, counts in (("own samples", own), ("with callees", inclusive)):
        lines += ["", f"| {title} | share | function (file:line) |", "|---|---|---|"]
        lines += [f"| {count} | {count / max(total, 1):.0%} | {frame} |" for frame, count in counts.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--seconds", type=float, required=True, help="py-spy's --duration")
    parser.add_argument("--rate", type=float, default=100, help="py-spy's --rate")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--held-by", choices=("gil", "profile"), default="gil",
                        help="gil: samples taken with py-spy --gil; profile: with --threads (every running thread)")
    parser.add_argument("--by-thread", type=int, default=0, metavar="N",
                        help="also each thread's seconds and its N functions with the most samples")
    args = parser.parse_args()
    raw = args.raw.read_text()
    print(report(raw, args.seconds, args.rate, args.top, args.held_by))
    if args.by_thread:
        print(thread_report(raw, args.rate, args.by_thread))


if __name__ == "__main__":
    main()
