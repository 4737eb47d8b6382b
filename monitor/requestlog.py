"""One record per repair request: a rotated JSON-lines file for later, the last few in memory for now.

The file (logs/requests.jsonl) is what an operator greps after an incident; the memory copy is what
the dashboard and GET /api/v1/monitor serve without reading the disk. A record: monitor/records.py's
RequestRecord; what is learnt after it was written (the time the editor's user waited, which only
the browser knows) is added with amend().
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from monitor.jsonl import RotatingJsonl
from monitor.records import RequestRecord, UserWait


class RequestLog:
    """Thread-safe: requests finish on many threads. `path=None` keeps records in memory only."""

    def __init__(self, path: Path | None, max_bytes: int = 10 * 2**20, backups: int = 5, keep: int = 1000):
        self._file = RotatingJsonl(Path(path), max_bytes, backups) if path is not None else None
        self._records: deque[RequestRecord] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def record(self, rec: RequestRecord) -> None:
        """Never raises for a bad disk (the request already succeeded or failed on its own); a
        record without `ts` gets the current time, so that recent(since) can place it."""
        rec = dict(rec)  # type: ignore[assignment]  # a copy: the caller may reuse its dict
        rec.setdefault("ts", time.time())
        with self._lock:
            self._records.append(rec)
        if self._file is not None:
            self._file.write(rec)

    def amend(self, record_id: str, waited: UserWait) -> bool:
        """Add the user's wait to the record `record_id`. In memory the record itself changes; the
        file, whose lines are never rewritten, gets an amendment line {"ts", "amends": record_id,
        "waited"}. False (and nothing written) when the record is no longer kept in memory."""
        with self._lock:
            for index in range(len(self._records) - 1, -1, -1):  # the newest first: the usual case
                if self._records[index]["id"] == record_id:
                    self._records[index] = {**self._records[index], "waited": waited}
                    break
            else:
                return False
        if self._file is not None:
            self._file.write({"ts": time.time(), "amends": record_id, "waited": waited})
        return True

    def recent(self, since: float | None = None, limit: int | None = None) -> list[RequestRecord]:
        """Records with ts > since in the order recorded; with `limit`, only the last `limit` of them."""
        with self._lock:
            records = list(self._records)
        if since is not None:
            records = [rec for rec in records if rec["ts"] > since]
        return records if limit is None else records[max(len(records) - limit, 0):]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
