"""Where a command's CPU time goes, by the kind of process that spent it: the servers it starts,
the browsers, the CLI runs, the test processes themselves. Made for the test suite, whose length on
CI is set by how much CPU its processes need (the 2-core box is busy 89-97 % of a run):

    python tools/cpu_by_process.py -- ./start_app.sh --test

Runs the command, samples it and every process under it while it runs (psutil; every --interval
seconds), and prints, once it ends, each kind's processes and CPU seconds, then the machine's busy
CPU seconds over the same time (from /proc/stat) for comparison. Exits with the command's status.

A process is counted from its last sample, so what it spent in its last interval before exiting is
missed, and so may be a process that lived less than one interval (the table's sum against the
machine's busy time says how much that was). Prints, never asserts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

# Busy columns of /proc/stat's cpu line: user nice system idle iowait irq softirq steal.
_BUSY = (0, 1, 2, 5, 6, 7)


def kind_of(cmdline: list[str], name: str) -> str:
    """The kind a process is counted under, from its command line."""
    if not cmdline:
        return name or "?"
    program = Path(cmdline[0]).name
    args = cmdline[1:]
    if "chromium" in program:
        return "chromium"
    if program.startswith("python"):
        if args and Path(args[0]).name == "app.py":
            return "server: python app.py"
        if args[:1] == ["-m"] and len(args) > 1:
            return f"python -m {args[1]}"
        if args[:1] == ["-u"] and "exec(eval(sys.stdin.readline()))" in " ".join(args):
            return "pytest-xdist worker"
        script = next((arg for arg in args if arg.endswith(".py")), None)
        if script is not None:
            return f"python {'/'.join(Path(script).parts[-2:])}"
        return "python (other)"
    return program


def machine_busy_s() -> float:
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    return sum(int(fields[index]) for index in _BUSY) / os.sysconf("SC_CLK_TCK")


class Census:
    """Each process of a tree seen (by pid and start time): its kind and its CPU seconds at its
    last sample."""

    def __init__(self, root: psutil.Process):
        self.root = root
        self.seen: dict[tuple[int, float], tuple[str, float]] = {}

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in tree:
            try:
                with process.oneshot():
                    key, times, cmdline = (process.pid, process.create_time()), process.cpu_times(), process.cmdline()
                    # Read again at each sample: a forked child shows its parent's command line
                    # until it execs its own. An exiting process shows none: it keeps its kind.
                    known = self.seen.get(key)
                    kind = known[0] if known and not cmdline else kind_of(cmdline, process.name())
                    self.seen[key] = (kind, times.user + times.system)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue

    def by_kind(self) -> tuple[Counter[str], Counter[str]]:
        """CPU seconds and process counts per kind."""
        seconds: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for kind, cpu in self.seen.values():
            seconds[kind] += cpu
            counts[kind] += 1
        return seconds, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default: 0.5)")
    parser.add_argument("--top", type=int, default=20, help="kinds listed (default: 20)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is needed: -- COMMAND [ARGS...]")

    busy_before, wall_start = machine_busy_s(), time.perf_counter()
    child = subprocess.Popen(command)
    census = Census(psutil.Process(child.pid))
    while child.poll() is None:
        census.sample()
        time.sleep(args.interval)
    wall = time.perf_counter() - wall_start
    busy = machine_busy_s() - busy_before
    seconds, counts = census.by_kind()
    own = psutil.Process().cpu_times()

    counted, cores = sum(seconds.values()), os.cpu_count() or 1

    def share(cpu: float) -> str:
        return f"{cpu / counted:.0%}" if counted else "–"  # a command too short to be sampled counts nothing

    print(f"\n{shlex.join(command)}: exit {child.returncode}, {wall:.0f} s on {cores} cores")
    print("| processes of this kind | how many | CPU s | share |")
    print("|---|---|---|---|")
    for kind, cpu in seconds.most_common(args.top):
        print(f"| {kind} | {counts[kind]} | {cpu:.1f} | {share(cpu)} |")
    rest = seconds.most_common()[args.top:]
    if rest:
        rest_cpu = sum(cpu for _, cpu in rest)
        print(f"| {len(rest)} other kinds | {sum(counts[kind] for kind, _ in rest)} | {rest_cpu:.1f} | "
              f"{share(rest_cpu)} |")
    print(f"counted {counted:.0f} CPU s; the machine was busy {busy:.0f} CPU s of {wall * cores:.0f} "
          f"({busy / (wall * cores):.0%}); this sampler itself used {own.user + own.system:.0f} s")
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
