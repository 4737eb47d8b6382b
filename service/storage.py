"""Where repaired images are kept: outputs/YYYY-MM-DD/<time>-<random>-<stem>_repaired.<ext>,
written atomically, and how long they stay there.

Names are generated here. The upload's file name contributes only its stem, reduced to ASCII
letters, digits, _ . - (no separator, no leading dot) and cut to MAX_STEM_CHARS, after a
prefix of the time and 48 random bits: a request cannot choose a folder or overwrite a file,
and whoever browses the folder still finds holiday.jpg's result by its name. A crash mid-write
leaves at most a hidden temporary file (`.<name>.<hex>.tmp`) that write_bytes_atomic removes on
error, and that start-up or the retention sweep removes after a kill -9: one whose writer's
lock is free (lama.files), whichever process wrote it.

Retention (`keep_days`, `keep_bytes`; 0 = unlimited): the oldest results go first. A sweep only
ever touches what this store wrote (day folders and result names of its own pattern, and its
abandoned temporary files), so pointing --outputs-dir at a folder holding other files cannot
delete them, and a file being written is never removed.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lama.files import TEMP_NAME, remove_if_abandoned, write_bytes_atomic
from lama.output_formats import OUTPUT_FORMATS, OutputFormat, result_file_name

log = logging.getLogger(__name__)

DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")
_UNIQUE_PREFIX = re.compile(r"\d{6}-[0-9a-f]{12}-(.+)")  # what save() puts before a result's name
# What this store writes (and so what retention may delete). The name part is optional: results
# saved before results were named after their upload have none.
RESULT_NAME = re.compile(r"\d{6}-[0-9a-f]{12}(?:-[A-Za-z0-9_.-]+)?\.(?:%s)"
                         % "|".join(fmt.extension for fmt in OUTPUT_FORMATS.values()))
MAX_STEM_CHARS = 120  # with the prefix and suffix, far below a file name's 255 bytes
DEFAULT_STEM = "photo"  # for an upload without a usable name
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# An empty day folder written to this recently may be one a save is about to write into.
FOLDER_GRACE_S = 60.0


@dataclass
class SweepResult:
    removed_files: int = 0
    removed_bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    removed_temp_files: int = 0


def result_name(upload_name: object, fmt: OutputFormat) -> str:
    """'holiday.JPG' -> 'holiday_repaired.jpg': what a result is called, for downloads and (after
    a unique prefix) on disk. Only the last path component's stem of `upload_name` counts."""
    name = upload_name.replace("\\", "/").rsplit("/", 1)[-1] if isinstance(upload_name, str) else ""
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    # ASCII (accents dropped, 'Müller' -> 'Muller'): the name also travels in HTTP headers.
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("_", stem)[:MAX_STEM_CHARS].strip("._-") or DEFAULT_STEM
    return result_file_name(stem, fmt)


def download_name(saved_as: str) -> str:
    """What a saved result is called when downloaded: its file name without the unique prefix
    ('2026-12-02/104512-1a2b3c4d5e6f-holiday_repaired.jpg' -> 'holiday_repaired.jpg'). A result
    saved before names carried the upload's stem keeps its whole file name."""
    name = saved_as.rsplit("/", 1)[-1]
    named = _UNIQUE_PREFIX.fullmatch(name)
    return named.group(1) if named else name


