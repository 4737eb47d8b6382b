"""deploy/capacity.py reads a replica's capacity from the newest load table that measured it."""

from __future__ import annotations

import runpy

import pytest

from support.paths import ROOT

BENCHMARKS = """# Benchmarks

## Newer run, of 2026-12-04

### Two variants

| variant | size | clients | req/s |
|---|---|---|---|
| base | 640×480 default | 4 | 999 |

### The load benchmark

| size | settings | clients | ok/sent | req/s |
|---|---|---|---|---|
| 640×480 | default | 1 | 10/10 | 50.5 |
| 640×480 | default | 16 | 10/10 | 100.5 |

## Older run, of 2026-12-02

| size | settings | clients | ok/sent | req/s |
|---|---|---|---|---|
| 640×480 | original | 4 | 10/10 | 70 |
| 640×480 | default | 4 | 10/10 | 80 |
| 1280×960 | default | 4 | 10/10 | 40 |
"""


@pytest.fixture
def capacity(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(BENCHMARKS)
    return runpy.run_path(str(ROOT / "deploy" / "capacity.py")), path


def test_the_newest_table_with_rows_at_those_clients_is_read(capacity):
    module, path = capacity
    assert module["capacity_for"](path, 16, ["640×480"]) == (
        "Newer run, of 2026-12-04 › The load benchmark", {"640×480": 100.5})
    # The newer run measured 1 and 16 clients only: 4 clients come from the older one, default
    # settings only (not its strategy=original row, not another table's columns).
    assert module["capacity_for"](path, 4, ["640×480", "1280×960"]) == (
        "Older run, of 2026-12-02", {"640×480": 80.0, "1280×960": 40.0})


def test_a_table_missing_a_size_of_the_mix_is_passed_over(capacity):
    module, path = capacity
    run, rates = module["capacity_for"](path, 4, ["640×480"])
    assert run == "Older run, of 2026-12-02"
    with pytest.raises(SystemExit, match="no load table .* has rows for 2560×1920 at 4 clients"):
        module["capacity_for"](path, 4, ["2560×1920"])
    with pytest.raises(SystemExit, match="at 3 clients"):
        module["capacity_for"](path, 3, ["640×480"])


def test_the_printed_plan_names_the_run_it_read(capacity, capsys):
    module, path = capacity
    module["main"](["--benchmarks", str(path), "--mix", "640x480=1", "--rate", "40"])
    printed = capsys.readouterr().out
    assert 'load table of "Older run, of 2026-12-02", default settings, 4 clients' in printed
    assert "| 640×480 | 100% | 80 | 12.5 |" in printed
    # 40 repairs per second at 12.5 replica-ms each: 0.5 replicas busy, planned at 70 % plus one spare.
    assert "| 40 req/s | 0.5 | 2 |" in printed
