"""Batch jobs over HTTP, in process: POST /api/v1/jobs answers 202 at once, GET /api/v1/jobs/{id}
says where the job is, GET .../result gives the image, DELETE removes it (a queued one never
runs); pending jobs are bounded, failures say why, a lost job reads as failed, and the outputs
retention sweeps records with their results.
(Replicas, a drain and a restart: tests/live/test_batch_jobs_live.py.)"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import weakref

import numpy as np
import pytest
from support.app import (WAIT_S, block_worker, decode, error_of, make_case, make_settings, serve, service_of, upload,
                         wait_until)
from support.jobs import EXACT, assert_repaired, poll, submit

from lama.engine import RepairJob
from lama.errors import JobNotFoundError, QueueFullError
from service.batch_jobs import BatchJobs
from service.pipeline import Decoded, RepairOptions


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def client(tiny_dir, folder):
    with serve(make_settings(tiny_dir, folder, queue_capacity=3)) as client:
        yield client


def test_a_job_is_accepted_at_once_then_done_and_its_result_is_the_repair(client, folder):
    image, mask = make_case(seed=3)
    accepted = submit(client, image, mask, format="webp")
    assert accepted["status"] == "queued"
    status = poll(client, accepted["url"])
    assert status["status"] == "done" and status["error"] is None, status
    assert status["result_url"] == accepted["url"] + "/result"
    assert {"decode", "queue", "infer", "encode", "save", "total"} <= set(status["timings"])
    result = client.get(status["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/webp"
    assert result.headers["content-disposition"] == 'inline; filename="photo_repaired.webp"'  # after the upload
    assert decode(result.content).shape == image.shape  # WebP may be lossy: the pixels are checked in PNG below
    saved = folder / "outputs" / result.headers["x-saved-as"]
    assert saved.read_bytes() == result.content
    jobs = folder / "outputs" / "jobs"
    assert sorted(path.name for path in jobs.iterdir()) == [f"{accepted['id']}.json"]  # no lock left behind


def test_results_are_the_repairs_a_direct_request_gives(client):
    image, mask = make_case(seed=4)
    direct = client.post("/api/v1/inpaint", **upload(image, mask, **EXACT))
    status = poll(client, submit(client, image, mask, **EXACT)["url"])
    result = client.get(status["result_url"])
    assert result.content and np.array_equal(decode(result.content), decode(direct.content))
    assert_repaired(decode(result.content), image, mask)


def test_a_pending_job_has_no_result_yet_and_pending_jobs_are_bounded(client):
    service = service_of(client)
    image, mask = make_case(seed=5)
    release = block_worker(service)  # one of the queue's 3 places
    try:
        first, second = submit(client, image, mask), submit(client, image, mask)
        assert client.get(first["url"]).json()["status"] == "queued"
        message = error_of(client.get(first["url"] + "/result"), 409, "job_not_done")
        assert "queued" in message
        full = client.post("/api/v1/jobs", **upload(image, mask))
        error_of(full, 503, "queue_full")
        assert int(full.headers["retry-after"]) >= 1
    finally:
        release.set()
    assert poll(client, first["url"])["status"] == poll(client, second["url"])["status"] == "done"


def test_a_finished_job_lets_go_of_its_upload_without_the_garbage_collector(client):
    """Once a job is final, reference counting alone frees its decoded upload and the model's
    output: nothing keeps them in a reference cycle (the queue's future kept the job's completion
    after calling it, and the completion the upload: RSS grew by the uploads' size with every
    batch, until a full collection, which a server of numpy arrays seldom makes)."""
    service = service_of(client)
    jobs = BatchJobs(service, capacity=2)
    image, mask = make_case(seed=7)
    decoded = Decoded(image.copy(), mask.copy(), owned=True)
    photo = weakref.ref(decoded.image)
    gc.disable()
    try:
        job = jobs.submit(decoded, RepairOptions())
        del decoded
        wait_until(lambda: jobs.get(job.id).status == "done", what="the job done")
        wait_until(lambda: photo() is None, what="the upload freed", timeout=2)
    finally:
        gc.enable()
        jobs.shutdown()


def test_no_repair_outlives_its_answer_without_the_garbage_collector(client):
    """Direct repairs and jobs over HTTP: once answered (a job once polled done), no decoded upload
    or prepared repair is left in memory for a full collection to find."""
    image, mask = make_case(seed=8)
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            assert client.post("/api/v1/inpaint", **upload(image, mask)).status_code == 200
            assert poll(client, submit(client, image, mask)["url"])["status"] == "done"
        # type(), not isinstance(): the latter reads __class__, which some of torch's objects warn on.
        wait_until(lambda: not [kept for kept in gc.get_objects() if type(kept) in (Decoded, RepairJob)],
                   what="no upload left", timeout=2)
    finally:
        gc.enable()


def test_the_jobs_own_bound_holds_jobs_still_being_finished(client):
    """BatchJobs counts a job pending until its record is final, beyond the queue's own count."""
    service = service_of(client)
    jobs = BatchJobs(service, capacity=1)
    image, mask = make_case(seed=6)
    release = block_worker(service)
    try:
        job = jobs.submit(Decoded(image, mask), RepairOptions())
        with pytest.raises(QueueFullError) as refused:
            jobs.submit(Decoded(image, mask), RepairOptions())
        assert refused.value.retry_after_s >= 1
    finally:
        release.set()
    wait_until(lambda: jobs.get(job.id).status == "done", what="the job done")
    wait_until(lambda: jobs._pending == 0, what="the job no longer pending")


