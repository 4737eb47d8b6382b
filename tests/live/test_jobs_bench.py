"""`python -m loadreport jobs`: a script's batch of jobs against a live service, as a table; refusals
counted, not fatal.

A benchmark, not a timed test: nothing here asserts a speed. The real command against `python app.py
--cpu-workers 2` with the tiny checkpoint on the CPU, at tiny sizes and a few jobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.liveserver import LiveServer

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120
STAGES = ("decode", "queue", "preprocess", "infer", "postprocess", "encode", "save", "total")


def run_jobs(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("LAMA_API_TOKEN", "LAMA_AUTH")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "loadreport", "jobs", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def rows(stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


def test_a_batch_per_size_with_its_rate_and_the_jobs_stages(tiny_dir, tmp_path):
    with LiveServer.start(tiny_dir, tmp_path, "--cpu-workers", "2") as server:
        done = run_jobs("--url", server.base, "--sizes", "96x64,160x120", "--jobs", "6", "--masks", "2",
                        "--warmup", "1")
        saved = list((tmp_path / "outputs").glob("*/*_repaired.png"))
    assert done.returncode == 0, done.stderr
    assert "6 jobs submitted one after another" in done.stdout
    table = rows(done.stdout)
    assert [row["size"] for row in table] == ["96×64", "160×120"]
    for row in table:
        assert row["done/jobs"] == "6/6" and row["failures"] == "0"
        assert float(row["jobs/s"]) > 0 and float(row["submit p50 ms"]) > 0
        assert all(float(row[f"{stage} ms"]) >= 0 for stage in STAGES)
        assert float(row["total ms"]) >= float(row["infer ms"]) > 0
        assert row["GPU busy"] == "n/a"
    assert len(saved) == 2 * (6 + 1), "each size's jobs and its warm-up repair were saved"
    assert "loadreport jobs: 160×120: 6/6 jobs done" in done.stderr


def test_refused_jobs_are_counted_as_failures(tiny_dir, tmp_path):
    with LiveServer.start(tiny_dir, tmp_path, "--api-token", "secret") as server:
        refused = run_jobs("--url", server.base, "--sizes", "96x64", "--jobs", "2", "--warmup", "0")
    assert refused.returncode == 0, refused.stderr
    (row,) = rows(refused.stdout)
    assert row["done/jobs"] == "0/2" and row["failures"] == "2× submit 401 unauthorized"
    assert row["total ms"] == "–"
