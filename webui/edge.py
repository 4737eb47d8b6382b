"""The HTTP edge: what every request to the app (API, Gradio UI, probes) passes before a route.

EdgeMiddleware is a pure ASGI middleware in front of the whole app. From the headers alone,
before a byte of the body is read, in this order:

1. **Host.** Bound to loopback, only loopback names (localhost, 127.0.0.1, [::1], any port):
   a page whose DNS name is rebound to 127.0.0.1 sends its own name as Host and is refused.
   Bound to another address, also IP literals (no DNS, so no rebinding) and `allowed_hosts`.
   Refused with 421 Misdirected Request.
2. **Cross-site writes.** A request other than GET/HEAD/OPTIONS whose Origin is not the
   server's own (compared with Host) nor in `allowed_origins`, or that the browser marks
   `Sec-Fetch-Site: cross-site` without such an Origin, is refused with 403: a page the
   operator happens to open cannot repair, upload or join the UI's queue in their name.
   Requests without Origin (curl, scripts) are not browsers' and pass.
3. **CORS.** Preflights are answered here; on every response the app's own Access-Control-*
   headers (Gradio reflects origins, with credentials) are replaced by this policy: an origin
   in `allowed_origins` may read responses, without credentials; no other origin may.
4. **Body size.** Counted as it arrives, chunked or not, against the route's limit; a declared
   Content-Length over it is refused at the first read. Past the limit nothing more is read
   and the edge answers 413 itself, whatever the app made of the error.

Refusals are JSON `{"error": {"code", "message"}}` under /api/ (the API's documented shape) and
one line of plain text elsewhere (what the UI shows).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
PREFLIGHT_MAX_AGE_S = 600
API_PREFIX = "/api/"  # the HTTP API's paths, whose errors are JSON


def is_loopback(name: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (brackets allowed)."""
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _split_authority(value: str) -> tuple[str, int | None] | None:
    """'Example.com:8080' -> ('example.com', 8080); '[::1]' -> ('::1', None); None if malformed."""
    if not value or any(char in value for char in "/@?#\\ "):
        return None
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname, parts.port) if parts.hostname else None
    except ValueError:  # a port that is not a number, an unclosed bracket
        return None


def normalise_origin(origin: str) -> str:
    """'HTTPS://Example.com:443' -> 'https://example.com'; ValueError for anything but
    scheme://host[:port] with http or https."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        raise ValueError(f"{origin!r} is not an origin like https://example.com") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"{origin!r} is not an origin like https://example.com (scheme://host[:port], no path)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + ("" if port in (None, DEFAULT_PORTS[parts.scheme]) else f":{port}")


def normalise_host_name(name: str) -> str:
    """An `allowed_hosts` entry: '*' or a host name or IP address, without scheme or port."""
    if name == "*":
        return name
    if _is_ip_literal(name):  # ::1 as people write it, without brackets
        return str(ipaddress.ip_address(name))
    authority = _split_authority(name)
    if authority is None or authority[1] is not None:
        raise ValueError(f"{name!r} is not a host name: write it without scheme or port (e.g. lama.example.com)")
    return authority[0]


@dataclass(frozen=True)
class BodyLimits:
    """Request body bytes allowed per path (exact, a trailing slash ignored); `default` elsewhere."""

    default: int
    routes: Mapping[str, int] = field(default_factory=dict)

    def for_path(self, path: str) -> int:
        return self.routes.get(path.rstrip("/") or "/", self.default)


@dataclass(frozen=True)
class EdgePolicy:
    """What the edge lets in; `create` from the settings."""

    bound_to_loopback: bool
    body_limits: BodyLimits
    allowed_hosts: frozenset[str] = frozenset()  # normalised names; "*": any Host
    allowed_origins: frozenset[str] = frozenset()  # normalised origins

    @classmethod
    def create(cls, bind_host: str, body_limits: BodyLimits, allowed_hosts=(), allowed_origins=()) -> EdgePolicy:
        """ValueError names the first entry that is not a host name or an origin."""
        return cls(is_loopback(bind_host), body_limits, frozenset(map(normalise_host_name, allowed_hosts)),
                   frozenset(map(normalise_origin, allowed_origins)))

    def host_allowed(self, host: str | None) -> bool:
        # No browser omits Host, so a request without one cannot be a rebinding page's.
        if host is None or "*" in self.allowed_hosts:
            return True
        authority = _split_authority(host)
        if authority is None:
            return False
        name = authority[0]
        return (is_loopback(name) or name in self.allowed_hosts
                or (not self.bound_to_loopback and _is_ip_literal(name)))

    def origin_listed(self, origin: str) -> bool:
        try:
            return normalise_origin(origin) in self.allowed_origins
        except ValueError:  # "null", or garbage
            return False

    def origin_trusted(self, origin: str, host: str | None) -> bool:
        """The server's own origin (same host and port as the Host header) or a listed one."""
        return _same_origin(origin, host) or self.origin_listed(origin)


def _same_origin(origin: str, host: str | None) -> bool:
    authority = _split_authority(host or "")
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if authority is None or parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    name, port = authority
    # Behind a proxy the Host may leave out the default port of the scheme the browser used.
    return parts.hostname == name and (port or DEFAULT_PORTS[parts.scheme]) == origin_port


class BodyTooLarge(HTTPException):
    """Raised by the counted `receive` once a body is over its route's limit. An HTTPException,
    so that FastAPI lets it through its form parsing (which turns other errors into a 400)."""

    def __init__(self, message: str):
        super().__init__(413, message)


