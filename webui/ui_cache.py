"""The UI's cache folder (--ui-cache-dir): Gradio keeps the photos people upload and the results
it shows there, serves any file in it to whoever holds its URL, and the retention sweep deletes
what is old. So the folder must hold nothing but what the service put there:

- claim() adopts only a folder that this service marked when it created it (MARKER) or one
  without a single file in it, and marks it; a folder holding anything else is refused, since
  the sweep would delete those files and Gradio would serve them;
- sweep() removes old files, and only in a folder that carries the marker;
- size_bytes() is what the folder holds; CacheUsage counts it for the UI's upload quota
  (webui.ui_guard) without a walk of the folder per upload.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lama.errors import ConfigError

log = logging.getLogger(__name__)

MARKER = ".lama-ui-cache"
MARKER_TEXT = ("This folder is the LaMa inpainting service's UI cache (--ui-cache-dir): every file in it\n"
               "is deleted once older than ui_cache_max_age_s. Keep nothing else here.\n")


class CacheFolderError(ConfigError):
    """The folder cannot be the UI's cache; the message is one line for the operator."""


def claim(folder: Path) -> None:
    """Make `folder` the UI's cache: create and mark it, or adopt it if it is marked or holds no
    file; CacheFolderError if it holds files this service did not create (or is not a folder)."""
    marker = folder / MARKER
    if marker.is_file():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        foreign = _first_file(folder)
        if foreign is not None:
            raise CacheFolderError(
                f"--ui-cache-dir {folder} holds files this service did not put there (e.g. {foreign}): "
                "the UI would serve them and the cache sweep would delete them; empty it, or choose a new "
                "or empty folder")
        marker.write_text(MARKER_TEXT)
    except OSError as error:
        raise CacheFolderError(f"--ui-cache-dir {folder} cannot be used: {error.strerror or error}") from None


def _first_file(folder: Path) -> str | None:
    """Any entry that is not a folder (empty folders left by Gradio are harmless), as a path
    relative to `folder`."""
    for path, _, names in os.walk(folder):
        if names:
            return os.path.relpath(os.path.join(path, names[0]), folder)
    return None


def sweep(folder: Path, max_age_s: float, now: float | None = None) -> int:
    """Remove every file under `folder` not modified for `max_age_s`, then the empty folders left;
    returns how many files went. Gradio's own clean-up forgets the files of a server that was
    killed. A folder without the marker is not the service's to clean: it is left alone."""
    if not (folder / MARKER).is_file():
        return 0
    now = time.time() if now is None else now
    marker = str(folder / MARKER)
    removed = 0
    for path, _, names in os.walk(folder, topdown=False):
        for name in names:
            file = os.path.join(path, name)
            if file == marker:
                continue
            try:
                stat = os.lstat(file)
                # ctime too: a copy into the cache may keep its source's old mtime.
                if now - max(stat.st_mtime, stat.st_ctime) > max_age_s:
                    os.unlink(file)
                    removed += 1
            except FileNotFoundError:
                pass
        if path != str(folder):
            try:
                if now - os.lstat(path).st_mtime > max_age_s:
                    os.rmdir(path)  # only when empty
            except OSError:
                pass
    if removed:
        log.info("UI cache: removed %d file(s) older than %.0f s from %s", removed, max_age_s, folder)
    return removed


def size_bytes(folder: Path) -> int:
    """Bytes held by the files under `folder` (files removed while it counts count 0)."""
    total = 0
    for path, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(path, name)).st_size
            except FileNotFoundError:
                pass
    return total


class CacheUsage:
    """What the folder holds, for the upload quota, counted without walking it at every upload.

    A walk stats every file, and the folder keeps every upload and result until the sweep: a
    thousand files cost the upload route milliseconds, and a busy half hour's ten thousand tens of them
    (python tools/ui_upload_cost.py, docs/BENCHMARKS.md). So a walk serves the uploads of the next
    `fresh_s` seconds, and what was admitted since it began counts on top: while it is received,
    and once received until a walk sees it in the folder (an upload that failed counts until the
    next walk: never fewer bytes than the folder holds, but files written beside the uploads,
    the editor's results, are seen at the next walk only)."""

    def __init__(self, folder: Path, fresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.folder, self.fresh_s, self.clock = folder, fresh_s, clock
        self._walking = threading.Lock()  # one walk at a time, and admissions wait for it
        self._counts = threading.Lock()  # the counters alone: never held across a walk
        self._walked, self._walked_at = 0, -math.inf  # bytes the last walk found, and when it began
        self._receiving = 0  # bytes of admitted uploads not yet received
        self._received = 0  # bytes of uploads received since the last walk began

    def admit(self, size: int, limit: int) -> tuple[bool, int]:
        """(whether an upload of `size` bytes fits under `limit`, and counts from now on; the
        bytes held before it). Blocking (it may walk the folder): call it in a thread."""
        with self._walking:
            if self.clock() - self._walked_at >= self.fresh_s:
                self._walk()
            with self._counts:
                held = self._walked + self._receiving + self._received
                if held + size > limit:
                    return False, held
                self._receiving += size
                return True, held

    def received(self, size: int) -> None:
        """The upload admitted with `size` is over: in the folder, or failed."""
        with self._counts:
            self._receiving -= size
            self._received += size

    def _walk(self) -> None:
        with self._counts:
            counted = self._received  # the walk below sees these (or they failed)
        began = self.clock()
        total = size_bytes(self.folder)
        with self._counts:
            self._walked, self._walked_at = total, began
            self._received -= counted
