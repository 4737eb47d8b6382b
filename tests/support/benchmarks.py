"""The load benchmarks' commands (`python -m loadreport load|jobs`) as a user runs them, and their tables."""

from __future__ import annotations

import os
import subprocess
import sys

from support.paths import ROOT

RUN_TIMEOUT_S = 120


def run_loadreport(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m loadreport COMMAND ARGS...` in a subprocess, without the caller's tokens."""
    env = {key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "loadreport", command, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def table(stdout: str) -> list[dict[str, str]]:
    """The Markdown table's rows as {column: cell}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= {"|", "-"}
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]
