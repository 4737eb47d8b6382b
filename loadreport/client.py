"""The report's HTTP client: the standard library's urllib and nothing else.

The report measures the service from the outside, as its users reach it, so every call
is a real HTTP request whose latency is taken around the whole exchange (connect, upload,
server work, download). A failed exchange is data, not an exception: a 503 under load or
a connection reset when the server dies are exactly what the fault cases record.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

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


def multipart(files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """Encode {field: (filename, data, content type)} as multipart/form-data; returns (body, content type)."""
    boundary = secrets.token_hex(16)
    parts = []
    for name, (filename, data, content_type) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ServiceClient:
    """Requests to one service; `token` goes to /api/v1/* as a Bearer token."""

    def __init__(self, base_url: str, token: str | None = None):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ReportError(f"not an http(s) URL: {base_url!r} (expected e.g. http://127.0.0.1:7860)")
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                timeout: float = PROBE_TIMEOUT_S) -> Exchange:
        headers = {"Accept": "application/json, image/*"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token and path.startswith("/api/"):
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read()
                return Exchange(response.status, time.perf_counter() - started, data, _lower(response.headers))
        except urllib.error.HTTPError as answer:  # a 4xx/5xx is an answer, not a failure to talk
            with answer:
                data = answer.read()
            return Exchange(answer.code, time.perf_counter() - started, data, _lower(answer.headers))
        except (urllib.error.URLError, OSError, HTTPException) as error:
            reason = getattr(error, "reason", error)
            text = str(reason) or type(reason).__name__
            if isinstance(reason, socket.timeout):
                text = f"no answer within {timeout:.0f} s"
            return Exchange(None, time.perf_counter() - started, transport_error=text)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Exchange:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.request("GET", path)

    def inpaint(self, image_png: bytes, mask_png: bytes) -> Exchange:
        """POST /api/v1/inpaint with the service's own defaults for strategy, dilate, feather, format."""
        body, content_type = multipart({"image": ("image.png", image_png, "image/png"),
                                        "mask": ("mask.png", mask_png, "image/png")})
        return self.request("POST", INPAINT_PATH, body, content_type, timeout=REPAIR_TIMEOUT_S)


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
