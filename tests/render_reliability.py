"""docs/RELIABILITY.md from the figures the reliability tests measured (tests/support/reliability.py).

    python tests/render_reliability.py --run                  # run the suite, write docs/RELIABILITY.md
    python tests/render_reliability.py --run tests/live/test_load.py tests/live/test_soak.py  # only these
    python tests/render_reliability.py --json FIGURES.jsonl   # render figures recorded earlier

With --run, pytest runs with LAMA_RELIABILITY_JSON pointing at a fresh file, and the table is
written only if every test passed: figures from a failing run are not published. Rows are
grouped by the part of the case before ":" (Load, Soak, Malformed input, Faults, Security,
then any other), in the order the tests recorded them; when a figure was recorded more than
once, the last recording wins.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "RELIABILITY.md"
GROUPS = ("Load", "Soak", "Malformed input", "Faults", "Security")

INTRO = """\
# Reliability: measured

Each row is a figure a test in `tests/` measured and asserted, on the CPU with the tiny
fixture checkpoint (what CI runs). The table is generated, not typed:

    python tests/render_reliability.py --run

runs the suite with `LAMA_RELIABILITY_JSON` set (each test appends what it measured through
`tests/support/reliability.py`) and rewrites this file only if every test passed. *Bound* is what
the test asserts; *Measured* is this run's value.
"""


def load(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise SystemExit(f"error: {path}:{number}: not JSON: {error}") from None
    return records


def group_of(case: str) -> str:
    head = case.split(":", 1)[0].strip()
    return head if ":" in case else "Other"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(records: list[dict], run_info: str | None = None) -> str:
    # Last recording of each (case, figure) wins, at the place of its first appearance.
    rows: dict[tuple[str, str], dict] = {}
    for record in records:
        key = (record["case"], record["figure"])
        if key in rows:
            rows[key].update(record)
        else:
            rows[key] = dict(record)
    groups: dict[str, list[dict]] = {}
    for row in rows.values():
        groups.setdefault(group_of(row["case"]), []).append(row)
    order = [g for g in GROUPS if g in groups] + sorted(g for g in groups if g not in GROUPS)

    lines = [INTRO]
    if run_info:
        lines += [run_info, ""]
    for group in order:
        lines += [f"## {group}", "", "| Case | Figure | Measured | Bound | Test |", "|---|---|---|---|---|"]
        previous_case = None
        for row in groups[group]:
            case = row["case"].split(":", 1)[1].strip() if ":" in row["case"] else row["case"]
            test = row.get("test") or ""
            lines.append(f"| {cell(case) if case != previous_case else ''} | {cell(row['figure'])} | "
                         f"{cell(row['measured'])} | {cell(row['bound'])} | "
                         f"{'`' + cell(test) + '`' if test else ''} |")
            previous_case = case
        lines.append("")
    return "\n".join(lines)


def describe_run() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cores = os.cpu_count()
    return (f"Run of {datetime.date.today():%Y-%m-%d} at commit `{commit}` (plus the working tree), "
            f"{platform.system()} {platform.machine()}, {cores} CPU cores, Python {platform.python_version()}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", nargs="*", metavar="PYTEST_ARG",
                        help="run pytest (on tests/ unless arguments are given) and render what it records")
    source.add_argument("--json", type=Path, help="render a file of recorded figures")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (- for stdout)")
    args = parser.parse_args(argv)

    if args.json is not None:
        records, info = load(args.json), None
    else:
        with tempfile.TemporaryDirectory() as folder:
            figures = Path(folder) / "figures.jsonl"
            env = {**os.environ, "LAMA_RELIABILITY_JSON": str(figures)}
            command = [sys.executable, "-m", "pytest", "-q", *(args.run or ["tests"])]
            print("running:", " ".join(command), file=sys.stderr)
            status = subprocess.run(command, cwd=ROOT, env=env).returncode
            if status != 0:
                print(f"error: pytest exited with {status}; {args.out} left as it was", file=sys.stderr)
                return status
            records = load(figures) if figures.exists() else []
        info = describe_run()
    if not records:
        print("error: no figures were recorded", file=sys.stderr)
        return 1
    text = render(records, info)
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"wrote {len(records)} figures to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