def test_a_job_that_fails_says_why_and_the_server_goes_on(client, monkeypatch):
    engine = service_of(client).engine
    image, mask = make_case(seed=7)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "run_models", lambda *args, **kwargs: 1 / 0)
        status = poll(client, submit(client, image, mask)["url"])
    assert status["status"] == "failed" and status["result_url"] is None
    assert status["error"]["code"] == "internal_error" and status["error"]["message"]
    assert "failed" in error_of(client.get(f"/api/v1/jobs/{status['id']}/result"), 409, "job_failed")
    assert poll(client, submit(client, image, mask)["url"])["status"] == "done"


@pytest.mark.parametrize("job_id", ["0" * 32, "A" * 32, "a" * 200, "job.json", "%2e%2e"])
def test_unknown_ids_are_404(client, job_id):
    error_of(client.get(f"/api/v1/jobs/{job_id}"), 404, "job_not_found")
    error_of(client.get(f"/api/v1/jobs/{job_id}/result"), 404, "job_not_found")


def test_an_id_never_becomes_a_path(client, folder):
    (folder / "outputs" / "secret.json").write_text("{}")
    with pytest.raises(JobNotFoundError):
        client.app.state.jobs.get("../secret")


def test_a_job_refused_at_submission_leaves_nothing_behind(client, folder):
    before = set((folder / "outputs" / "jobs").iterdir())
    image, mask = make_case()
    error_of(client.post("/api/v1/jobs", **upload(b"not an image", mask)), 400, "invalid_image")
    error_of(client.post("/api/v1/jobs", **upload(image, mask, strategy="magic")), 422, "invalid_option")
    error_of(client.post("/api/v1/jobs", **upload(image, mask[:5])), 422, "mask_size_mismatch")
    assert set((folder / "outputs" / "jobs").iterdir()) == before