class OutputStore:
    def __init__(self, root: Path, keep_days: float = 0, keep_bytes: int = 0):
        self.root = Path(root)
        self.keep_days = keep_days
        self.keep_bytes = keep_bytes
        self._bytes = 0  # what the last sweep kept plus what was saved since: wakes the sweeper early
        self.over_budget = threading.Event()

    @staticmethod
    def name_for(fmt: OutputFormat, upload_name: str | None = None) -> str:
        """A new name, relative to the root, for a result in `fmt` of the upload called `upload_name`
        (e.g. '2026-11-26/201503-1a2b3c4d5e6f-holiday_repaired.jpg'): random, so never taken."""
        now = datetime.datetime.now()
        return f"{now:%Y-%m-%d}/{now:%H%M%S}-{secrets.token_hex(6)}-{result_name(upload_name, fmt)}"

    def save(self, data: bytes, fmt: OutputFormat, upload_name: str | None = None, named: str | None = None) -> str:
        """Write `data`, a result in `fmt` of the upload called `upload_name`, under `named` (from
        `name_for`; a new name when None); returns its name relative to the root."""
        day, _, name = (named or self.name_for(fmt, upload_name)).partition("/")
        folder = self.root / day
        for attempt in (1, 2):
            folder.mkdir(parents=True, exist_ok=True)
            try:
                write_bytes_atomic(folder / name, data)
                break
            except FileNotFoundError:
                # The sweep removed the (empty) day folder between mkdir and the write: once more.
                if attempt == 2:
                    raise
        self._bytes += len(data)
        if self.keep_bytes and self._bytes > self.keep_bytes:
            self.over_budget.set()
        return f"{folder.name}/{name}"

    # ------------------------------------------------------------------ retention

    def _days(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.root) as entries:
                return [entry for entry in entries
                        if DAY_FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):  # nothing saved yet, or saving cannot work anyway
            return []

    def remove_temp_files(self) -> int:
        """Remove the temporary files whose writer is gone (killed mid-write: its lock is free),
        whichever process wrote them; returns how many. Files being written stay."""
        removed = 0
        for day in self._days():
            with os.scandir(day.path) as entries:
                for entry in entries:
                    if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        removed += remove_if_abandoned(entry.path)
        if removed:
            log.info("outputs: removed %d temporary file(s) left by an interrupted write", removed)
        return removed

    def sweep(self, now: float | None = None) -> SweepResult:
        """Apply the retention: results older than keep_days, then the oldest until the rest fit
        in keep_bytes; stale temporary files; empty day folders no longer written to."""
        now = time.time() if now is None else now
        result = SweepResult()
        result.removed_temp_files = self.remove_temp_files()
        files: list[tuple[float, str, int]] = []
        days = self._days()
        for day in days:
            with os.scandir(day.path) as entries:
                for entry in entries:
                    if RESULT_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        try:
                            stat = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        files.append((stat.st_mtime, entry.path, stat.st_size))
        files.sort()
        total = sum(size for _, _, size in files)
        oldest_kept = now - self.keep_days * 86400
        index = 0
        for mtime, path, size in files:
            if not ((self.keep_days and mtime < oldest_kept) or (self.keep_bytes and total > self.keep_bytes)):
                break
            try:
                os.unlink(path)
                result.removed_files += 1
                result.removed_bytes += size
            except FileNotFoundError:
                pass
            total -= size
            index += 1
        result.kept_files, result.kept_bytes = len(files) - index, total
        self._bytes = total
        # Empty day folders go, except today's and yesterday's (around midnight), into which a
        # save may be about to write, and any written to within the last minute.
        today = datetime.date.fromtimestamp(now)
        current = {f"{today:%Y-%m-%d}", f"{today - datetime.timedelta(days=1):%Y-%m-%d}"}
        for day in days:
            try:
                if day.name not in current and now - day.stat(follow_symlinks=False).st_mtime > FOLDER_GRACE_S:
                    os.rmdir(day.path)  # only when empty
            except OSError:
                pass
        if result.removed_files:
            log.info("outputs retention: removed %d result(s), %.1f MB; kept %d, %.1f MB (keep %s days, %s GB)",
                     result.removed_files, result.removed_bytes / 1e6, result.kept_files, result.kept_bytes / 1e6,
                     self.keep_days or "all", f"{self.keep_bytes / 1e9:g}" if self.keep_bytes else "all")
        return result


def _step_name(step: Callable[[], object]) -> str:
    """A sweep step's name for the log (a functools.partial names the function it wraps)."""
    function = getattr(step, "func", step)
    return getattr(function, "__qualname__", repr(function))


class Retention:
    """A daemon thread that sweeps the outputs every `interval_s`, and early when saves push them
    over their byte budget (at most every `min_gap_s`). `also_sweep` are further sweeps the
    composition root hands in (the web UI's upload cache), so storage knows nothing of the UI."""

    def __init__(self, store: OutputStore, also_sweep: Sequence[Callable[[], object]] = (),
                 interval_s: float = 60.0, min_gap_s: float = 5.0):
        self.store, self.also_sweep = store, tuple(also_sweep)
        self.interval_s, self.min_gap_s = interval_s, min_gap_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> None:
        """Each step in turn; one that fails is logged and the others still run: a disk problem,
        or any other, must neither end the thread nor stop the outputs from being swept."""
        for step in (self.store.sweep, *self.also_sweep):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - see above
                log.warning("retention sweep: %s failed: %s: %s", _step_name(step), type(error).__name__, error)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outputs-retention", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.store.over_budget.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.store.over_budget.clear()
            self.sweep()
            if self._stop.wait(self.min_gap_s):
                return
            self.store.over_budget.wait(max(0.0, self.interval_s - self.min_gap_s))
