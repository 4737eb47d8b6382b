"""The client's HTTP side: httpx, one connection pool per ServiceClient.

Everything here measures the service from the outside, as its users reach it, so every call
is a real HTTP request whose latency is taken around the whole exchange (connect, upload,
server work, download). A failed exchange is data, not an exception: a 503 under load or
a connection reset when the server dies are exactly what the fault cases record.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

INPAINT_PATH = "/api/v1/inpaint"
MONITOR_PATH = "/api/v1/monitor"
PROBE_TIMEOUT_S = 10.0  # /healthz and /api/v1/monitor answer at once on a live service
REPAIR_TIMEOUT_S = 900.0  # the seed's large images took 38 s on a GPU; a CPU takes far longer


class ReportError(Exception):
    """Why the report cannot run against this URL; the message is one line for people."""


@dataclass
class Exchange:
    """One HTTP request and what came back; `status` is None when no HTTP answer came."""

    status: int | None
    seconds: float
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    transport_error: str | None = None

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (an HTML page, a proxy's error)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_fields(self) -> tuple[str | None, str | None]:
        """(code, message) of the service's `{"error": {"code", "message"}}` body, or of the transport."""
        if self.status is None:
            return "no_response", self.transport_error
        body = self.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return error.get("code"), error.get("message")
        return None, None


def parse_server_timing(header: str | None) -> dict[str, float]:
    """'decode;dur=12.3, infer;desc="x";dur=40' -> {'decode': 0.0123, 'infer': 0.04} (seconds).

    Metrics without a `dur` are left out: they carry no time to report.
    """
    timings: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):  # a malformed duration is no duration
                    timings[name] = float(value.strip().strip('"')) / 1000
    return timings


class ServiceClient:
    """Requests to one service over one pool of keep-alive connections; `token` goes to /api/v1/*
    as a Bearer token. Safe to share between threads; a client per thread looks like a user each."""

    def __init__(self, base_url: str, token: str | None = None, transport: httpx.BaseTransport | None = None):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ReportError(f"not an http(s) URL: {base_url!r} (expected e.g. http://127.0.0.1:7860)")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, transport=transport,
                                  headers={"Accept": "application/json, image/*"})

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                files: Mapping[str, tuple[str, bytes, str]] | None = None, form: Mapping[str, str] | None = None,
                timeout: float = PROBE_TIMEOUT_S) -> Exchange:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token and path.startswith("/api/") else {}
        started = time.perf_counter()
        try:
            response = self._http.request(method, path, params=params, files=files, data=form, headers=headers,
                                          timeout=timeout)
        except httpx.TimeoutException:
            return Exchange(None, time.perf_counter() - started, transport_error=f"no answer within {timeout:.0f} s")
        except httpx.TransportError as error:
            return Exchange(None, time.perf_counter() - started, transport_error=str(error) or type(error).__name__)
        return Exchange(response.status_code, time.perf_counter() - started, response.content, dict(response.headers))

    def health(self) -> dict[str, Any]:
        """/healthz, which must answer with this service's JSON (model, device, precision); else ReportError."""
        exchange = self.get_json("/healthz")
        if exchange.status is None:
            raise ReportError(f"cannot reach {self.base_url}: {exchange.transport_error}")
        body = exchange.json()
        if exchange.status != 200 or not isinstance(body, dict) or not isinstance(body.get("model"), dict):
            raise ReportError(f"{self.base_url}/healthz answered HTTP {exchange.status} without the service's "
                              "health JSON: is this the inpainting service?")
        return body

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Exchange:
        return self.request("GET", path, params)

    def inpaint(self, image: bytes, mask_png: bytes, image_type: str = "image/png",
                form: Mapping[str, str] | None = None) -> Exchange:
        """POST /api/v1/inpaint; the form fields not in `form` (strategy, dilate, feather, format)
        take the service's own defaults."""
        files = {"image": ("image." + image_type.rpartition("/")[2], image, image_type),
                 "mask": ("mask.png", mask_png, "image/png")}
        return self.request("POST", INPAINT_PATH, files=files, form=form, timeout=REPAIR_TIMEOUT_S)


def is_loopback(url: str) -> bool:
    """Does `url` name this machine through a loopback address (127.0.0.1, ::1, localhost)?"""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
