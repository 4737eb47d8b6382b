"""JobQueue: the bounded, first-come-first-served queue in front of the GPU, its workers and
its memory budget (estimates here are plain numbers: what the engine would estimate is
tests/service/test_admission.py's business)."""

import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from lama.errors import QueueFullError
from service.jobs import DEFAULT_WORKERS, JobQueue, Timed

WAIT_S = 10  # upper bound for conditions that normally hold within milliseconds
MB = 10**6


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

    def make(capacity, **options):
        jobs.append(JobQueue(capacity, **options))
        return jobs[-1]

    yield make
    for release in RELEASES:
        release.set()
    RELEASES.clear()
    for q in jobs:
        q.shutdown()


class Blocker:
    """A job that holds its worker (and its share of the budget) until released."""

    def __init__(self, name="blocker"):
        self.name = name
        self.running = threading.Event()
        self.release = threading.Event()
        RELEASES.append(self.release)

    def __call__(self):
        self.running.set()
        assert self.release.wait(WAIT_S), "test forgot to release the worker"
        return self.name


def blocker(q, cost_bytes=None):
    """Occupy a worker until the returned event is set; returns (event, future)."""
    job = Blocker()
    future = q.submit(job, cost_bytes=cost_bytes)
    assert job.running.wait(WAIT_S)
    return job.release, future


# ------------------------------------------------------------------ order, timing, capacity


def test_jobs_complete_in_submission_order(queue):
    q = queue(64, workers=1)
    release, first = blocker(q)
    finished = []
    # Submitted while the worker is busy, so all of them really wait in the queue.
    futures = [q.submit(lambda i=i: finished.append(i) or i) for i in range(20)]
    assert q.depth == 21
    release.set()
    assert [f.result(WAIT_S).value for f in futures] == list(range(20))
    assert finished == list(range(20))
    assert first.result(WAIT_S).value == "blocker"


def test_with_several_workers_jobs_start_in_submission_order(queue):
    q = queue(64, workers=3)
    releases = [blocker(q)[0] for _ in range(3)]  # every worker busy
    started = []
    lock = threading.Lock()

    def job(i):
        with lock:
            started.append(i)
        time.sleep(0.002)

    futures = [q.submit(lambda i=i: job(i)) for i in range(30)]
    for release in releases:
        release.set()
    for future in futures:
        future.result(WAIT_S)
    assert started == list(range(30))


def test_an_idle_worker_holds_nothing_of_its_last_job(queue):
    """A repair's job refers to its upload and output: an idle worker waiting for the next job must
    not keep the last one alive (two GPU workers held two repairs' pixels at rest)."""
    q = queue(4, workers=1)

    class Upload:
        pass

    upload = Upload()
    freed = weakref.ref(upload)
    q.submit(lambda kept=upload: None).result(WAIT_S)
    del upload
    wait_until(lambda: freed() is None, timeout=2)


def test_result_is_timed_with_wait_and_run_seconds(queue):
    q = queue(4, workers=1)
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
    second_job = Blocker("second")
    second = q.submit(second_job)  # on the second worker: both slots taken
    assert q.depth == 2 and not q.has_room
    with pytest.raises(QueueFullError) as refused:
        q.submit(lambda: "third")
    assert refused.value.retry_after_s >= 1
    assert "full" in str(refused.value) and "2 jobs" in str(refused.value)
    assert q.depth == 2  # a refused job takes no slot
    release.set()
    second_job.release.set()
    assert first.result(WAIT_S).value == "blocker" and second.result(WAIT_S).value == "second"
    assert q.depth == 0 and q.has_room, "a caller that has its result sees the slot free"
    assert q.run(lambda: "after").value == "after"


def test_an_exception_in_a_job_propagates_and_frees_the_slot_and_the_budget(queue):
    q = queue(1, budget_bytes=100 * MB)

    def broken():
        raise RuntimeError("boom")

    future = q.submit(broken, cost_bytes=80 * MB)
    with pytest.raises(RuntimeError, match="boom"):
        future.result(WAIT_S)
    assert q.depth == 0 and q.admitted_bytes == 0
    # The only slot is free again and the worker thread survived.
    assert q.run(lambda: "still serving", cost_bytes=80 * MB).value == "still serving"


