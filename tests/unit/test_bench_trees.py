"""tools/bench_trees.sh: several commits' engines benched, and their servers loaded, in turns, as
docs/BENCHMARKS.md's A/B comparisons and issue 15's ratios are made on the GPU box; here on the CPU
with the tiny checkpoint at a small size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from support.liveserver import free_port
from support.paths import ROOT, tiny_model

SERVER_PARTS = ("app.py", "configs", "lama", "monitor", "service", "webui")


def bench_trees(trees, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`bash tools/bench_trees.sh ARGS` with its engines and servers in `trees` and this
    environment's Python as the GPU box's python3."""
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(ROOT / "tools" / "bench_trees.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PATH": path, "BENCH_TREES": str(trees),
                                                       "BENCH_SERVERS": str(trees), **env})


def short_head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def committed(path: str) -> str:
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_prepare_unpacks_a_revisions_engine(tmp_path):
    done = bench_trees(tmp_path, "prepare", "HEAD")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / short_head() / "lama" / "engine.py").read_text() == committed("lama/engine.py")
    assert [path.name for path in (tmp_path / short_head()).iterdir()] == ["lama"]
    assert bench_trees(tmp_path, "prepare").returncode == 2, "no revision: refused"


def test_run_benches_this_checkout_and_each_tree_in_turn_with_that_trees_engine(tmp_path):
    """A prepared tree whose engine announces itself: its rows come from its own lama/, this
    checkout's from this one's, round after round."""
    assert bench_trees(tmp_path, "run", "1").returncode == 2, "nothing prepared: refused"
    shutil.copytree(ROOT / "lama", tmp_path / "other" / "lama", ignore=shutil.ignore_patterns("__pycache__"))
    main = tmp_path / "other" / "lama" / "__main__.py"
    main.write_text('print("| the other tree |")\n' + main.read_text())
    done = bench_trees(tmp_path, "run", "2", "--", "--model", str(tiny_model()), "--device", "cpu",
                       "--sizes", "64x48", "--runs", "1", "--warmup", "1")
    assert done.returncode == 0, done.stderr
    sections = [section.splitlines() for section in done.stdout.split("## ")[1:]]
    assert [lines[0] for lines in sections] == ["this (round 1)", "other (round 1)", "this (round 2)",
                                                "other (round 2)"]
    for lines in sections:
        assert any(line.startswith("| 64×48 |") for line in lines), lines
        assert ("| the other tree |" in lines) == lines[0].startswith("other"), lines


def test_prepare_server_unpacks_a_revisions_server_and_nothing_else(tmp_path):
    done = bench_trees(tmp_path, "prepare-server", "HEAD")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / short_head() / "app.py").read_text() == committed("app.py")
    assert sorted(path.name for path in (tmp_path / short_head()).iterdir()) == sorted(SERVER_PARTS)
    assert bench_trees(tmp_path, "prepare-server").returncode == 2, "no revision: refused"


def test_load_runs_the_benchmark_against_this_checkouts_server_and_each_prepared_one_from_its_folder(tmp_path):
    """A prepared server that leaves a mark in its folder when it starts: the rows under its name
    come from a server started there, this checkout's from this one."""
    assert bench_trees(tmp_path, "load").returncode == 2, "nothing prepared: refused"
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
    done = bench_trees(tmp_path, "load", "--", "--sizes", "96x64", "--clients", "1", "--settings", "default",
                       "--requests", "2", "--warmup", "1",
                       BENCH_MODEL=str(tiny_model()), BENCH_SERVER_FLAGS="--device cpu", BENCH_PORT=str(free_port()))
    assert done.returncode == 0, done.stderr
    sections = [section.splitlines() for section in done.stdout.split("## ")[1:]]
    assert [lines[0].split(":")[0] for lines in sections] == ["this (round 1)", "other (round 1)"]
    for lines in sections:
        assert "start to /readyz" in lines[0]
        assert any(line.startswith("| 96×64 | default | 1 | 2/2 |") for line in lines), lines
    assert (other / "started-here").exists()
    assert not (ROOT / "started-here").exists()
