"""Batch jobs as a client drives them: submit, poll, check the result (tests/service and tests/live)."""

from __future__ import annotations

import re
import time

from support.app import upload

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
    """The job's status once it is one of `until`."""
    deadline = time.monotonic() + POLL_S
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.text
        status = response.json()
        if status["status"] in until:
            return status
        assert status["status"] in ("queued", "running"), status
        assert time.monotonic() < deadline, f"{url} still {status['status']} after {POLL_S} s"
        time.sleep(0.05)


def assert_repaired(result, image, mask):
    changed = (result != image).any(axis=2)
    assert result.shape == image.shape
    assert not changed[mask == 0].any(), "pixels outside the mask changed"
    assert changed[mask > 0].mean() > 0.5, "the masked area was not repaired"