def test_jobs_run_one_at_a_time_on_one_worker(queue):
    q = queue(64, workers=1)
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


def test_capacity_and_workers_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        JobQueue(0)
    with pytest.raises(ValueError, match="at least 1 worker"):
        JobQueue(4, workers=0)


# ------------------------------------------------------------------ workers and the memory budget


def test_two_workers_by_default_really_overlap(queue):
    q = queue(8)
    assert q.workers == DEFAULT_WORKERS == 2
    # Each job waits for the other at the barrier: they complete only if both run at once.
    meeting = threading.Barrier(2, timeout=WAIT_S)
    futures = [q.submit(lambda: meeting.wait()) for _ in range(2)]
    assert sorted(f.result(WAIT_S).value for f in futures) == [0, 1]


def test_a_job_waits_while_the_budget_is_full_and_starts_when_it_frees(queue):
    q = queue(8, workers=3, budget_bytes=100 * MB)
    first, second, third = Blocker("a"), Blocker("b"), Blocker("c")
    futures = [q.submit(first, cost_bytes=40 * MB), q.submit(second, cost_bytes=40 * MB),
               q.submit(third, cost_bytes=40 * MB)]
    assert first.running.wait(WAIT_S) and second.running.wait(WAIT_S)
    time.sleep(0.1)  # a free worker, but 40 + 40 + 40 MB do not fit in 100 MB
    assert not third.running.is_set()
    assert q.admission() == {"budget_bytes": 100 * MB, "admitted_bytes": 80 * MB, "waiting_bytes": 40 * MB,
                             "running": 2, "waiting": 1, "workers": 3}
    first.release.set()
    assert third.running.wait(WAIT_S), "the freed budget did not let the waiting job start"
    assert futures[0].result(WAIT_S).value == "a"
    assert q.admission()["admitted_bytes"] == 80 * MB and q.admission()["waiting_bytes"] == 0
    second.release.set()
    third.release.set()
    assert [f.result(WAIT_S).value for f in futures] == ["a", "b", "c"]
    assert q.admitted_bytes == 0


def test_a_large_job_at_the_head_is_not_overtaken(queue):
    """Strict FIFO: a small job that would fit waits behind a large one that does not yet, so a
    stream of small jobs can never starve a large one."""
    q = queue(8, workers=3, budget_bytes=100 * MB)
    running = Blocker("running")
    large, small = Blocker("large"), Blocker("small")
    q.submit(running, cost_bytes=50 * MB)
    assert running.running.wait(WAIT_S)
    large_future = q.submit(large, cost_bytes=90 * MB)
    small_future = q.submit(small, cost_bytes=10 * MB)  # 50 + 10 would fit
    time.sleep(0.1)
    assert not large.running.is_set() and not small.running.is_set()
    running.release.set()
    assert large.running.wait(WAIT_S)
    assert small.running.wait(WAIT_S)  # 90 + 10 fit together once the first is gone
    large.release.set()
    small.release.set()
    assert large_future.result(WAIT_S).value == "large" and small_future.result(WAIT_S).value == "small"


def test_a_job_larger_than_the_whole_budget_runs_alone_rather_than_never(queue):
    q = queue(8, workers=2, budget_bytes=100 * MB)
    huge, after = Blocker("huge"), Blocker("after")
    huge_future = q.submit(huge, cost_bytes=500 * MB)
    after_future = q.submit(after, cost_bytes=1 * MB)
    assert huge.running.wait(WAIT_S)
    time.sleep(0.1)
    assert not after.running.is_set(), "nothing may start beside a job over the budget"
    huge.release.set()
    after.release.set()
    assert huge_future.result(WAIT_S).value == "huge" and after_future.result(WAIT_S).value == "after"