def _size(count: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.0f} {unit}"
    return f"{count} bytes"


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _answer(scope: Scope, send: Send, refusal: _Refusal) -> None:
    if scope["path"].startswith(API_PREFIX):
        body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}}).encode()
        media_type = "application/json"
    else:
        body = (refusal.message + "\n").encode()
        media_type = "text/plain; charset=utf-8"
    # Refused before its body was read: the connection closes rather than drain what is still coming.
    headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, policy: EdgePolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self._check_host(scope, headers)
            if scope["type"] == "websocket":
                # Browsers do not apply CORS to WebSockets: the handshake is a write in effect.
                self._check_cross_site(scope, headers)
            elif self._is_preflight(scope, headers):
                await self._answer_preflight(scope, headers, send)
                return
            elif scope["method"] not in SAFE_METHODS:
                self._check_cross_site(scope, headers)
        except _Refusal as refusal:
            log.warning("refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope["path"], refusal.message)
            if scope["type"] == "websocket":
                await receive()  # websocket.connect; a close before accepting is answered 403
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _answer(scope, send, refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
        else:
            await _BoundedExchange(self.app, self.policy, scope, headers).run(receive, send)

    # ------------------------------------------------------------------ header checks

    def _check_host(self, scope: Scope, headers: Headers) -> None:
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            listed = "loopback names" if self.policy.bound_to_loopback else "IP addresses and allowed_hosts"
            raise _Refusal(421, "host_not_allowed",
                           f"this server does not answer to the host name {host!r} (it accepts {listed}; "
                           "an operator adds names with --allowed-hosts)")

    def _check_cross_site(self, scope: Scope, headers: Headers) -> None:
        origin, host = headers.get("origin"), headers.get("host")
        if origin is not None:
            trusted = self.policy.origin_trusted(origin, host)
        else:
            trusted = headers.get("sec-fetch-site") != "cross-site"
        if not trusted:
            raise _Refusal(403, "cross_site_request",
                           f"cross-site request refused: a page from {origin or 'another site'!r} may not send "
                           f"{scope.get('method', 'WebSocket')} requests to this server (an operator allows an "
                           "origin with --allowed-origins)")

    # ------------------------------------------------------------------ CORS

    @staticmethod
    def _is_preflight(scope: Scope, headers: Headers) -> bool:
        return scope["method"] == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers

    async def _answer_preflight(self, scope: Scope, headers: Headers, send: Send) -> None:
        origin = headers["origin"]
        if not self.policy.origin_trusted(origin, headers.get("host")):
            raise _Refusal(403, "cross_site_request",
                           f"cross-origin requests from {origin!r} are not allowed (an operator allows an origin "
                           "with --allowed-origins)")
        allow = {"access-control-allow-origin": origin, "access-control-allow-methods": "GET, HEAD, POST",
                 "access-control-max-age": str(PREFLIGHT_MAX_AGE_S), "vary": "Origin"}
        if requested := headers.get("access-control-request-headers"):
            allow["access-control-allow-headers"] = requested  # the origin is trusted: whatever it sends
        await send({"type": "http.response.start", "status": 204,
                    "headers": [(key.encode(), value.encode()) for key, value in allow.items()]})
        await send({"type": "http.response.body", "body": b""})


class _BoundedExchange:
    """One HTTP request/response through the app: the body counted on the way in, the CORS
    headers rewritten on the way out, and the 413 sent here once the body is over its limit."""

    def __init__(self, app: ASGIApp, policy: EdgePolicy, scope: Scope, headers: Headers):
        self.app, self.scope = app, scope
        self.limit = policy.body_limits.for_path(scope["path"])
        length = headers.get("content-length", "")
        self.declared = int(length) if length.isdigit() else None
        self.received = 0
        self.refusal: _Refusal | None = None
        self.app_started = False  # the app's response had begun when the body was refused
        origin = headers.get("origin")
        self.cors_origin = origin if origin is not None and policy.origin_listed(origin) else None
        self.vary_origin = bool(policy.allowed_origins)

    async def run(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception:
            if self.refusal is None:
                raise
            # The app did not handle the BodyTooLarge it got (or failed over it): answered below.
        if self.refusal is not None and not self.app_started:
            log.warning("refused %s %s: %s", self.scope["method"], self.scope["path"], self.refusal.message)
            await _answer(self.scope, self._send_rewritten, self.refusal)

    async def receive(self) -> Message:
        if self.refusal is None and self.declared is not None and self.declared > self.limit:
            self._refuse(f"the request body is {_size(self.declared)}, the limit is {_size(self.limit)}")
        if self.refusal is not None:
            raise BodyTooLarge(self.refusal.message)
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self._refuse(f"the request body is over the limit of {_size(self.limit)}")
                raise BodyTooLarge(self.refusal.message)
        return message

    def _refuse(self, message: str) -> None:
        self.refusal = _Refusal(413, "upload_too_large", message)

    async def send(self, message: Message) -> None:
        if self.refusal is not None and not self.app_started:
            return  # the app's answer to the refusal; the edge sends its own
        if message["type"] == "http.response.start":
            self.app_started = True
        await self._send_rewritten(message)

    async def _send_rewritten(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=list(message.get("headers", [])))
            for name in {key for key in headers.keys() if key.startswith("access-control-")}:
                del headers[name]
            if self.cors_origin is not None:
                headers["access-control-allow-origin"] = self.cors_origin
                headers["access-control-expose-headers"] = "*"  # X-Saved-As, Retry-After, ...
            if self.vary_origin:
                headers.add_vary_header("Origin")
            message = {**message, "headers": headers.raw}
        await self._send(message)
