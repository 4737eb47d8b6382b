"""JobQueue: the one bounded, first-come-first-served queue in front of the GPU."""

import threading
import time

import pytest

from webui.jobs import JobQueue, QueueFull, Timed

WAIT_S = 10  # upper bound for conditions that normally hold within milliseconds


def wait_until(condition, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


RELEASES = []  # every blocker's event, set at teardown so that a failed test cannot hang the next


@pytest.fixture
def queue():
    jobs = []

    def make(capacity):
        jobs.append(JobQueue(capacity))
        return jobs[-1]

    yield make
    for release in RELEASES:
        release.set()
    RELEASES.clear()
    for q in jobs:
        q.shutdown()


def blocker(q):
    """Occupy the worker until the returned event is set; returns (event, future)."""
    release, running = threading.Event(), threading.Event()
    RELEASES.append(release)

    def job():
        running.set()
        assert release.wait(WAIT_S), "test forgot to release the worker"
        return "unblocked"

    future = q.submit(job)
    assert running.wait(WAIT_S)
    return release, future


def test_jobs_complete_in_submission_order(queue):
    q = queue(64)
    release, first = blocker(q)
    finished = []
    # Submitted while the worker is busy, so all of them really wait in the queue.
    futures = [q.submit(lambda i=i: finished.append(i) or i) for i in range(20)]
    assert q.depth == 21
    release.set()
    assert [f.result(WAIT_S).value for f in futures] == list(range(20))
    assert finished == list(range(20))
    assert first.result(WAIT_S).value == "unblocked"


def test_result_is_timed_with_wait_and_run_seconds(queue):
    q = queue(4)
    release, _ = blocker(q)
    waiting = q.submit(lambda: time.sleep(0.05) or 42)
    time.sleep(0.05)  # measured, not waited on: the time the job spends queued
    release.set()
    timed = waiting.result(WAIT_S)
    assert isinstance(timed, Timed) and timed.value == 42
    assert timed.wait_s >= 0.04 and timed.run_s >= 0.04


def test_capacity_is_enforced_and_the_slot_freed_afterwards(queue):
    q = queue(2)
    release, first = blocker(q)
    second = q.submit(lambda: "second")
    assert q.depth == 2 and not q.has_room
    with pytest.raises(QueueFull) as refused:
        q.submit(lambda: "third")
    assert refused.value.retry_after >= 1
    assert "full" in str(refused.value) and "2 jobs" in str(refused.value)
    assert q.depth == 2  # a refused job takes no slot
    release.set()
    assert second.result(WAIT_S).value == "second"
    wait_until(lambda: q.depth == 0)
    assert q.has_room
    assert q.run(lambda: "after").value == "after"
    wait_until(lambda: q.depth == 0)


def test_an_exception_in_a_job_propagates_and_frees_the_slot(queue):
    q = queue(1)

    def broken():
        raise RuntimeError("boom")

    future = q.submit(broken)
    with pytest.raises(RuntimeError, match="boom"):
        future.result(WAIT_S)
    wait_until(lambda: q.depth == 0)
    # The only slot is free again and the worker thread survived.
    assert q.run(lambda: "still serving").value == "still serving"


def test_jobs_run_one_at_a_time_on_one_worker(queue):
    q = queue(64)
    active, overlap, threads = [0], [], set()
    lock = threading.Lock()

    def job():
        with lock:
            active[0] += 1
            overlap.append(active[0])
            threads.add(threading.get_ident())
        time.sleep(0.002)
        with lock:
            active[0] -= 1

    submitted = []
    submitters = [threading.Thread(target=lambda: submitted.append(q.submit(job))) for _ in range(16)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(WAIT_S)
    for future in submitted:
        future.result(WAIT_S)
    assert len(submitted) == 16
    assert max(overlap) == 1 and len(threads) == 1


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        JobQueue(0)
