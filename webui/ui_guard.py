"""What reaches Gradio's routes, decided before Gradio reads a byte of the request body.

An ASGI middleware inside the Gradio app (everything the HTTP API does not route):

- with --auth, every route needs the login session except the page itself (which shows the
  login form), POST /login and the static files the form loads; Gradio alone leaves
  /gradio_api/cancel, /gradio_api/heartbeat/..., /gradio_api/startup-events and others open;
- POST /login is throttled per client address (LoginThrottle);
- /gradio_api/component_server is closed unless a component of the page has a server function
  (gr.ImageEditor's accept_blobs kept client-keyed blobs in memory for good: a page without
  server functions has no use for the route);
- /gradio_api/upload is refused while the UI's cache holds its quota (its body size is
  webui.edge's to bound, each file's Gradio's: max_file_size, the API's per-file limit);
- Gradio's file routes fetch and relay any public URL given as the file
  (/gradio_api/file=https://...): here they serve local files only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui import ui_cache

UPLOAD_PATH = "/gradio_api/upload"
LOGIN_PATH = "/login"
COMPONENT_SERVER_PATH = "/gradio_api/component_server"
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
# Open without a session: the page (Gradio renders the login form there), the login itself,
# and what the form loads (measured in Chromium: /assets/*, /static/*, /theme.css).
PUBLIC_PATHS = frozenset({"", LOGIN_PATH, "/theme.css", "/favicon.ico"})
PUBLIC_PREFIXES = ("/assets/", "/static/")
QUOTA_RETRY_AFTER_S = 60  # the retention sweep runs every minute


class LoginThrottle:
    """Failed logins per client address. The first `free_failures` cost nothing; from then on
    each further attempt must wait a delay that doubles with every failure (base_delay_s, 2×,
    4×, ... up to max_delay_s). An attempt counts as failed until it succeeds, so attempts sent
    in parallel are throttled too; a success forgets the address. Constant memory: at most
    `max_clients` addresses are remembered, the one whose last attempt is oldest forgotten first.
    """

    def __init__(self, free_failures: int = 5, base_delay_s: float = 1.0, max_delay_s: float = 300.0,
                 max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.free_failures, self.base_delay_s, self.max_delay_s = free_failures, base_delay_s, max_delay_s
        self.max_clients, self.clock = max_clients, clock
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures, retry at)

    def __len__(self) -> int:
        return len(self._clients)

    def wait_s(self, client: str) -> float:
        """Seconds before `client` may try again (0: now)."""
        _, retry_at = self._clients.get(client, (0, 0.0))
        return max(0.0, retry_at - self.clock())

    def attempt(self, client: str) -> None:
        """Count an attempt as failed (until succeeded() says otherwise)."""
        failures = self._clients.pop(client, (0, 0.0))[0] + 1
        retry_at = 0.0
        if failures >= self.free_failures:
            retry_at = self.clock() + min(self.max_delay_s, self.base_delay_s * 2 ** (failures - self.free_failures))
        self._clients[client] = (failures, retry_at)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


class UIGuard:
    """The middleware; see the module's docstring. `upload_max_bytes`: the per-file limit;
    `cache_max_bytes` 0: no quota."""

    def __init__(self, app: ASGIApp, cache_dir: Path, upload_max_bytes: int, cache_max_bytes: int,
                 throttle: LoginThrottle, cache_fresh_s: float = 1.0):
        """`cache_fresh_s`: how long one count of the cache folder serves the quota (ui_cache.CacheUsage)."""
        self.app = app
        self.upload_max_bytes, self.cache_max_bytes = upload_max_bytes, cache_max_bytes
        self.throttle = throttle
        self.cache_usage = ui_cache.CacheUsage(cache_dir, cache_fresh_s)
        self._server_functions: bool | None = None  # whether the page has any; known once it runs

    @classmethod
    def middleware(cls, cache_dir: Path, upload_max_bytes: int, cache_max_bytes: int) -> Middleware:
        """For gr.mount_gradio_app(app_kwargs={"middleware": [...]}): inside the Gradio app."""
        return Middleware(cls, cache_dir=cache_dir, upload_max_bytes=upload_max_bytes,
                          cache_max_bytes=cache_max_bytes, throttle=LoginThrottle())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", "")).rstrip("/")
        gradio_app = scope["app"]  # Starlette sets it to the app whose middleware this is
        auth_on = gradio_app.auth is not None
        if auth_on and not _is_public(path) and not _has_session(scope, gradio_app):
            await _answer(send, 401, "Not authenticated: log in first.")
        elif path == COMPONENT_SERVER_PATH and not self._serves_functions(gradio_app):
            await _answer(send, 404, "Not Found")
        elif _names_a_url(path):
            await _answer(send, 404, "Not Found: this server serves its own files only.")
        elif auth_on and path == LOGIN_PATH and scope["method"] == "POST":
            await self._login(scope, receive, send)
        elif path == UPLOAD_PATH and scope["method"] == "POST":
            await self._upload(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _serves_functions(self, gradio_app) -> bool:
        if self._server_functions is None:
            blocks = gradio_app.get_blocks().blocks.values()
            self._server_functions = any(getattr(block, "server_fns", None) for block in blocks)
        return self._server_functions

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait_s = self.throttle.wait_s(client)
        if wait_s > 0:
            retry_after = math.ceil(wait_s)
            await _answer(send, 429, f"Too many failed logins from this address: try again in {retry_after} s.",
                          {"Retry-After": str(retry_after)})
            return
        self.throttle.attempt(client)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.throttle.succeeded(client)
            await send(message)

        await self.app(scope, receive, watch)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.cache_max_bytes:
            await self.app(scope, receive, send)
            return
        length = HTTPConnection(scope).headers.get("content-length", "")
        # A body of undeclared size (chunked) is counted as one file at the limit.
        size = int(length) if length.isdigit() else self.upload_max_bytes
        admitted, held = await run_in_threadpool(self.cache_usage.admit, size, self.cache_max_bytes)
        if not admitted:
            await _answer(send, 507, f"The server's space for uploads is full ({held / 2**20:.0f} of "
                                     f"{self.cache_max_bytes / 2**20:.0f} MB); older uploads expire soon: "
                                     "try again in a few minutes.", {"Retry-After": str(QUOTA_RETRY_AFTER_S)})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.cache_usage.received(size)


def _names_a_url(path: str) -> bool:
    return any(path.startswith(prefix) and path[len(prefix):].lower().startswith(("http:", "https:"))
               for prefix in FILE_ROUTES)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _has_session(scope: Scope, gradio_app) -> bool:
    """The check Gradio's own login_check makes (gradio.routes: get_current_user): the
    access-token cookie of this app names a token its /login handed out."""
    cookies = HTTPConnection(scope).cookies
    token = (cookies.get(f"access-token-{gradio_app.cookie_id}")
             or cookies.get(f"access-token-unsecure-{gradio_app.cookie_id}"))
    return token is not None and token in gradio_app.tokens


async def _answer(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Plain text, as Gradio's upload route answers its own errors: the page shows an upload's
    error as "HTTP <status>: <text>"."""
    body = message.encode()
    raw_headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
