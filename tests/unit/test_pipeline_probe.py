"""tools/pipeline_probe.py: its summary (one row per variant and cell, throughput against the base run),
its variants switch what the service still has, and tools/gpu_soak.sh picks them by name (refusing a
name that is none, before it spends anything)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

from support.paths import ROOT


def run(cells: list[tuple[int, float]]) -> dict:
    return {"cells": [{"width": 1280, "height": 960, "settings": "default", "clients": clients,
                       "summary": {"requests_per_s": rate, "latency_p50_s": 0.05,
                                   "stage_medians_s": {"infer": 0.01, "total": 0.03},
                                   "gpu_busy_ratio": 0.5, "capacity_ratio": rate / 100}}
                      for clients, rate in cells]}


def test_each_variants_cells_are_compared_with_the_base_runs(tmp_path):
    probe = runpy.run_path(str(ROOT / "tools" / "pipeline_probe.py"))
    (tmp_path / "base.json").write_text(json.dumps(run([(1, 20.0), (16, 40.0)])))
    (tmp_path / "streams.json").write_text(json.dumps(run([(1, 20.0), (16, 80.0)])))
    (tmp_path / "streams.proc").write_text("VmRSS: 943104 kB Threads: 61\n")
    table = probe["summary"]([tmp_path / "base.json", tmp_path / "streams.json"])
    rows = [line for line in table.splitlines() if line.startswith("| base") or line.startswith("| streams")]
    assert len(rows) == 4
    assert rows[3].startswith(
        "| streams | 1280×960 default | 16 | 1 | 80.0 | – | 2.00× | 50.0 | 10.0 | 30.0 | 50% | 80% | 921 | 61 |")
    assert rows[0].endswith("| – | – |"), "no .proc file: no RSS or threads"


def test_rounds_of_a_variant_give_one_row_of_medians_with_the_range(tmp_path):
    """VARIANT.ROUND runs (gpu_soak.sh's PIPELINE_ROUNDS) are one variant's servers: the row is
    their median, compared with the median of base's rounds."""
    probe = runpy.run_path(str(ROOT / "tools" / "pipeline_probe.py"))
    rates = {"base": (40.0, 60.0, 50.0), "streams": (90.0, 30.0, 75.0)}
    paths = []
    for round_ in (1, 2, 3):  # taking turns, as gpu_soak.sh runs them
        for name, rounds in rates.items():
            path = tmp_path / f"{name}.{round_}.json"
            path.write_text(json.dumps(run([(16, rounds[round_ - 1])])))
            paths.append(path)
    (tmp_path / "streams.3.proc").write_text("VmRSS: 1048576 kB Threads: 70\n")
    rows = [line for line in probe["summary"](paths).splitlines() if line.startswith(("| base", "| streams"))]
    assert len(rows) == 2, "one row per variant and cell, whatever the rounds"
    assert rows[0].startswith("| base | 1280×960 default | 16 | 3 | 50.0 | 40.0–60.0 | 1.00× |")
    assert rows[1].startswith("| streams | 1280×960 default | 16 | 3 | 75.0 | 30.0–90.0 | 1.50× |")
    assert rows[1].endswith("| 1024 | 70 |"), "the last round's RSS and threads"


SWITCHES_ONLY_WHAT_EXISTS = '''
import importlib, inspect, json, pkgutil, runpy, sys
import lama, service, webui

modules = [importlib.import_module(found.name) for package in (lama, service, webui)
           for found in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
           if not found.name.endswith("__main__")]


def names():
    """Every module-level and class-level name of the project's modules."""
    seen = set()
    for module in modules:
        seen |= {(module.__name__, name) for name in vars(module)}
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == module.__name__:
                seen |= {(cls.__qualname__, name) for name in vars(cls)}
    return seen


probe = runpy.run_path(sys.argv[1])
added = {}
for variant, switch in probe["VARIANTS"].items():
    before = names()
    switch()
    added[variant] = sorted(map(list, names() - before))
print(json.dumps(added))
'''


def test_every_variant_switches_something_the_code_still_has():
    """A variant sets module and class attributes of the service: one whose attribute was renamed
    since would set a new one that nothing reads, and measure the service unchanged on the GPU
    box (device time spent for nothing). Each variant, in one process with the whole project
    imported, may replace names only, never add one."""
    done = subprocess.run([sys.executable, "-c", SWITCHES_ONLY_WHAT_EXISTS, str(ROOT / "tools" / "pipeline_probe.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(added) >= 15 and {"png-after-model", "gradio-stubs"} <= set(added)
    assert {variant: names for variant, names in added.items() if names} == {}


def gpu_soak(tmp_path, mode: str, picked: str) -> subprocess.CompletedProcess[str]:
    """`PIPELINE_VARIANTS=picked bash tools/gpu_soak.sh OUT mode`, with this environment's Python
    as the GPU box's python3."""
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(ROOT / "tools" / "gpu_soak.sh"), str(tmp_path / "out"), mode],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path, "PIPELINE_VARIANTS": picked})


def test_gpu_soak_picks_every_probe_variant_and_the_worker_counts_by_name(tmp_path):
    probe = subprocess.run([sys.executable, str(ROOT / "tools" / "pipeline_probe.py"), "names"],
                           capture_output=True, text=True, timeout=60)
    names = probe.stdout.split()
    assert "base" in names and "unsynced-saves" in names
    picked = [*reversed(names), "workers-4"]
    done = gpu_soak(tmp_path, "variants", " ".join(picked))  # the dry run
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("|")[0] for line in lines] == picked  # in the order asked for
    assert lines[-1] == "workers-4|base --gpu-workers 4"


def test_gpu_soak_refuses_a_name_that_is_no_variant_before_it_makes_weights(tmp_path):
    """The pipeline mode would make big-lama's weights, then start a server per variant."""
    done = gpu_soak(tmp_path, "pipeline", "base unsyncd-saves")
    assert done.returncode == 1
    assert "no variant unsyncd-saves" in done.stderr and "unsynced-saves" in done.stderr
    assert done.stdout == "" and not any((tmp_path / "out").iterdir())


def test_gpu_soak_rss_takes_probe_variants_only_and_refuses_others_before_it_makes_weights(tmp_path):
    """tools/rss_steps.py switches a probe variant on in its own process; a worker count is a flag
    of app.py's, which it does not start."""
    done = gpu_soak(tmp_path, "rss", "base workers-4")
    assert done.returncode == 1
    assert "workers-4 is no probe variant" in done.stderr
    assert done.stdout == "" and not any((tmp_path / "out").iterdir())
