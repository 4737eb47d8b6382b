"""What the service keeps on disk and for how long: outputs/ retention (keep N days or N GB,
oldest first, never a file being written, never a file it did not write) and the UI's upload
cache, which Gradio serves to whoever holds a file's URL and which must therefore go away."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gradio.route_utils import delete_files_created_by_app
from support.liveserver import LiveServer
from support.reliability import record
from support.app import encode, make_case, make_settings, serve, service_of, wait_until

from lama import files
from lama.output_formats import OUTPUT_FORMATS
from service import storage as outputs_module
from webui import ui_cache
from service.storage import OutputStore, Retention

DAY = 86400
NOW = time.time()
PNG = OUTPUT_FORMATS["png"]


def put(root: Path, day: str, name: str, size: int, age_s: float) -> Path:
    """A file under root/day/name of `size` bytes, last modified `age_s` ago."""
    path = root / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def result_name(index: int) -> str:
    return f"{index:06d}-{index:012x}.png"


def names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ the sweep


def test_results_older_than_keep_days_go(tmp_path):
    store = OutputStore(tmp_path, keep_days=7)
    old = [put(tmp_path, "2026-11-10", result_name(i), 100, (8 + i) * DAY) for i in range(3)]
    young = [put(tmp_path, "2026-11-25", result_name(10 + i), 100, i * DAY) for i in range(3)]
    swept = store.sweep(NOW)
    assert not any(p.exists() for p in old) and all(p.exists() for p in young)
    assert (swept.removed_files, swept.kept_files) == (3, 3)
    record("Retention: keep 7 days", "results older than 7 days removed / younger kept", "3 / 3 of 3 / 3",
           "all / all")


def test_beyond_keep_bytes_the_oldest_go_first(tmp_path):
    store = OutputStore(tmp_path, keep_bytes=4500)
    # 10 results of 1000 bytes, the first the oldest; spread over two days.
    paths = [put(tmp_path, f"2026-11-2{i // 5}", result_name(i), 1000, 1000 - i) for i in range(10)]
    swept = store.sweep(NOW)
    assert [p.exists() for p in paths] == [False] * 6 + [True] * 4
    assert (swept.removed_bytes, swept.kept_bytes) == (6000, 4000)
    record("Retention: keep N GB", "bytes kept under a 4500-byte budget (10 × 1000-byte results)",
           f"{swept.kept_bytes} (the 4 newest)", "≤ 4500, oldest removed first")


def test_zero_keeps_everything(tmp_path):
    paths = [put(tmp_path, "2020-01-01", result_name(i), 10_000, 3000 * DAY) for i in range(5)]
    assert OutputStore(tmp_path).sweep(NOW).removed_files == 0
    assert all(p.exists() for p in paths)


def test_files_the_service_did_not_write_are_never_touched(tmp_path):
    foreign = [put(tmp_path, ".", "notes.txt", 10, 900 * DAY),
               put(tmp_path, "2026-01-01", "holiday.jpg", 10, 900 * DAY),
               put(tmp_path, "2026-01-01", "README", 10, 900 * DAY),
               put(tmp_path, "photos", result_name(1), 10, 900 * DAY),  # our pattern, not a day folder
               put(tmp_path, "2026-01-01", ".hidden", 10, 900 * DAY)]
    ours = put(tmp_path, "2026-01-01", result_name(2), 10, 900 * DAY)
    OutputStore(tmp_path, keep_days=1, keep_bytes=1).sweep(NOW)
    assert all(p.exists() for p in foreign) and not ours.exists()


@contextlib.contextmanager
def writer_holding(path: Path):
    """Another process (a replica sharing the folder, or a server mid-write) holding the lock of
    the temporary file at `path`, as write_bytes_atomic does; yields the process."""
    code = ("import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'r+b'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True); time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_temporary_file_goes_once_its_writer_is_gone_whatever_its_age(tmp_path):
    """A lock decides, not a clock: a file being written is kept however old it looks, one whose
    writer was killed goes however new it looks (another replica's clock, a restart within the second)."""
    store = OutputStore(tmp_path, keep_bytes=1)
    writing = put(tmp_path, "2026-11-26", f".{result_name(1)}.0123abcd.tmp", 500, 30 * DAY)
    abandoned = put(tmp_path, "2026-11-26", f".{result_name(2)}.89abcdef.tmp", 500, -3600)  # mtime in the future
    with writer_holding(writing), writer_holding(abandoned) as killed:
        killed.kill()
        killed.wait()
        swept = store.sweep(NOW)
        assert writing.exists() and not abandoned.exists()
        assert swept.removed_temp_files == 1
    assert store.remove_temp_files() == 1 and not writing.exists()  # its writer gone too now


def test_a_write_survives_a_sweep_that_took_its_new_file_for_abandoned(tmp_path, monkeypatch):
    """Between creating its temporary file and locking it, a write is unprotected: a sweep in
    that instant removes the file; the write notices and starts again under a new name."""
    real_flock, taken = files.fcntl.flock, []

    def sweep_first(f, operation):
        if not taken:  # the writer's first lock: a sweep (which locks too) gets in before it
            taken.append(None)
            (path,) = tmp_path.glob(".*.tmp")
            taken[0] = files.remove_if_abandoned(path)
        real_flock(f, operation)

    monkeypatch.setattr(files.fcntl, "flock", sweep_first)
    files.write_bytes_atomic(tmp_path / "result.png", b"all of it")
    assert taken == [True]
    assert (tmp_path / "result.png").read_bytes() == b"all of it" and not list(tmp_path.glob(".*.tmp"))


def test_empty_day_folders_go_once_no_longer_written(tmp_path):
    store = OutputStore(tmp_path, keep_days=1)
    put(tmp_path, "2026-01-01", result_name(1), 10, 30 * DAY)
    today = tmp_path / time.strftime("%Y-%m-%d")
    today.mkdir()  # a save may be about to write into it
    store.sweep(NOW)
    # Empty now, but just written to (the removal): kept for the moment.
    assert (tmp_path / "2026-01-01").is_dir()
    store.sweep(time.time() + 2 * outputs_module.FOLDER_GRACE_S)
    assert not (tmp_path / "2026-01-01").exists()
    assert today.is_dir(), "today's folder is where the next save writes"


def test_a_killed_servers_temporary_file_is_gone_after_an_immediate_restart_every_time(tiny_dir, tmp_path):
    """kill -9 the server while a write holds its temporary file (here a writer process killed with
    it: the server's own writes are too quick to catch), restart at once: the file is gone when the
    new server is ready, every time. A write in progress elsewhere (another replica) is left alone.
    The files' mtimes are in the future: the old rule (older than the process's start) kept them."""
    restarts, removed = 3, 0
    day = time.strftime("%Y-%m-%d")
    elsewhere = put(tmp_path / "outputs", day, f".{result_name(0)}.00000000.tmp", 10, -60)
    with writer_holding(elsewhere) as replica, contextlib.ExitStack() as servers:
        server = servers.enter_context(LiveServer.start(tiny_dir, tmp_path, log_name="server-0.log"))
        for attempt in range(1, restarts + 1):
            left = put(tmp_path / "outputs", day, f".{result_name(attempt)}.{attempt:08x}.tmp", 1000, -60)
            with writer_holding(left) as writer:
                server.process.kill()
                writer.kill()
                server.process.wait()
                writer.wait()
            # The restarted server is the one killed next time round.
            server = servers.enter_context(LiveServer.start(tiny_dir, tmp_path, log_name=f"server-{attempt}.log"))
            removed += not left.exists()
        assert replica.poll() is None and elsewhere.exists()
    assert removed == restarts
    record("Retention: kill -9 mid-write", "temporary files of a killed writer left after an immediate restart "
           f"({restarts} restarts; mtimes in the future)", f"0 of {restarts}", "0, every time (a lock decides)")


def test_saving_while_sweeping_never_loses_a_save(tmp_path):
    """The sweep runs beside the writers with a budget smaller than one result: every save still
    succeeds (the file being written is never removed, a removed day folder is re-created) and
    never leaves a temporary file."""
    store = OutputStore(tmp_path, keep_bytes=1)
    stop, failures, sweeps = threading.Event(), [], [0]

    def sweeper():
        while not stop.is_set():
            store.sweep()
            sweeps[0] += 1

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        for _ in range(300):
            try:
                store.save(b"\x89PNG" + os.urandom(2000), PNG)
            except OSError as error:
                failures.append(error)
    finally:
        stop.set()
        thread.join()
    assert failures == [] and sweeps[0] > 1
    assert not list(tmp_path.rglob("*.tmp"))
    record("Retention: saves during sweeps", "saves failed while a sweep ran continuously (300 saves)",
           f"{len(failures)} ({sweeps[0]} sweeps)", "0")


def _bytes_of_pngs(folder: Path) -> int:
    """Sizes of the PNGs below `folder`; one the sweep deletes between listing and stat counts 0."""
    total = 0
    for path in folder.rglob("*.png"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_the_retention_thread_runs_early_when_saves_exceed_the_budget(tmp_path):
    store = OutputStore(tmp_path, keep_bytes=5000)
    retention = Retention(store, interval_s=3600, min_gap_s=0.01)
    retention.start()
    try:
        time.sleep(0.05)  # the first sweep, at start
        saved = [store.save(b"y" * 1000, PNG) for _ in range(8)]
        started = time.monotonic()
        wait_until(lambda: _bytes_of_pngs(tmp_path) <= 5000, timeout=5, what="the budget restored")
        waited = time.monotonic() - started
    finally:
        retention.stop()
    assert (tmp_path / saved[-1]).exists()  # the newest stay
    record("Retention: background sweep", "time to get back under budget after saves exceed it",
           f"{waited:.2f} s", "≤ 5 s (interval 1 h: woken by the save)")


def test_a_failing_sweep_step_is_logged_and_the_others_still_run(tmp_path, caplog):
    """A step that fails (a disk problem, a bug) must not stop the outputs' sweep, the steps after
    it, or the thread that runs them every minute."""
    store = OutputStore(tmp_path, keep_bytes=1000)
    ran = []

    def broken():
        raise ValueError("a step's bug")

    retention = Retention(store, [broken, lambda: ran.append("after")], interval_s=0.02, min_gap_s=0.01)
    retention.start()
    try:
        wait_until(lambda: len(ran) >= 2, timeout=5, what="two sweeps, each past the failing step")
        saved = [store.save(b"z" * 600, PNG) for _ in range(3)]
        wait_until(lambda: _bytes_of_pngs(tmp_path) <= 1000, timeout=5, what="the outputs swept")
    finally:
        retention.stop()
    assert (tmp_path / saved[-1]).exists()
    assert "retention sweep: test_a_failing_sweep_step_is_logged_and_the_others_still_run.<locals>.broken " \
           "failed: ValueError: a step's bug" in caplog.text


def test_the_settings_reach_the_store(tiny_dir, tmp_path):
    settings = make_settings(tiny_dir, tmp_path, "--outputs-keep-days", "2.5", "--outputs-keep-gb", "0.5",
                             "--ui-cache-dir", str(tmp_path / "cache"))
    with serve(settings, wait_ready=False) as client:
        store = service_of(client).outputs
        assert (store.keep_days, store.keep_bytes) == (2.5, 500_000_000)
        assert client.app.state.retention.also_sweep[0].args[0] == (tmp_path / "cache").resolve()


# ------------------------------------------------------------------ the UI's upload cache


def test_the_cache_sweep_removes_what_is_older_than_the_age(tmp_path):
    ui_cache.claim(tmp_path)
    old = tmp_path / "abc" / "photo.png"
    old.parent.mkdir()
    old.write_bytes(b"p")
    assert ui_cache.sweep(tmp_path, 60, now=time.time() + 30) == 0 and old.exists()
    assert ui_cache.sweep(tmp_path, 60, now=time.time() + 61) == 1 and not old.exists()
    assert (tmp_path / ui_cache.MARKER).is_file(), "the marker is not swept"


def test_the_cache_sweep_leaves_a_folder_the_service_did_not_mark_alone(tmp_path):
    someone_elses = tmp_path / "shared" / "report.pdf"
    someone_elses.parent.mkdir()
    someone_elses.write_bytes(b"%PDF")
    assert ui_cache.sweep(tmp_path, 60, now=time.time() + 3600) == 0 and someone_elses.exists()


def test_a_new_or_empty_folder_is_claimed_and_marked(tmp_path):
    ui_cache.claim(tmp_path / "new")
    (tmp_path / "empty" / "left-by-gradio").mkdir(parents=True)  # empty folders hold nothing of anyone's
    ui_cache.claim(tmp_path / "empty")
    for folder in ("new", "empty"):
        assert (tmp_path / folder / ui_cache.MARKER).is_file()
    (tmp_path / "new" / "abc").mkdir()
    (tmp_path / "new" / "abc" / "photo.png").write_bytes(b"p")
    ui_cache.claim(tmp_path / "new")  # marked: its files are the service's


def test_a_folder_holding_other_files_is_refused_with_one_line(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(ui_cache.CacheFolderError) as raised:
        ui_cache.claim(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "docs/notes.txt" in message and str(tmp_path) in message
    assert not (tmp_path / ui_cache.MARKER).exists() and (tmp_path / "docs" / "notes.txt").exists()


def test_an_uploaded_file_is_deleted_after_the_configured_age(tiny_dir, tmp_path):
    age_s = 2
    cache = tmp_path / "cache"
    settings = make_settings(tiny_dir, tmp_path, "--ui-cache-dir", str(cache), "--ui-cache-max-age-s", str(age_s))
    with serve(settings, wait_ready=False) as client:
        image, _ = make_case()
        uploaded = client.post("/gradio_api/upload", files={"files": ("photo.png", encode(image), "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        (path,) = uploaded.json()
        path = Path(path)
        assert path.is_relative_to(cache.resolve()), "uploads must go to the app's own cache folder"
        assert client.get(f"/gradio_api/file={path}").status_code == 200
        started = time.monotonic()
        wait_until(lambda: not path.exists(), timeout=age_s + 10, what="the upload deleted")
        gone_after = time.monotonic() - started
        assert client.get(f"/gradio_api/file={path}").status_code in (403, 404)
    record("UI cache: uploaded file", "an upload no longer exists or is served after",
           f"{gone_after:.1f} s (age {age_s} s, checked every 1 s)", f"≤ {age_s + 3} s (age + check + 2 s slack)")
    assert gone_after <= age_s + 3


def test_the_service_s_sweep_leaves_gradio_s_files_to_gradio_s_clean_up(tiny_dir, tmp_path):
    """Gradio forgets the path of a cached file only where its own clean-up removed the file: one
    the service's sweep removed first stayed in its set of paths for good, looked for again at each
    of its rounds. The service's sweep, there for what Gradio misses, waits two of those rounds
    longer; Gradio's clean-up then removes its own files, and forgets them."""
    cache = tmp_path / "cache"
    settings = make_settings(tiny_dir, tmp_path, "--ui-cache-dir", str(cache), "--ui-cache-max-age-s", "600")
    with serve(settings, wait_ready=False) as client:
        gradio_app = next(route.app for route in client.app.routes if hasattr(getattr(route, "app", None), "get_blocks"))
        every_s, age_s = gradio_app.get_blocks().delete_cache
        (step,) = (step for step in client.app.state.retention.also_sweep if getattr(step, "func", None) is ui_cache.sweep)
        assert step.args == (cache.resolve(), age_s + 2 * every_s) and (every_s, age_s) == (60, 600)
        # Gradio's clean-up, as it runs, removes what it cached and forgets it.
        uploaded = client.post("/gradio_api/upload", files={"files": ("a.png", encode(make_case()[0]), "image/png")})
        (path,) = uploaded.json()
        assert path in gradio_app.get_blocks().upload_file_set
        delete_files_created_by_app(gradio_app.get_blocks(), age=None)
        assert not Path(path).exists() and path not in gradio_app.get_blocks().upload_file_set


def test_the_upload_cache_of_a_killed_server_is_swept_by_the_next(tiny_dir, tmp_path):
    # Gradio forgets what a killed server cached; the retention thread sweeps the whole folder.
    cache = tmp_path / "cache"
    ui_cache.claim(cache)  # the killed server created it
    leftover = cache / ("f" * 64) / "photo.png"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"someone's photo")
    settings = make_settings(tiny_dir, tmp_path, "--ui-cache-dir", str(cache), "--ui-cache-max-age-s", "1")
    time.sleep(3.1)  # the service's sweep: Gradio's age (1 s) and two of its rounds (1 s each)
    with serve(settings, wait_ready=False):
        wait_until(lambda: not leftover.exists(), timeout=10, what="the leftover swept at start-up")