def test_a_job_the_outputs_folder_cannot_take_is_refused_in_one_line(tiny_dir, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the outputs folder should be")
    image, mask = make_case()
    with serve(make_settings(tiny_dir, tmp_path, outputs_dir=str(blocked))) as client:
        message = error_of(client.post("/api/v1/jobs", **upload(image, mask)), 507, "outputs_unwritable")
        assert "outputs folder" in message and "\n" not in message
        assert client.post("/api/v1/inpaint", **upload(image, mask)).status_code == 200  # the server goes on
    assert blocked.read_text() == "a file where the outputs folder should be"


def test_the_token_guards_the_jobs_routes(tiny_dir, tmp_path):
    image, mask = make_case()
    with serve(make_settings(tiny_dir, tmp_path, "--api-token", "s3cret")) as client:
        error_of(client.post("/api/v1/jobs", **upload(image, mask)), 401, "unauthorized")
        client.headers["Authorization"] = "Bearer s3cret"
        accepted = submit(client, image, mask)
        assert poll(client, accepted["url"])["status"] == "done"
        del client.headers["Authorization"]
        error_of(client.get(accepted["url"]), 401, "unauthorized")
        error_of(client.get(accepted["url"] + "/result"), 401, "unauthorized")
        error_of(client.delete(accepted["url"]), 401, "unauthorized")
        client.headers["Authorization"] = "Bearer s3cret"
        assert client.get(accepted["url"]).json()["status"] == "done"  # the refused DELETE deleted nothing


def test_records_go_with_their_results_and_lost_jobs_read_as_failed(tiny_dir, tmp_path):
    # Keep 1 byte of results: the sweep removes every result, as retention would the oldest.
    settings = make_settings(tiny_dir, tmp_path, "--outputs-keep-gb", "1e-9", "--outputs-keep-days", "7")
    jobs_folder = tmp_path / "outputs" / "jobs"
    image, mask = make_case()
    with serve(settings) as client:
        done = poll(client, submit(client, image, mask)["url"])
        lost = "f" * 32  # as a process killed before its job ran leaves it: the record, an unheld lock
        (jobs_folder / f"{lost}.json").write_text(
            f'{{"id": "{lost}", "status": "queued", "format": "png", "error": null, "saved_as": null, "timings": {{}}}}')
        (jobs_folder / f"{lost}.lock").touch()
        old_failure = "e" * 32
        (jobs_folder / f"{old_failure}.json").write_text(
            f'{{"id": "{old_failure}", "status": "failed", "format": "png", "error": {{"code": "internal_error", '
            f'"message": "m"}}, "saved_as": null, "timings": {{}}}}')
        eight_days_ago = time.time() - 8 * 86400
        os.utime(jobs_folder / f"{old_failure}.json", (eight_days_ago, eight_days_ago))
        # Killed between taking the lock and writing the record, and in the middle of a write:
        (jobs_folder / f"{'d' * 32}.lock").touch()
        (jobs_folder / f".{'c' * 32}.json.0123abcd.tmp").write_text('{"id": ')

        status = client.get(f"/api/v1/jobs/{lost}").json()
        assert status["status"] == "failed" and status["error"]["code"] == "interrupted", status
        assert not (jobs_folder / f"{lost}.lock").exists()

        client.app.state.retention.sweep()
        error_of(client.get(done["result_url"]), 404, "job_not_found")
        error_of(client.get(f"/api/v1/jobs/{done['id']}"), 404, "job_not_found")
        error_of(client.get(f"/api/v1/jobs/{old_failure}"), 404, "job_not_found")
        assert sorted(path.name for path in jobs_folder.iterdir()) == [f"{lost}.json"]  # failed today: kept


def test_jobs_the_stopping_server_cancels_are_recorded_as_interrupted(tiny_dir, tmp_path):
    """Past the drain's bound the lifespan cancels queued jobs: their records say so, none stays pending."""
    image, mask = make_case()
    with serve(make_settings(tiny_dir, tmp_path)) as client:
        release = block_worker(service_of(client))
        ids = [submit(client, image, mask)["id"] for _ in range(2)]
    release.set()
    jobs_folder = tmp_path / "outputs" / "jobs"
    records = [json.loads((jobs_folder / f"{job_id}.json").read_text()) for job_id in ids]
    assert [(record["status"], record["error"]["code"]) for record in records] == [("failed", "interrupted")] * 2
    assert not list(jobs_folder.glob("*.lock"))


# ------------------------------------------------------------------ deleting


def results_saved(folder) -> set[str]:
    return {path.name for path in (folder / "outputs").glob("????-??-??/*")}


def job_files(folder, job_id) -> list[str]:
    return sorted(path.name for path in (folder / "outputs" / "jobs").glob(f"{job_id}.*"))


def test_a_deleted_job_is_gone_with_its_result(client, folder):
    image, mask = make_case(seed=9)
    done = poll(client, submit(client, image, mask)["url"])
    saved = folder / "outputs" / client.get(done["result_url"]).headers["x-saved-as"]
    deleted = client.delete(f"/api/v1/jobs/{done['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert not saved.exists() and job_files(folder, done["id"]) == []
    error_of(client.get(f"/api/v1/jobs/{done['id']}"), 404, "job_not_found")
    error_of(client.get(done["result_url"]), 404, "job_not_found")
    error_of(client.delete(f"/api/v1/jobs/{done['id']}"), 404, "job_not_found")  # once only


def test_a_failed_job_can_be_deleted(client, folder, monkeypatch):
    image, mask = make_case(seed=10)
    with monkeypatch.context() as patch:
        patch.setattr(service_of(client).engine, "run_models", lambda *args, **kwargs: 1 / 0)
        failed = poll(client, submit(client, image, mask)["url"])
    assert failed["status"] == "failed"
    assert client.delete(f"/api/v1/jobs/{failed['id']}").status_code == 204
    assert job_files(folder, failed["id"]) == []


def test_a_queued_job_deleted_never_runs(client, folder):
    service = service_of(client)
    image, mask = make_case(seed=11)
    before = results_saved(folder)
    release = block_worker(service)
    try:
        queued = submit(client, image, mask)
        assert client.delete(queued["url"]).status_code == 204
        error_of(client.get(queued["url"]), 404, "job_not_found")
        # Cancelled in the queue: gone while the worker is still busy, its place in the jobs' bound free.
        wait_until(lambda: job_files(folder, queued["id"]) == [], timeout=10,
                   what="the deleted job's files removed")
        assert client.app.state.jobs._pending == 0
    finally:
        release.set()
    wait_until(lambda: service.queue.depth == 0, what="the queue empty")
    assert results_saved(folder) == before  # its model never ran: no result was written
    assert client.app.state.jobs._pending == 0 and not client.app.state.jobs._model_runs


def test_a_running_job_deleted_ends_and_leaves_no_result(client, folder, monkeypatch):
    engine = service_of(client).engine
    image, mask = make_case(seed=12)
    before = results_saved(folder)
    running, release = threading.Event(), threading.Event()
    run_models = engine.run_models

    def held(*args, **kwargs):
        running.set()
        assert release.wait(WAIT_S)
        return run_models(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "run_models", held)
        job = submit(client, image, mask)
        assert running.wait(WAIT_S)
        assert client.get(job["url"]).json()["status"] == "running"
        assert client.delete(job["url"]).status_code == 204
        error_of(client.get(job["url"]), 404, "job_not_found")
        release.set()
        wait_until(lambda: job_files(folder, job["id"]) == [], timeout=10,
                   what="the deleted job's files removed")
    assert results_saved(folder) == before  # its result was saved, then removed with the job


def test_a_job_deleted_through_another_replica_is_dropped_by_its_owner(client, folder, monkeypatch):
    """Another replica cannot cancel the owner's queued runs: its tombstone makes the owner skip them."""
    service = service_of(client)
    owner, other = BatchJobs(service, capacity=2), BatchJobs(service, capacity=2)
    image, mask = make_case(seed=13)
    model_runs = []
    run_models = service.engine.run_models
    monkeypatch.setattr(service.engine, "run_models", lambda *args, **kwargs: model_runs.append(1) or
                        run_models(*args, **kwargs))
    before = results_saved(folder)
    release = block_worker(service)
    try:
        job = owner.submit(Decoded(image, mask), RepairOptions())
        other.delete(job.id)
        with pytest.raises(JobNotFoundError):
            owner.get(job.id)
        assert job_files(folder, job.id) == [f"{job.id}.deleted", f"{job.id}.json", f"{job.id}.lock"]
    finally:
        release.set()
    wait_until(lambda: job_files(folder, job.id) == [], timeout=10,
                   what="the deleted job's files removed")
    assert model_runs == [] and results_saved(folder) == before
    owner.shutdown()
    other.shutdown()


def test_the_sweep_finishes_deletions_whose_owner_or_deleter_died(tiny_dir, tmp_path):
    jobs_folder = tmp_path / "outputs" / "jobs"
    image, mask = make_case()
    with serve(make_settings(tiny_dir, tmp_path)) as client:
        done = poll(client, submit(client, image, mask)["url"])
        saved = tmp_path / "outputs" / client.get(done["result_url"]).headers["x-saved-as"]
        (jobs_folder / f"{done['id']}.deleted").touch()  # its deleter died after the tombstone
        lost = "f" * 32  # deleted while queued in a process killed since: its lock is free
        (jobs_folder / f"{lost}.json").write_text(
            f'{{"id": "{lost}", "status": "queued", "format": "png", "error": null, "saved_as": null, "timings": {{}}}}')
        (jobs_folder / f"{lost}.lock").touch()
        (jobs_folder / f"{lost}.deleted").touch()
        error_of(client.get(f"/api/v1/jobs/{done['id']}"), 404, "job_not_found")
        client.app.state.retention.sweep()
        assert not saved.exists()
        assert sorted(path.name for path in jobs_folder.iterdir()) == []
