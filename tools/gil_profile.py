"""Who holds the GIL while the server is under load, or where its threads spend their time:
py-spy's samples, summed per function.

    py-spy record --gil --format raw -r 100 -d 8 -p PID -o gil.raw   # samples only while a thread holds the GIL
    python tools/gil_profile.py gil.raw --seconds 8 --rate 100
    py-spy record --threads --format raw -r 100 -d 8 -p PID -o profile.raw   # every running thread
    python tools/gil_profile.py profile.raw --seconds 8 --rate 100 --held-by profile

`bash tools/gpu_soak.sh OUT gil` runs the first two on the GPU box against the real server with 16
clients, `bash tools/gpu_soak.sh OUT profile` the last two with one client at 2560×1920.
Prints the share of the time some thread held the GIL (samples / (seconds × rate); with --threads,
how many threads ran on average) and the
functions that held it most, by their own samples and with their callees (py-spy's raw format:
one line per distinct stack, frames separated by ';', the sample count last).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def profile(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, own samples per frame, samples per frame with its callees)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, own, inclusive


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
    args = parser.parse_args()
    print(report(args.raw.read_text(), args.seconds, args.rate, args.top, args.held_by))


if __name__ == "__main__":
    main()
