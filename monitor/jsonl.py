"""Size-rotated JSON-lines files: the monitor's logs must never fill the disk.

The rotation is logging's RotatingFileHandler, used directly rather than through a named
logger: nothing propagates to the application log, and no logger outlives its writer in
logging's global registry (tests make many).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """For json.dumps: numpy scalars (a width from .shape, a float32 ratio) become numbers."""
    return value.item() if hasattr(value, "item") else str(value)


class RotatingJsonl(logging.handlers.RotatingFileHandler):
    """Appends one JSON object per line to `path`; past `max_bytes` the file becomes `path.1`, and so
    on up to `path.<backups>`, the oldest being deleted. So the total stays under about
    (backups + 1) × max_bytes.

    A failing disk must not fail the caller (the monitor stays out of the data path): write errors
    are logged once when they start and once when they stop, not on every line.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._failing = False
        self._error: BaseException | None = None

    def write(self, value: Any) -> None:
        line = json.dumps(value, separators=(",", ":"), default=_plain)
        with self.lock:  # reentrant: handle() takes it too; it also guards the error state
            self._error = None
            self.handle(logging.makeLogRecord({"msg": line}))
            if self._error is not None and not self._failing:
                log.warning("cannot write %s: %s (further errors are not logged until it works again)",
                            self.baseFilename, self._error)
            elif self._error is None and self._failing:
                log.info("writing %s works again", self.baseFilename)
            self._failing = self._error is not None

    def handleError(self, record: logging.LogRecord) -> None:
        """Called by emit() inside its except block; remembered instead of printing a traceback."""
        self._error = sys.exc_info()[1]
