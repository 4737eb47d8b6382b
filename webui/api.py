"""The HTTP API: thin translation between HTTP and RepairService.

Routes are registered on the FastAPI app before Gradio is mounted at "/", so they take
precedence. Every answer under /api/ that is not 2xx is JSON {"error": {"code", "message"}}:
the service's refusals, FastAPI's validation and form-parsing errors, unknown routes (404
not_found) and methods (405 method_not_allowed) included.

A repair is refused as early as the request allows, cheapest check first: the token and, while
the server drains, admission (ApiGate, before the body is read); the body's size as it streams
in (webui/edge.py); the form's values, each file's size and room in the queue (before a pixel is
decoded); then what only decoding can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from lama.errors import InpaintError
from monitor.metrics import CONTENT_TYPE
from service.pipeline import RepairOptions, RepairService
from webui.edge import API_PREFIX
from webui.errors import HttpError, error_response, response_for, status_of

# Multipart framing on top of the two files; a larger body is refused as it streams in.
UPLOAD_OVERHEAD_BYTES = 1 << 20
INPAINT_PATH = "/api/v1/inpaint"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# The code of an HTTP error that FastAPI or Starlette raised rather than the service.
HTTP_ERROR_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                    413: "upload_too_large"}

log = logging.getLogger(__name__)


def inpaint_body_limit(max_file_bytes: int) -> int:
    """The largest repair request: image and mask at the per-file limit, and the form around them."""
    return 2 * max_file_bytes + UPLOAD_OVERHEAD_BYTES


class ApiGate:
    """Pure ASGI, in front of the API's routes and before they read a byte of the body: the
    token for everything under /api/ (FastAPI would parse a whole form before a dependency
    ran); for repairs, admission (in flight from here until the response, what a SIGTERM drain
    waits for; refused at once while draining) and inpaint_requests_total, counted here so that
    refusals that never reach the route (401, 413, a malformed form's 400 or 422) show too. The
    edge's refusals of foreign Host names and cross-site requests come before it: not counted."""

    def __init__(self, app: ASGIApp, service: RepairService, api_token: str | None):
        self.app, self.service, self.api_token = app, service, api_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        counted = scope["path"] == INPAINT_PATH and scope["method"] == "POST"
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            with contextlib.ExitStack() as in_flight:
                try:
                    self._check_token(Headers(scope=scope))
                    if counted:
                        in_flight.enter_context(self.service.admit())
                except (InpaintError, HttpError) as error:
                    await response_for(error)(scope, receive, send_noting_status)
                    return
                await self.app(scope, receive, send_noting_status)
        finally:
            if counted:
                self.service.metrics.observe_request(status, time.perf_counter() - started)

    def _check_token(self, headers: Headers) -> None:
        if self.api_token is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.api_token.encode()):
            # Connection: close, or the server would still read (and discard) the body being sent.
            raise HttpError(401, "unauthorized", "this API needs 'Authorization: Bearer <token>'",
                            {"WWW-Authenticate": "Bearer", "Connection": "close"})