def test_an_exclusive_job_runs_alone_even_without_a_budget(queue):
    q = queue(8, workers=3)
    before, exclusive, after = Blocker("before"), Blocker("exclusive"), Blocker("after")
    futures = [q.submit(before), q.submit(exclusive, exclusive=True), q.submit(after)]
    assert before.running.wait(WAIT_S)
    time.sleep(0.1)
    assert not exclusive.running.is_set(), "an exclusive job waits for the running ones"
    before.release.set()
    assert exclusive.running.wait(WAIT_S)
    time.sleep(0.1)
    assert not after.running.is_set(), "nothing starts beside an exclusive job"
    exclusive.release.set()
    after.release.set()
    assert [f.result(WAIT_S).value for f in futures] == ["before", "exclusive", "after"]


def test_setting_the_budget_later_applies_to_the_jobs_that_wait(queue):
    q = queue(8, workers=2)
    assert q.budget_bytes is None
    holder = Blocker("holder")
    q.submit(holder, cost_bytes=60 * MB)
    assert holder.running.wait(WAIT_S)
    q.set_budget(100 * MB)
    waiting = Blocker("waiting")
    q.submit(waiting, cost_bytes=60 * MB)
    time.sleep(0.1)
    assert not waiting.running.is_set()
    q.set_budget(200 * MB)  # the budget growing lets it in at once
    assert waiting.running.wait(WAIT_S)
    holder.release.set()
    waiting.release.set()


def test_without_a_budget_estimates_do_not_hold_anything_back(queue):
    q = queue(8, workers=2)
    meeting = threading.Barrier(2, timeout=WAIT_S)
    futures = [q.submit(lambda: meeting.wait(), cost_bytes=10**15) for _ in range(2)]
    assert sorted(f.result(WAIT_S).value for f in futures) == [0, 1]


def test_concurrency_never_exceeds_the_budget_under_a_burst(queue):
    q = queue(64, workers=4, budget_bytes=100 * MB)
    lock = threading.Lock()
    admitted, peak = [0], [0]
    costs = [(i * 37) % 60 * MB + 10 * MB for i in range(40)]  # 10..69 MB

    def job(cost):
        with lock:
            admitted[0] += cost
            peak[0] = max(peak[0], admitted[0])
        time.sleep(0.003)
        with lock:
            admitted[0] -= cost

    futures = [q.submit(lambda c=c: job(c), cost_bytes=c) for c in costs]
    for future in futures:
        future.result(WAIT_S)
    assert 70 * MB <= peak[0] <= 100 * MB  # it did overlap, within the budget
    assert q.admission()["admitted_bytes"] == 0 and q.depth == 0


# ------------------------------------------------------------------ the watchdog


class Clock:
    """The watchdog's time, moved by the test (no waiting for a real bound to pass)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_job_running_past_the_bound_marks_the_queue_stuck_until_it_ends(queue, caplog):
    clock = Clock()
    q = queue(8, workers=1, stuck_after_s=120, clock=clock)
    release, held = blocker(q)
    behind = q.submit(lambda: "behind")  # waiting jobs do not count: only the one that holds the worker
    clock.now += 120
    assert q.stuck() is None, "at the bound, not past it"
    clock.now += 1
    stuck = q.stuck()
    assert stuck is not None
    assert (stuck.worker, stuck.running_s, stuck.bound_s) == ("gpu-worker-0", 121, 120)
    assert str(stuck) == "a job has run on gpu-worker-0 for 121 s, longer than the 120 s bound: not ready until it ends"
    clock.now += 30
    assert q.stuck().running_s == 151
    release.set()
    held.result(WAIT_S)
    assert behind.result(WAIT_S).value == "behind"
    assert q.stuck() is None, "the job that held the worker ended; the one behind it ran within the bound"
    stuck_lines = [record for record in caplog.records if "longer than the 120 s bound" in record.getMessage()]
    assert len(stuck_lines) == 1 and stuck_lines[0].levelname == "ERROR", "logged once, not at every probe"
    assert any("no longer stuck" in record.getMessage() for record in caplog.records)


def test_the_watchdog_reports_the_longest_running_of_several_workers(queue):
    clock = Clock()
    q = queue(8, workers=2, stuck_after_s=60, clock=clock)
    release_first, first = blocker(q)
    clock.now += 50
    release_second, second = blocker(q)
    clock.now += 20
    assert q.stuck().running_s == 70
    release_first.set()
    first.result(WAIT_S)
    assert q.stuck() is None, "the other job has run 20 s only"
    clock.now += 41
    assert q.stuck().running_s == 61
    release_second.set()
    second.result(WAIT_S)
    assert q.stuck() is None


def test_idle_time_counts_from_the_last_job_and_is_zero_while_one_runs(queue):
    """What the sweep asks before it gives back the transfers' pinned buffers (webui.compose)."""
    clock = Clock()
    q = queue(8, workers=1, clock=clock)
    clock.now += 40
    assert q.idle_s == 40, "from the queue's start"
    release, held = blocker(q)
    clock.now += 100
    assert q.idle_s == 0, "a job runs"
    release.set()
    held.result(WAIT_S)
    wait_until(lambda: q.depth == 0)
    clock.now += 25
    assert q.idle_s == 25, "from the job's end, not its start"


