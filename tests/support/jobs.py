"""Batch jobs as a client drives them: submit, poll, check the result (tests/service and tests/live)."""

from __future__ import annotations

import re
import time

from support.app import upload, wait_until

JOB_ID = re.compile(r"[0-9a-f]{32}")
POLL_S = 60
EXACT = {"dilate": 0, "feather": 0}  # only the masked pixels change


def submit(client, image, mask, **fields):
    response = client.post("/api/v1/jobs", **upload(image, mask, **fields))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert set(accepted) == {"id", "status", "url"} and JOB_ID.fullmatch(accepted["id"])
    assert accepted["url"] == f"/api/v1/jobs/{accepted['id']}" == response.headers["location"]
    return accepted


def poll(client, url, until=("done", "failed")):
    """The job's status once it is one of `until`; for an app behind a TestClient, a final job's
    once its owner has also let go of its lock, so that its files are as they stay."""
    deadline = time.monotonic() + POLL_S
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.text
        status = response.json()
        if status["status"] in until:
            if status["status"] in ("done", "failed") and hasattr(client, "app"):
                owner_let_go(client, status["id"])
            return status
        assert status["status"] in ("queued", "running"), status
        assert time.monotonic() < deadline, f"{url} still {status['status']} after {POLL_S} s"
        time.sleep(0.05)


def owner_let_go(client, job_id):
    """A job's record reads final a moment before its owner removes its lock (service.batch_jobs):
    wait for the lock. Its admission goes just after; no_job_pending waits for that."""
    lock = client.app.state.jobs._lock_path(job_id)
    wait_until(lambda: not lock.exists(), 10, what=f"the owner of job {job_id} let go of it")


def no_job_pending(client):
    """Once no job of the app behind `client` is pending: each one's owner has let go of its
    admission too, so a repair submitted next is alone in flight."""
    wait_until(lambda: client.app.state.jobs._pending == 0, 10, what="no job pending")


def assert_repaired(result, image, mask):
    changed = (result != image).any(axis=2)
    assert result.shape == image.shape
    assert not changed[mask == 0].any(), "pixels outside the mask changed"
    assert changed[mask > 0].mean() > 0.5, "the masked area was not repaired"
