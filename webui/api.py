"""The HTTP API: thin translation between HTTP and RepairService.

Routes are registered on the FastAPI app before Gradio is mounted at "/", so they take
precedence. Errors are always JSON: {"error": {"code": ..., "message": ...}}.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from monitor.metrics import CONTENT_TYPE
from webui.service import RepairOptions, RepairService, ServiceError

# Multipart framing on top of the two files; anything larger is refused before it is read.
UPLOAD_OVERHEAD_BYTES = 1 << 20
INPAINT_PATH = "/api/v1/inpaint"

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def create_api(service: RepairService, api_token: str | None = None,
               defaults: RepairOptions = RepairOptions()) -> FastAPI:
    """`defaults`: what a repair does for the form fields a request leaves out (the configured ones)."""
    app = FastAPI(title="LaMa inpainting service", version="1", docs_url="/docs", redoc_url=None)
    app.state.service = service  # for operators' hooks and tests (the queue, the engine)
    max_body = 2 * service.limits.max_bytes + UPLOAD_OVERHEAD_BYTES

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, error: ServiceError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
                             for e in error.errors())
        return error_response(422, "invalid_request", problems)

    @app.middleware("http")
    async def refuse_oversized_bodies_and_count(request: Request, call_next):
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        # Counted here rather than in the route, so that refusals that never reach it
        # (401, malformed form 422, oversized 413) show in inpaint_requests_total too.
        counted = request.url.path == INPAINT_PATH and request.method == "POST"
        started = time.perf_counter()
        status = 500
        try:
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > max_body:
                response = error_response(413, "upload_too_large", f"upload is {int(length) / 2**20:.0f} MB, "
                                                                   f"the limit is {max_body / 2**20:.0f} MB")
            elif counted:
                # In flight from here (before the body is read) until the response: what a
                # SIGTERM drain waits for; refused at once while draining.
                try:
                    with service.admit():
                        response = await call_next(request)
                except ServiceError as error:
                    response = error_response(error.status, error.code, error.message, error.headers)
            else:
                response = await call_next(request)
            status = response.status_code
            return response
        finally:
            if counted:
                service.metrics.observe_request(status, time.perf_counter() - started)

    async def require_token(request: Request) -> None:
        if api_token is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_token.encode()):
            raise ServiceError(401, "unauthorized", "this API needs 'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": "Bearer"})

    @app.post(INPAINT_PATH, dependencies=[Depends(require_token)],
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}})
    async def inpaint(image: UploadFile = File(..., description="the photo"),
                      mask: UploadFile = File(..., description="same size; nonzero (or painted alpha) = repair"),
                      strategy: str = Form(defaults.strategy), dilate: int = Form(defaults.dilate),
                      feather: int = Form(defaults.feather), format: str = Form(defaults.format)) -> Response:
        """Repair `image` where `mask` is set; the response body is the repaired image."""
        options = RepairOptions(strategy, dilate, feather, format)
        decoded = None
        try:
            decoded = await run_in_threadpool(service.decode, await image.read(), await mask.read())
            # On a thread: the memory estimate refines the mask (CPU work, not for the event loop).
            queued = await run_in_threadpool(service.submit, decoded, options)
            # Waiting for the GPU holds no thread: the queue's future is awaited.
            timed = await asyncio.wrap_future(queued)
            result = await run_in_threadpool(service.finish, decoded, timed, options)
        except ServiceError as error:
            service.record(error.status, options, decoded, error=error.message)
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

    @app.get("/api/v1/monitor", dependencies=[Depends(require_token)])
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

    return app