def create_api(service: RepairService, api_token: str | None = None,
               defaults: RepairOptions = RepairOptions(), lifespan: Lifespan | None = None) -> FastAPI:
    """`defaults`: what a repair does for the form fields a request leaves out (the configured ones);
    `lifespan`: what starts and stops the service's threads (service.lifecycle)."""
    app = FastAPI(title="LaMa inpainting service", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.service = service  # for operators' hooks and tests (the queue, the engine)
    app.add_middleware(ApiGate, service=service, api_token=api_token)

    @app.exception_handler(InpaintError)
    async def service_error(_request: Request, error: InpaintError) -> JSONResponse:
        return response_for(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                             for e in error.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        # A malformed multipart body (400) or a body over its limit (413), raised while FastAPI reads the form.
        if not request.url.path.startswith(API_PREFIX):
            return await http_exception_handler(request, error)
        return error_response(error.status_code, HTTP_ERROR_CODES.get(error.status_code, "http_error"),
                              str(error.detail), error.headers)

    @app.post(INPAINT_PATH, responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}})
    async def inpaint(image: UploadFile = File(..., description="the photo"),
                      mask: UploadFile = File(..., description="same size; nonzero (or painted alpha) = repair"),
                      strategy: str = Form(defaults.strategy), dilate: int = Form(defaults.dilate),
                      feather: int = Form(defaults.feather), format: str = Form(defaults.format),
                      mask_threshold: int = Form(defaults.mask_threshold,
                                                 description="mask values above it are repaired (0..254; 0: any "
                                                             "nonzero, the official rule)")) -> Response:
        """Repair `image` where `mask` is set; the response body is the repaired image."""
        options = RepairOptions(strategy, dilate, feather, format, mask_threshold)
        decoded = None
        try:
            service.check_before_decode(options, {"image": image.size, "mask": mask.size})
            decoded = await run_in_threadpool(service.decode, await image.read(), await mask.read())
            # On a thread: the memory estimate refines the mask (CPU work, not for the event loop).
            queued = await run_in_threadpool(service.submit, decoded, options)
            # Waiting for the GPU holds no thread: the queue's future is awaited.
            timed = await asyncio.wrap_future(queued)
            result = await run_in_threadpool(service.finish, decoded, timed, options)
        except InpaintError as error:
            service.record(status_of(error), options, decoded, error=error.message)
            raise
        except Exception as error:
            # A bug or a failure nobody foresaw: still the documented JSON, and the traceback in the log.
            log.exception("repair failed")
            service.record(500, options, decoded, error=f"{type(error).__name__}: {error}")
            return error_response(500, "internal_error", "the repair failed on the server (the log has the "
                                                         "details); please try again")
        headers = {"Server-Timing": ", ".join(f"{stage};dur={seconds * 1000:.1f}"
                                             for stage, seconds in result.timings.items()),
                   # crop where the requested strategy would not fit the GPU's memory budget
                   "X-Strategy": result.strategy}
        if result.saved_as:
            headers["X-Saved-As"] = result.saved_as
        return Response(result.data, media_type=result.media_type, headers=headers)

    @app.get("/api/v1/monitor")
    def monitor(since: float | None = None) -> dict:
        """Resource samples and request records newer than `since` (unix seconds): the
        last hour of samples at most, the last requests kept in memory."""
        sampler, requests = service.sampler, service.requests
        return {
            "now": time.time(),
            "interval_s": sampler.interval_s if sampler else None,
            "samples": sampler.samples(since) if sampler else [],
            "requests": requests.recent(since) if requests else [],
        }

    @app.get("/healthz")
    def healthz() -> dict:
        """Model, GPU memory, queue and GPU memory budget; `gpu_mem` is the string the seed's probes read."""
        return service.health()

    @app.get("/livez")
    def livez() -> dict:
        """The process answers: Kubernetes' liveness probe."""
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 once the model is loaded and warm, the queue has room and the GPU works; 503 otherwise
        (and from the moment a SIGTERM starts the drain)."""
        ready = service.ready()
        return JSONResponse({"ready": ready, "draining": service.draining,
                             "queue": {"depth": service.queue.depth, "capacity": service.queue.capacity}},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        # A plain route: a mounted ASGI app would answer /metrics with a redirect to /metrics/.
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    # Last of the API's routes: anything else under /api/ is answered here, not by Gradio's 404.
    @app.api_route(API_PREFIX + "{path:path}", methods=ALL_METHODS, include_in_schema=False)
    async def no_such_route(request: Request) -> JSONResponse:
        allowed = sorted({method for route in app.routes if isinstance(route, APIRoute)
                          and route.matches(request.scope)[0] is Match.PARTIAL for method in route.methods})
        if allowed:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed on "
                                  f"{request.url.path}; use {', '.join(allowed)}", {"Allow": ", ".join(allowed)})
        return error_response(404, "not_found", f"no route {request.url.path}; the API's routes are "
                                                f"{INPAINT_PATH} and /api/v1/monitor (see /docs)")

    return app
