"""tools/replicas.py (issue 18's procedure, `tools/gpu_soak.sh OUT replicas` on the GPU box) run
whole on the CPU: the test checkpoint, one tiny size, one client, a second per cell. What the
GPU run will measure is not asserted here; that the procedure runs every step and reports it is.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from deploy.balancer import find_haproxy
from support.liveserver import ROOT, free_port


def test_the_replicas_procedure_runs_every_step_on_the_cpu_and_reports_it(tiny_dir: Path, tmp_path: Path):
    haproxy = find_haproxy()
    assert haproxy, "haproxy not found: install Debian's haproxy package (apt-get install haproxy)"
    ports = [free_port() for _ in range(4)]
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "replicas.py"), "--device", "cpu", "--model", str(tiny_dir),
         "--out", str(out), "--work", str(tmp_path / "work"), "--haproxy", haproxy,
         "--sizes", "128x96", "--clients", "1", "--duration", "1", "--warmup", "0",
         "--burst", "3", "--burst-size", "128x96", "--restart-clients", "1", "--restart-size", "128x96",
         "--ports", f"{ports[0]},{ports[1]}", "--balancer", f"127.0.0.1:{ports[2]}", "--stats", f"127.0.0.1:{ports[3]}"],
        capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    table = (out / "replicas.md").read_text()
    assert table == run.stdout
    row = re.search(r"^\| 128×96 \| 1 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)× \| n/a \| n/a \| 0 / 0 \|$", table, re.M)
    assert row and float(row[1]) > 0 and float(row[2]) > 0, table
    spread = re.search(r"HAProxy sent the balancer's benchmark .* (\d+) requests to r1, (\d+) requests to r2\.", table)
    assert spread and int(spread[1]) > 0 and int(spread[2]) > 0, table  # least-connections uses both
    assert "3 simultaneous 128×96 repairs through the balancer: 3/3 answered 200." in table
    restart = re.search(r"(\d+) answered 200, 0 lost;", table)
    assert restart and int(restart[1]) > 0, table
    # The first benchmark ran against the replica alone, the second through the balancer.
    assert json.loads((out / "one.json").read_text())["url"] == f"http://127.0.0.1:{ports[0]}"
    assert json.loads((out / "two.json").read_text())["url"] == f"http://127.0.0.1:{ports[2]}"
    # Every start is in the logs: the replica alone, then each of the two started and restarted once.
    with tarfile.open(out / "replicas-logs.tar.gz") as archive:
        names = {Path(name).name for name in archive.getnames()}
    assert {"haproxy.log", "1-replica-r1-start1.log", "2-replicas-r1-start1.log", "2-replicas-r1-start2.log",
            "2-replicas-r2-start1.log", "2-replicas-r2-start2.log"} <= names, names
