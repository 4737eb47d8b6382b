"""Batch jobs on a server with CPU worker processes (`--cpu-workers 2`): a job submitted while other
repairs are in flight is decoded, prepared, composed and encoded in a worker, as the HTTP API's
repairs are, with the result and the failures a job in the server's own process has.

The app behind a TestClient, real worker processes, the tiny model on the CPU.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from lama.errors import GpuOutOfMemoryError
from support.app import block_worker, encode, error_of, make_case, make_settings, repair, serve, service_of, wait_until
from support.jobs import no_job_pending, poll, submit


@pytest.fixture
def client(tiny_dir, tmp_path):
    with serve(make_settings(tiny_dir, tmp_path, "--cpu-workers", "2")) as client:
        yield client


def not_here(*_args, **_kwargs):
    raise AssertionError("decoded in the server's process")


def jobs_folder(client):
    return service_of(client).outputs.root / "jobs"


def a_job_here_and_one_in_a_worker(client, monkeypatch, image, mask):
    """With the GPU busy: a job decoded in this process (alone in flight), then one a worker holds.
    Returns the GPU's release and the two jobs; decoding in this process fails from then on."""
    service = service_of(client)
    release = block_worker(service)
    first = submit(client, image, mask)
    monkeypatch.setattr(service, "decode", not_here)
    held = submit(client, image, mask)
    assert service.cpu_workers.in_flight == 1
    return release, first, held


def test_jobs_submitted_beside_others_run_in_the_workers_with_the_results_of_this_process(client, monkeypatch):
    service = service_of(client)
    image, mask = make_case(320, 240, box=(60, 80, 180, 240), seed=4)
    release = block_worker(service)  # the GPU busy: the accepted jobs stay pending, in flight
    first = submit(client, image, mask)  # alone in flight: decoded here
    monkeypatch.setattr(service, "decode", not_here)
    others = [submit(client, encode(image, ".jpg"), mask, format="jpeg"), submit(client, image, mask)]
    assert service.cpu_workers.in_flight == 2, "the workers hold the two jobs submitted beside the first"
    release.set()
    done = [poll(client, job["url"]) for job in (first, *others)]
    assert [status["status"] for status in done] == ["done"] * 3, done
    assert service.cpu_workers.in_flight == 0
    monkeypatch.undo()
    # Alone again: the direct repairs run in this process.
    for status, expected in zip(done, (repair(client, image, mask), repair(client, encode(image, ".jpg"), mask,
                                                                            format="jpeg"), repair(client, image, mask)),
                                strict=True):
        result = client.get(status["result_url"])
        assert result.status_code == 200 and result.content == expected.content
        assert result.headers["content-type"] == expected.headers["content-type"]
        assert status["timings"]["total"] >= status["timings"]["infer"] > 0
    assert not list(jobs_folder(client).glob("*.lock"))


def test_a_broken_upload_beside_other_jobs_is_refused_at_submission_by_its_worker(client, monkeypatch):
    service = service_of(client)
    image, mask = make_case()
    release = block_worker(service)
    try:
        first = submit(client, image, mask)
        monkeypatch.setattr(service, "decode", not_here)
        refused = client.post("/api/v1/jobs", files={"image": ("photo.png", b"not a picture", "image/png"),
                                                     "mask": ("mask.png", encode(mask), "image/png")})
        error_of(refused, 400, "invalid_image")
        assert service.cpu_workers.in_flight == 0
    finally:
        release.set()
    assert poll(client, first["url"])["status"] == "done"
    assert sorted(path.name for path in jobs_folder(client).iterdir()) == [f"{first['id']}.json"]


def test_a_job_whose_model_run_fails_fails_and_its_worker_lets_go_of_it(client, monkeypatch):
    service = service_of(client)
    release, first, held = a_job_here_and_one_in_a_worker(client, monkeypatch, *make_case(seed=2))

    def out_of_memory(*_args, **_kwargs):
        raise GpuOutOfMemoryError("the GPU ran out of memory for this image twice")

    monkeypatch.setattr(service, "_run_on_gpu", out_of_memory)
    release.set()
    failed = poll(client, held["url"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "out_of_memory"
    assert poll(client, first["url"])["status"] == "failed"  # in this process: the same model run failed
    wait_until(lambda: service.cpu_workers.in_flight == 0, what="the worker let go of the job")


def test_a_job_whose_worker_dies_fails_with_worker_lost_and_the_next_one_is_done(client, monkeypatch):
    service = service_of(client)
    image, mask = make_case(seed=3)
    release, first, held = a_job_here_and_one_in_a_worker(client, monkeypatch, image, mask)
    assert "inpaint_cpu_workers_in_flight 1.0" in client.get("/metrics").text
    for pid in service.cpu_workers.pids:  # the worker holding the job, and the idle one
        os.kill(pid, signal.SIGKILL)
    release.set()
    lost = poll(client, held["url"])
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost", lost
    record = json.loads((jobs_folder(client) / f"{held['id']}.json").read_text())
    assert record["status"] == "failed", "the record is final"
    assert poll(client, first["url"])["status"] == "done"
    no_job_pending(client)
    killed = set(service.cpu_workers.pids)
    monkeypatch.undo()
    release = block_worker(service)
    again = [submit(client, image, mask) for _ in range(2)]  # the first here, the second in a worker started anew
    assert service.cpu_workers.in_flight == 1 and not killed & set(service.cpu_workers.pids)
    release.set()
    assert [poll(client, job["url"])["status"] for job in again] == ["done", "done"]
    assert "inpaint_cpu_worker_restarts_total 2.0" in client.get("/metrics").text
    assert client.get("/healthz").json()["cpu_workers"] == {"count": 2, "in_flight": 0, "restarts": 2}
    assert not list(jobs_folder(client).glob("*.lock"))


def test_jobs_a_worker_holds_when_the_server_stops_are_recorded_as_interrupted(tiny_dir, tmp_path, monkeypatch):
    image, mask = make_case(seed=5)
    with serve(make_settings(tiny_dir, tmp_path, "--cpu-workers", "2")) as client:
        release, first, held = a_job_here_and_one_in_a_worker(client, monkeypatch, image, mask)
        workers = service_of(client).cpu_workers
    release.set()
    assert workers.pids == [], "the workers stopped with the server"
    records = [json.loads((tmp_path / "outputs" / "jobs" / f"{job['id']}.json").read_text()) for job in (first, held)]
    assert [(record["status"], record["error"]["code"]) for record in records] == [("failed", "interrupted")] * 2
    assert not list((tmp_path / "outputs" / "jobs").glob("*.lock"))


def test_a_queued_job_a_worker_holds_is_let_go_of_when_deleted(client, monkeypatch):
    service = service_of(client)
    image, mask = make_case(320, 240, box=(60, 80, 180, 240), seed=6)
    release, first, held = a_job_here_and_one_in_a_worker(client, monkeypatch, image, mask)
    try:
        assert client.delete(held["url"]).status_code == 204
        wait_until(lambda: service.cpu_workers.in_flight == 0, timeout=10, what="the worker let go of the upload")
        wait_until(lambda: not list(jobs_folder(client).glob(f"{held['id']}.*")), timeout=10,
                   what="the job's files removed")
        error_of(client.get(held["url"]), 404, "job_not_found")
    finally:
        release.set()
    assert poll(client, first["url"])["status"] == "done"
