"""tools/cpu_by_process.py: a command's CPU seconds by the kind of process under it."""

import contextlib
import re
import runpy
import subprocess
import sys
import textwrap
from types import SimpleNamespace

from support.paths import ROOT

TOOL = ROOT / "tools" / "cpu_by_process.py"
cpu_by_process = SimpleNamespace(**runpy.run_path(str(TOOL)))


def test_each_process_is_counted_under_what_it_runs():
    kind = cpu_by_process.kind_of
    python = "/repo/.venv/bin/python"
    assert kind([python, "/repo/app.py", "--port", "7860"], "python") == "server: python app.py"
    assert kind([python, "-m", "lama", "inpaint"], "python") == "python -m lama"
    assert kind([python, "-u", "-c", "import sys;exec(eval(sys.stdin.readline()))"], "python") == "pytest-xdist worker"
    assert kind([python, "/repo/tools/replicas.py", "--device", "cpu"], "python") == "python tools/replicas.py"
    assert kind([python, "-c", "pass"], "python") == "python (other)"
    assert kind(["/usr/lib/chromium/chromium", "--type=renderer"], "chromium") == "chromium"
    assert kind(["/usr/sbin/haproxy", "-db"], "haproxy") == "haproxy"
    assert kind([], "kworker") == "kworker"  # no command line: the kernel's name


def test_a_process_that_shows_no_command_line_as_it_exits_keeps_its_kind():
    class Exiting:
        pid, lines = 42, [["/venv/bin/python", "app.py"], []]

        def oneshot(self):
            return contextlib.nullcontext()

        def create_time(self):
            return 1.0

        def cpu_times(self):
            return SimpleNamespace(user=2.0, system=0.5)

        def cmdline(self):
            return self.lines.pop(0)

        def name(self):
            return "python"

        def children(self, recursive):
            return []

    census = cpu_by_process.Census(Exiting())
    census.sample()
    census.sample()
    assert census.by_kind() == ({"server: python app.py": 2.5}, {"server: python app.py": 1})


def test_a_commands_children_are_summed_by_kind_and_its_status_kept():
    busy = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.6: pass"
    script = textwrap.dedent(f"""\
        {sys.executable} -c '{busy}' &
        {sys.executable} -c '{busy}'
        wait
        exit 3""")
    done = subprocess.run([sys.executable, str(TOOL), "--interval", "0.1", "--", "bash", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    row = re.search(r"^\| python \(other\) \| 2 \| ([\d.]+) \| (\d+)% \|$", done.stdout, re.M)
    assert row and 1.0 <= float(row[1]) <= 1.6, done.stdout  # each child's 0.6 s, less its last interval at most
    assert re.search(r"^counted \d+ CPU s; the machine was busy \d+ CPU s of \d+", done.stdout, re.M), done.stdout


def test_processes_that_used_no_measurable_cpu_still_get_their_table():
    """A sleeping command is sampled at 0.0 CPU s (the clock's ticks are 10 ms): its share is a
    dash, not a division by zero."""
    done = subprocess.run([sys.executable, str(TOOL), "--interval", "0.05", "--", "sleep", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\| sleep \| 1 \| 0\.\d \| (–|100%) \|$", done.stdout, re.M), done.stdout
