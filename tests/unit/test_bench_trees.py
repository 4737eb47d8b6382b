"""tools/bench_trees.sh: several commits' engines benched in turns, as docs/BENCHMARKS.md's A/B
comparisons are made on the GPU box; here on the CPU with the tiny checkpoint at a small size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from support.paths import ROOT, tiny_model


def bench_trees(trees, *args: str) -> subprocess.CompletedProcess[str]:
    """`bash tools/bench_trees.sh ARGS` with its trees in `trees` and this environment's Python as
    the GPU box's python3."""
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(ROOT / "tools" / "bench_trees.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PATH": path, "BENCH_TREES": str(trees)})


def test_prepare_unpacks_a_revisions_engine(tmp_path):
    done = bench_trees(tmp_path, "prepare", "HEAD")
    assert done.returncode == 0, done.stderr
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    committed = subprocess.run(["git", "show", "HEAD:lama/engine.py"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    assert (tmp_path / head / "lama" / "engine.py").read_text() == committed
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
