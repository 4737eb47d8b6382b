"""Collecting the server's own view during the run: samples and request records.

The service keeps samples in a ring buffer (the last hour) and a bounded list of recent
request records, so a long run is polled as it goes rather than read once at the end.
Polls overlap (a request record is written when the request ends, possibly after a
later sample) and are merged by sample timestamp and record id.

Times stay on the server's clock; `offset_s` (server minus client, estimated from the
`now` of each answer) maps the client's phase boundaries onto it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from loadreport.client import MONITOR_PATH, ReportError, ServiceClient

POLL_S = 30.0
# How far back each poll reaches before the newest sample already held: a record is
# stamped when it is written, which can trail the samples around it; the overlap is
# merged away, so a generous margin costs only bytes.
OVERLAP_S = 120.0
BASELINE_S = 5.0  # samples from just before the run: the resting state the first phase is compared with


class MonitorCollector:
    def __init__(self, client: ServiceClient, poll_s: float = POLL_S):
        self.client = client
        self.poll_s = poll_s
        self.interval_s: float | None = None  # the server's sampling interval
        self.offset_s = 0.0
        self.poll_errors: list[str] = []
        self._samples: dict[float, dict[str, Any]] = {}
        self._requests: dict[str, dict[str, Any]] = {}
        self._since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def first_poll(self) -> None:
        """The check that this is the service, and the start of collection; raises ReportError."""
        requested = time.time()
        exchange = self.client.get_json(MONITOR_PATH, {"since": requested - BASELINE_S})
        if exchange.status is None:
            raise ReportError(f"cannot reach {self.client.base_url}{MONITOR_PATH}: {exchange.transport_error}")
        if exchange.status == 401:
            raise ReportError(f"{self.client.base_url} wants an API token: pass --api-token or set LAMA_API_TOKEN")
        if exchange.status == 404:
            raise ReportError(f"{self.client.base_url} has no {MONITOR_PATH}: it is not this service, "
                              "or a version without the resource monitor")
        body = exchange.json()
        if exchange.status != 200 or not _is_monitor_answer(body):
            raise ReportError(f"{self.client.base_url}{MONITOR_PATH} answered {exchange.status} without the "
                              "monitor's JSON (now, interval_s, samples, requests): not this service?")
        self._merge(body, requested, exchange.seconds)
        self._since = body["now"] - BASELINE_S

    def poll(self) -> None:
        """One poll; a failure is noted (the service may be down) and the next poll tries again."""
        since = self._since
        with self._lock:
            if self._samples:
                since = max(since or 0.0, max(self._samples) - OVERLAP_S)
        requested = time.time()
        exchange = self.client.get_json(MONITOR_PATH, {"since": since})
        body = exchange.json()
        if exchange.status == 200 and _is_monitor_answer(body):
            self._merge(body, requested, exchange.seconds)
        else:
            self.poll_errors.append(f"{time.time():.3f}: {exchange.status or exchange.transport_error}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and takes a last poll, so the final phase's samples are in."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # The sample taken after the last phase ends (covering it) may be an interval away.
        time.sleep(min(self.interval_s or 0.0, 5.0))
        self.poll()

    @property
    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._samples[ts] for ts in sorted(self._samples)]

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._requests.values(), key=lambda record: record.get("ts") or 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def _merge(self, body: dict[str, Any], requested: float, round_trip_s: float) -> None:
        with self._lock:
            # The server read its clock about halfway through the round trip.
            self.offset_s = body["now"] - (requested + round_trip_s / 2)
            self.interval_s = body["interval_s"]  # None: the service samples nothing
            for sample in body["samples"]:
                self._samples[sample["ts"]] = sample
            for record in body["requests"]:
                self._requests[str(record.get("id", record.get("ts")))] = record


def _is_monitor_answer(body: Any) -> bool:
    return (isinstance(body, dict) and isinstance(body.get("now"), (int, float))
            and (body.get("interval_s") is None or isinstance(body.get("interval_s"), (int, float)))
            and isinstance(body.get("samples"), list) and isinstance(body.get("requests"), list))
