"""`python -m loadreport jobs`: a script's batch of jobs against a live service, as a table; refusals
counted, not fatal.

A benchmark, not a timed test: nothing here asserts a speed. The real command against `python app.py
--cpu-workers 2` with the tiny checkpoint on the CPU, at tiny sizes and a few jobs.
"""

from __future__ import annotations

from support.benchmarks import run_loadreport, table
from support.liveserver import LiveServer

STAGES = ("decode", "queue", "preprocess", "infer", "postprocess", "encode", "save", "total")


def test_a_batch_per_size_with_its_rate_and_the_jobs_stages(tiny_dir, tmp_path):
    with LiveServer.start(tiny_dir, tmp_path, "--cpu-workers", "2") as server:
        done = run_loadreport("jobs", "--url", server.base, "--sizes", "96x64,160x120", "--jobs", "6",
                              "--masks", "2", "--warmup", "1")
        saved = list((tmp_path / "outputs").glob("*/*_repaired.png"))
    assert done.returncode == 0, done.stderr
    assert "6 jobs submitted one after another" in done.stdout
    rows = table(done.stdout)
    assert [row["size"] for row in rows] == ["96×64", "160×120"]
    for row in rows:
        assert row["done/jobs"] == "6/6" and row["failures"] == "0"
        assert float(row["jobs/s"]) > 0 and float(row["submit p50 ms"]) > 0
        assert all(float(row[f"{stage} ms"]) >= 0 for stage in STAGES)
        assert float(row["total ms"]) >= float(row["infer ms"]) > 0
        assert row["GPU busy"] == "n/a"
    assert len(saved) == 2 * (6 + 1), "each size's jobs and its warm-up repair were saved"
    assert "loadreport jobs: 160×120: 6/6 jobs done" in done.stderr


def one_batch(tiny_dir, tmp_path, server_flags: tuple[str, ...], size: str, jobs: int) -> dict[str, str]:
    """The table's one row of a batch of `jobs` at `size`, no warm-up, against `python app.py *server_flags`."""
    with LiveServer.start(tiny_dir, tmp_path, *server_flags) as server:
        done = run_loadreport("jobs", "--url", server.base, "--sizes", size, "--jobs", str(jobs), "--warmup", "0")
    assert done.returncode == 0, done.stderr
    (row,) = table(done.stdout)
    return row


def test_refused_jobs_are_counted_as_failures(tiny_dir, tmp_path):
    row = one_batch(tiny_dir, tmp_path, ("--api-token", "secret"), "96x64", 2)
    assert row["done/jobs"] == "0/2" and row["failures"] == "2× submit 401 unauthorized"
    assert row["total ms"] == "–"


def test_a_submission_refused_for_a_full_queue_is_sent_again_once_a_place_frees(tiny_dir, tmp_path):
    row = one_batch(tiny_dir, tmp_path, ("--queue-capacity", "2"), "640x480", 8)
    assert row["done/jobs"] == "8/8" and row["failures"] == "0"
    assert int(row["resent"]) > 0, "two places for eight jobs sent back to back: some were refused"
