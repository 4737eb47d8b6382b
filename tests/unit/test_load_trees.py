"""tools/load_trees.sh: the load benchmark against several commits' servers in turns, as issue 15's
ratios on the H100 are measured; here on the CPU with the tiny checkpoint at a small size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from support.liveserver import free_port
from support.paths import ROOT, tiny_model

SERVER_PARTS = ("app.py", "configs", "lama", "monitor", "service", "webui")


def load_trees(trees, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`bash tools/load_trees.sh ARGS` with its servers in `trees` and this environment's Python as
    the GPU box's python3."""
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(ROOT / "tools" / "load_trees.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PATH": path, "LOAD_TREES": str(trees), **env})


def test_prepare_unpacks_a_revisions_server_and_nothing_else(tmp_path):
    done = load_trees(tmp_path, "prepare", "HEAD")
    assert done.returncode == 0, done.stderr
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    committed = subprocess.run(["git", "show", "HEAD:app.py"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    assert (tmp_path / head / "app.py").read_text() == committed
    assert sorted(path.name for path in (tmp_path / head).iterdir()) == sorted(SERVER_PARTS)
    assert load_trees(tmp_path, "prepare").returncode == 2, "no revision: refused"


def test_run_loads_this_checkouts_server_and_each_prepared_one_from_its_own_folder(tmp_path):
    """A prepared server that leaves a mark in its folder when it starts: the rows under its name
    come from a server started there, this checkout's from this one."""
    assert load_trees(tmp_path, "run").returncode == 2, "nothing prepared: refused"
    other = tmp_path / "other"
    other.mkdir()
    for part in SERVER_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, other / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, other / part)
    app = other / "app.py"
    future = "from __future__ import annotations\n"
    app.write_text(app.read_text().replace(future, future + 'import pathlib; pathlib.Path("started-here").touch()\n', 1))
    done = load_trees(tmp_path, "run", "--", "--sizes", "96x64", "--clients", "1", "--settings", "default",
                      "--requests", "2", "--warmup", "1",
                      LOAD_TREES_MODEL=str(tiny_model()), LOAD_TREES_FLAGS="--device cpu",
                      LOAD_TREES_PORT=str(free_port()))
    assert done.returncode == 0, done.stderr
    sections = [section.splitlines() for section in done.stdout.split("## ")[1:]]
    assert [lines[0].split(":")[0] for lines in sections] == ["this (round 1)", "other (round 1)"]
    for lines in sections:
        assert "start to /readyz" in lines[0]
        assert any(line.startswith("| 96×64 | default | 1 | 2/2 |") for line in lines), lines
    assert (other / "started-here").exists()
    assert not (ROOT / "started-here").exists()