def test_without_a_bound_the_queue_is_never_stuck(queue):
    clock = Clock()
    q = queue(4, workers=1, stuck_after_s=None, clock=clock)
    release, held = blocker(q)
    clock.now += 10**6
    assert q.stuck() is None
    release.set()
    held.result(WAIT_S)


@pytest.mark.parametrize("bound", [0, -5, float("nan")])
def test_the_watchdog_bound_must_be_positive(bound):
    with pytest.raises(ValueError, match="stuck_after_s must be a positive number of seconds"):
        JobQueue(4, stuck_after_s=bound)


def test_shutdown_runs_the_queued_jobs_then_refuses_new_ones(queue):
    q = queue(8, workers=1)
    release, _ = blocker(q)
    queued = q.submit(lambda: "queued")
    stopper = threading.Thread(target=q.shutdown)
    stopper.start()
    release.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert queued.result(0).value == "queued"
    with pytest.raises(RuntimeError, match="shut down"):
        q.submit(lambda: "late")


def test_a_shutdown_after_the_drain_cancels_the_queued_jobs_and_lets_the_running_one_finish(queue):
    q = queue(4, workers=1)
    release, running = blocker(q)
    queued = [q.submit(lambda: "never") for _ in range(2)]
    stopping = threading.Thread(target=q.shutdown, kwargs={"cancel_waiting": True})
    stopping.start()
    wait_until(lambda: all(future.cancelled() for future in queued))
    assert stopping.is_alive() and not running.done(), "the running job is cut short"
    release.set()
    stopping.join(WAIT_S)
    assert not stopping.is_alive() and running.result(WAIT_S).value == "blocker" and q.depth == 0


def test_a_bounded_shutdown_returns_at_its_bound_and_leaves_the_running_job_to_the_exit(queue):
    q = queue(4, workers=1)
    release, running = blocker(q)
    started = time.monotonic()
    q.shutdown(cancel_waiting=True, timeout_s=0.2)
    assert 0.2 <= time.monotonic() - started < 2 and not running.done()
    release.set()
    assert running.result(WAIT_S).value == "blocker"


def test_at_exit_the_queued_jobs_finish_and_the_workers_stop(tmp_path):
    """A queue nobody shut down (as the app leaves it) is shut down at interpreter exit, the
    way concurrent.futures treats its executors: the job in hand finishes instead of being cut
    off by the exit, and no worker is left running into the interpreter's finalization."""
    done = tmp_path / "done"
    script = (f"import time\nfrom service.jobs import JobQueue\nq = JobQueue(4)\n"
              f"q.submit(lambda: time.sleep(0.3) or open({str(done)!r}, 'w').write('ran'))\n")
    root = Path(__file__).resolve().parents[2]
    finished = subprocess.run([sys.executable, "-c", script], cwd=root, timeout=60, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert done.read_text() == "ran"
