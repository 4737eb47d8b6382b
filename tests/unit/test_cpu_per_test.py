"""tools/cpu_per_test.py: each test's CPU seconds, its own and its children's, and the files' table."""

import json
import os
import runpy
import subprocess
import sys
import textwrap
from types import SimpleNamespace

from support.paths import ROOT

TOOL = ROOT / "tools" / "cpu_per_test.py"
cpu_per_test = SimpleNamespace(**runpy.run_path(str(TOOL)))

SUITE = textwrap.dedent("""
    import subprocess, sys, time

    def burn(seconds):
        started = time.process_time()
        while time.process_time() - started < seconds:
            pass

    def test_a_child_that_burns():
        subprocess.run([sys.executable, "-c", "import time\\nstarted = time.process_time()\\n"
                        "while time.process_time() - started < 0.4: pass"], check=True)

    def test_its_own_work():
        burn(0.3)

    def test_nothing():
        pass
""")


def test_each_test_s_own_and_children_s_cpu_is_recorded_and_summed_by_file(tmp_path, capsys):
    (tmp_path / "test_suite.py").write_text(SUITE)
    out = tmp_path / "run.jsonl"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "cpu_per_test", "--cpu-per-test", str(out),
                          "-p", "no:cacheprovider", "test_suite.py"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(TOOL.parent)}, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    tests = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert set(tests) == {f"test_suite.py::{name}" for name in ("test_a_child_that_burns", "test_its_own_work",
                                                                 "test_nothing")}
    child, own, idle = (tests[f"test_suite.py::{name}"] for name in ("test_a_child_that_burns", "test_its_own_work",
                                                                    "test_nothing"))
    assert child["children"] >= 0.35 and own["children"] < 0.1 and idle["children"] < 0.1
    assert own["self"] >= 0.25 and idle["self"] < 0.1
    assert child["wall"] >= 0.35

    assert cpu_per_test.main([str(out), "--against", str(out)]) == 0
    table = capsys.readouterr().out
    total = sum(test["self"] + test["children"] for test in tests.values())
    assert table.startswith(f"{total:.0f} CPU s in 1 test file (")
    row = next(line for line in table.splitlines() if line.startswith("| test_suite.py |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[1]) == round(total, 1) and float(cells[2]) >= 0.35
    assert cells[4] == cells[1], "the run against itself: the same figures beside each other"
