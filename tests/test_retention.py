"""What the service keeps on disk and for how long: outputs/ retention (keep N days or N GB,
oldest first, never a file being written, never a file it did not write) and the UI's upload
cache, which Gradio serves to whoever holds a file's URL and which must therefore go away."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from reliability import record
from test_api import encode, make_case, make_settings, serve, service_of, wait_until
from webui import outputs as outputs_module
from webui.outputs import OutputStore, Retention, sweep_folder

DAY = 86400
NOW = time.time()


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


def test_temporary_files_go_only_once_stale(tmp_path):
    store = OutputStore(tmp_path, keep_bytes=1)
    writing = put(tmp_path, "2026-11-26", f".{result_name(1)}.0123abcd.tmp", 500, 5)
    stale = put(tmp_path, "2026-11-26", f".{result_name(2)}.89abcdef.tmp", 500, 2 * outputs_module.TEMP_GRACE_S)
    swept = store.sweep(NOW)
    assert writing.exists() and not stale.exists()
    assert swept.removed_temp_files == 1


def test_empty_day_folders_go_once_no_longer_written(tmp_path):
    store = OutputStore(tmp_path, keep_days=1)
    put(tmp_path, "2026-01-01", result_name(1), 10, 30 * DAY)
    today = tmp_path / time.strftime("%Y-%m-%d")
    today.mkdir()  # a save may be about to write into it
    store.sweep(NOW)
    # Empty now, but just written to (the removal): kept for the moment.
    assert (tmp_path / "2026-01-01").is_dir()
    store.sweep(time.time() + 2 * outputs_module.TEMP_GRACE_S)
    assert not (tmp_path / "2026-01-01").exists()
    assert today.is_dir(), "today's folder is where the next save writes"


def test_start_up_removes_temporary_files_from_before_it_started(tmp_path):
    store = OutputStore(tmp_path)
    left = put(tmp_path, "2026-11-26", f".{result_name(1)}.0123abcd.tmp", 500, 3)  # a kill -9 3 s ago
    fresh = put(tmp_path, "2026-11-26", f".{result_name(2)}.89abcdef.tmp", 500, -5)
    assert store.remove_temp_files(modified_before=NOW) == 1
    assert not left.exists() and fresh.exists()


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
                store.save(b"\x89PNG" + os.urandom(2000), "png")
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
        saved = [store.save(b"y" * 1000, "png") for _ in range(8)]
        started = time.monotonic()
        wait_until(lambda: _bytes_of_pngs(tmp_path) <= 5000, timeout=5, what="the budget restored")
        waited = time.monotonic() - started
    finally:
        retention.stop()
    assert (tmp_path / saved[-1]).exists()  # the newest stay
    record("Retention: background sweep", "time to get back under budget after saves exceed it",
           f"{waited:.2f} s", "≤ 5 s (interval 1 h: woken by the save)")


def test_the_settings_reach_the_store(tiny_dir, tmp_path):
    settings = make_settings(tiny_dir, tmp_path, "--outputs-keep-days", "2.5", "--outputs-keep-gb", "0.5",
                             "--ui-cache-dir", str(tmp_path / "cache"))
    with serve(settings, wait_ready=False) as client:
        store = service_of(client).outputs
        assert (store.keep_days, store.keep_bytes) == (2.5, 500_000_000)
        assert client.app.state.retention.cache_dir == (tmp_path / "cache").resolve()


# ------------------------------------------------------------------ the UI's upload cache


def test_sweep_folder_removes_what_is_older_than_the_age(tmp_path):
    old = tmp_path / "abc" / "photo.png"
    old.parent.mkdir()
    old.write_bytes(b"p")
    assert sweep_folder(tmp_path, 60, now=time.time() + 30) == 0 and old.exists()
    assert sweep_folder(tmp_path, 60, now=time.time() + 61) == 1 and not old.exists()


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


def test_the_upload_cache_of_a_killed_server_is_swept_by_the_next(tiny_dir, tmp_path):
    # Gradio forgets what a killed server cached; the retention thread sweeps the whole folder.
    cache = tmp_path / "cache"
    leftover = cache / ("f" * 64) / "photo.png"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"someone's photo")
    settings = make_settings(tiny_dir, tmp_path, "--ui-cache-dir", str(cache), "--ui-cache-max-age-s", "1")
    time.sleep(1.1)
    with serve(settings, wait_ready=False):
        wait_until(lambda: not leftover.exists(), timeout=10, what="the leftover swept at start-up")
