"""Where the test suite's CPU time goes, test file by test file: a pytest plugin that records each
test's CPU seconds, then the table of the files that spent the most.

    PYTHONPATH=tools python -m pytest -p cpu_per_test --cpu-per-test RUN.jsonl [PYTEST ARGS...]
    python tools/cpu_per_test.py RUN.jsonl [--against BEFORE.jsonl] [--top N]

Each test (setup, call and teardown) appends one line to RUN.jsonl: its id, the CPU seconds of
the pytest process that ran it (`self`, each xdist worker its own) and of the processes it started
and waited for (`children`: servers, browsers, CLI runs, getrusage's count), and its wall seconds.
A child is counted when it is waited for, so a module's server falls on the test whose teardown
stops it: a file's sum is right, a test's alone may not be. `--against` puts another run's figures
beside each file (the same suite before a change, on the same box). tools/cpu_by_process.py counts
the same time by the kind of process instead. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    parser.addoption("--cpu-per-test", metavar="JSONL", help="append each test's CPU seconds to this file")


def _cpu_s() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = item.config.getoption("--cpu-per-test")
    if not path:
        yield
        return
    (own, children), wall = _cpu_s(), time.perf_counter()
    yield
    (own_after, children_after), wall = _cpu_s(), time.perf_counter() - wall
    # One short line in one write to a file opened for appending: the xdist workers' lines do not mix.
    with open(path, "a") as out:
        out.write(json.dumps({"id": item.nodeid, "self": round(own_after - own, 3),
                              "children": round(children_after - children, 3), "wall": round(wall, 3)}) + "\n")


def by_file(path: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """CPU seconds (the pytest process's and its children's), the children's alone, and wall
    seconds, per test file."""
    cpu, children, wall = Counter(), Counter(), Counter()
    for line in path.read_text().splitlines():
        test = json.loads(line)
        name = test["id"].split("::")[0]
        cpu[name] += test["self"] + test["children"]
        children[name] += test["children"]
        wall[name] += test["wall"]
    return cpu, children, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the file --cpu-per-test wrote")
    parser.add_argument("--against", type=Path, help="another run's file, shown beside it")
    parser.add_argument("--top", type=int, default=25, help="files listed (default: 25)")
    args = parser.parse_args(argv)
    cpu, children, wall = by_file(args.run)
    before = by_file(args.against) if args.against else None
    files = f"{len(cpu)} test file" + ("s" if len(cpu) != 1 else "")
    print(f"{sum(cpu.values()):.0f} CPU s in {files} ({sum(children.values()):.0f} of them in processes "
          f"the tests started), {sum(wall.values()):.0f} s of tests' wall time"
          + (f"; before: {sum(before[0].values()):.0f} CPU s, {sum(before[2].values()):.0f} s" if before else ""))
    print("| test file | CPU s | of which started processes | wall s |" + (" CPU s before | wall s before |" if before else ""))
    print("|---|---|---|---|" + ("---|---|" if before else ""))
    for name, seconds in cpu.most_common(args.top):
        row = f"| {name} | {seconds:.1f} | {children[name]:.1f} | {wall[name]:.1f} |"
        if before:
            row += f" {before[0][name]:.1f} | {before[2][name]:.1f} |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
