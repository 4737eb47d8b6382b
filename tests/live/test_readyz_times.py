"""tools/readyz_times.py: the real server started per variant, timed to /readyz, and stopped."""

from __future__ import annotations

import subprocess
import sys

from support.liveserver import free_port
from support.paths import ROOT


def test_each_variant_s_starts_are_timed_in_turn_and_summed_up(tiny_dir):
    port = free_port()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "readyz_times.py"), "--variants", "base,gradio-stubs",
                           "--starts", "2", "--port", str(port), "--", "--device", "cpu", "--model", str(tiny_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    starts = [line.split(":")[0] for line in done.stdout.splitlines() if "/readyz after" in line]
    assert starts == ["base", "gradio-stubs", "gradio-stubs", "base"]  # in turn, reversed every other round
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"variant", "base", "gradio-stubs"}
    assert all(int(cell) > 0 for cell in rows["base"].strip("|").split("|")[1:])
    # Every server stopped: the port is free again.
    subprocess.run([sys.executable, "-c", f"import socket; socket.create_server(('127.0.0.1', {port})).close()"],
                   check=True)


def test_with_the_livez_probe_each_start_is_timed_to_serving(tiny_dir):
    """One start (the variants' turns are the test above's)."""
    port = free_port()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "readyz_times.py"), "--variants", "base",
                           "--starts", "1", "--probe", "livez", "--port", str(port),
                           "--", "--device", "cpu", "--model", str(tiny_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    starts = [line.split(":")[0] for line in done.stdout.splitlines() if "/livez after" in line]
    assert starts == ["base"]
    assert "/readyz after" not in done.stdout
