"""The HTTP API: thin translation between HTTP and RepairService (and its BatchJobs).

Routes are registered on the FastAPI app before Gradio is mounted at "/", so they take
precedence. Every answer under /api/ that is not 2xx is JSON {"error": {"code", "message"}}:
the service's refusals, FastAPI's validation and form-parsing errors, unknown routes (404
not_found) and methods (405 method_not_allowed) included.

A repair is refused as early as the request allows, cheapest check first: the token and, while
the server drains, admission (ApiGate, before the body is read); the body's size as it streams
in (webui/edge.py); the form's values, each file's size and room in the queue (before a pixel is
decoded); then what only decoding can tell.

A batch job (POST /api/v1/jobs) is refused the same way, then answered 202 once it is queued;
its status and result are read from the files it leaves (service.batch_jobs), so any replica
sharing the outputs folder answers for it (and deletes it). /docs is Swagger UI from a packaged
copy (fastapi_offline): it works without internet, like the rest of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from lama.engine import STRATEGIES
from lama.errors import InpaintError
from lama.masks import MAX_THRESHOLD
from lama.output_formats import CHOICES as FORMAT_CHOICES
from monitor.metrics import CONTENT_TYPE
from service.batch_jobs import BatchJobs, Job
from service.pipeline import Decoded, RepairOptions, RepairResult, RepairService
from service.storage import download_name
from service.upload import MAX_REFINE_PX
from webui.edge import API_PREFIX
from webui.errors import HttpError, error_response, response_for, status_of
from webui.openapi import REPAIR_HEADERS, UPLOAD_ERRORS, JobAccepted, JobStatus, errors, image_response

# Multipart framing on top of the two files; a larger body is refused as it streams in.
UPLOAD_OVERHEAD_BYTES = 1 << 20
INPAINT_PATH = "/api/v1/inpaint"
JOBS_PATH = "/api/v1/jobs"
REPAIR_PATHS = (INPAINT_PATH, JOBS_PATH)  # the POSTs that carry uploads and start repairs
PIXELS = {"minimum": 0, "maximum": MAX_REFINE_PX}
# The code of an HTTP error that FastAPI or Starlette raised rather than the service.
HTTP_ERROR_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                    413: "upload_too_large"}

log = logging.getLogger(__name__)


def validation_problem(error: dict[str, Any]) -> str:
    """One of FastAPI's validation errors as a client can act on it."""
    field = ".".join(str(part) for part in error["loc"][1:]) or "request"
    if error["type"] == "value_error" and "UploadFile" in error["msg"]:
        # A text field where a file belongs: curl's `-F image=<photo.jpg` or `-F image=photo.jpg`
        # (FastAPI says "Expected UploadFile, received: <class 'str'>").
        return f"{field}: expected a file, got a text field (curl: -F {field}=@photo.jpg)"
    return f"{field}: {error['msg']}"


def inpaint_body_limit(max_file_bytes: int) -> int:
    """The largest repair request: image and mask at the per-file limit, and the form around them."""
    return 2 * max_file_bytes + UPLOAD_OVERHEAD_BYTES


class ApiGate:
    """Pure ASGI, in front of the API's routes and before they read a byte of the body: the
    token for everything under /api/ (FastAPI would parse a whole form before a dependency
    ran); for the POSTs that carry a repair's upload (a repair, a job), admission (in flight from
    here until the response, what a SIGTERM drain waits for; refused at once while draining) and
    inpaint_requests_total, counted here so that refusals that never reach the route (401, 413, a
    malformed form's 400 or 422) show too. An accepted job then holds its own admission until it
    is done (service.batch_jobs). The edge's refusals of foreign Host names and cross-site
    requests come before it: not counted."""

    def __init__(self, app: ASGIApp, service: RepairService, api_token: str | None):
        self.app, self.service, self.api_token = app, service, api_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        counted = scope["path"] in REPAIR_PATHS and scope["method"] == "POST"
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


@dataclass
class RepairUpload:
    """A repair request's form: the two files and the options."""

    image: UploadFile
    mask: UploadFile
    options: RepairOptions


class AnyMethod:
    """An ASGI endpoint answering `respond(request)`, whose route matches every method (Starlette
    gives the route of a plain function GET alone): the fallbacks that answer 404 and 405."""

    def __init__(self, respond: Callable[[Request], Awaitable[Response]]):
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)


async def method_not_allowed(allowed: str, request: Request) -> Response:
    return PlainTextResponse(f"{request.method} is not allowed on {request.url.path}; use {allowed}\n",
                             status_code=405, headers={"Allow": allowed})


def repaired_response(result: RepairResult) -> Response:
    """The repaired file, with its stages' times, the strategy that ran and the saved file's name."""
    headers = {"Server-Timing": ", ".join(f"{stage};dur={seconds * 1000:.1f}"
                                         for stage, seconds in result.timings.items()),
               # crop where the requested strategy would not fit the GPU's memory budget
               "X-Strategy": result.strategy,
               # The name is made of ASCII letters, digits, _ . - (service.storage.result_name).
               "Content-Disposition": f'inline; filename="{result.name}"'}
    if result.saved_as:
        headers["X-Saved-As"] = result.saved_as
    return Response(result.data, media_type=result.format.media_type, headers=headers)


def job_url(job_id: str) -> str:
    # A path, not an absolute URL: behind a load balancer only the client knows the public host.
    return f"{JOBS_PATH}/{job_id}"


def job_status(job: Job) -> dict:
    return {"id": job.id, "status": job.status, "error": job.error,
            "result_url": f"{job_url(job.id)}/result" if job.saved_as else None, "timings": job.timings}


def create_api(service: RepairService, api_token: str | None = None,
               defaults: RepairOptions = RepairOptions(), jobs: BatchJobs | None = None,
               lifespan: Lifespan | None = None) -> FastAPI:
    """`defaults`: what a repair does for the form fields a request leaves out (the configured
    ones); `jobs`: the batch jobs (by default over the service's queue capacity); `lifespan`:
    what starts and stops the service's threads (service.lifecycle)."""
    # ReDoc is left out: one set of docs, Swagger UI, whose "Try it out" sends real requests.
    app = FastAPIOffline(title="LaMa inpainting service", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan,
                         description="Repairs photos where a mask says (LaMa). Errors under /api/ are JSON "
                                     '`{"error": {"code", "message"}}`; with --api-token every /api/ route needs '
                                     "`Authorization: Bearer <token>`.")
    jobs = jobs or BatchJobs(service, service.queue.capacity, service.outputs.keep_days)
    app.state.service = service  # for operators' hooks and tests (the queue, the engine)
    app.state.jobs = jobs
    app.add_middleware(ApiGate, service=service, api_token=api_token)

    @app.exception_handler(InpaintError)
    async def service_error(_request: Request, error: InpaintError) -> JSONResponse:
        return response_for(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", "; ".join(map(validation_problem, error.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        # A malformed multipart body (400) or a body over its limit (413), raised while FastAPI reads the form.
        if not request.url.path.startswith(API_PREFIX):
            return await http_exception_handler(request, error)
        return error_response(error.status_code, HTTP_ERROR_CODES.get(error.status_code, "http_error"),
                              str(error.detail), error.headers)

    @app.exception_handler(Exception)
    async def unforeseen_error(request: Request, error: Exception) -> Response:
        # Starlette logs the traceback; the client still gets the documented JSON under /api/.
        if not request.url.path.startswith(API_PREFIX):
            return PlainTextResponse("Internal Server Error", status_code=500)
        return error_response(500, "internal_error", "the request failed on the server (the log has the details); "
                                                     "please try again")

    def repair_upload(image: UploadFile = File(..., description="the photo"),
                      mask: UploadFile = File(..., description="same size; nonzero (or painted alpha) = repair"),
                      # The ranges are documented here and enforced by the service (422 invalid_option).
                      strategy: str = Form(defaults.strategy, description="what the model sees: crop (each masked "
                                           "area at full resolution), resize (a downscaled copy), original (all)",
                                           json_schema_extra={"enum": list(STRATEGIES)}),
                      dilate: int = Form(defaults.dilate, description="grow the mask by this many px",
                                         json_schema_extra=PIXELS),
                      feather: int = Form(defaults.feather, description="blend the repair's edge over this many px",
                                          json_schema_extra=PIXELS),
                      format: str = Form(defaults.format, description="the result's format; same: the upload's "
                                         "(PNG for BMP and TIFF)", json_schema_extra={"enum": list(FORMAT_CHOICES)}),
                      mask_threshold: int = Form(defaults.mask_threshold,
                                                 description="mask values above it are repaired (0: any nonzero, "
                                                             "the official rule)",
                                                 json_schema_extra={"minimum": 0, "maximum": MAX_THRESHOLD}),
                      keep_metadata: bool = Form(defaults.keep_metadata,
                                                 description="carry the upload's EXIF (orientation normalised) "
                                                             "and ICC profile to the result")
                      ) -> RepairUpload:
        return RepairUpload(image, mask, RepairOptions(strategy, dilate, feather, format, mask_threshold,
                                                       keep_metadata))

    async def read_upload(upload: RepairUpload) -> tuple[bytes, bytes]:
        """The checks that need no pixels, then the photo's and the mask's bytes."""
        service.check_before_decode(upload.options, {"image": upload.image.size, "mask": upload.mask.size})
        return await upload.image.read(), await upload.mask.read()

    async def decode_upload(upload: RepairUpload) -> Decoded:
        """`read_upload`, then decoding, off the event loop."""
        return await run_in_threadpool(service.decode, *await read_upload(upload), upload.image.filename,
                                       upload.options)

    # With a token, the document says so (Swagger UI's Authorize button sends it); ApiGate checks it.
    token = [Security(HTTPBearer(auto_error=False, description="the server's --api-token"))] if api_token else []

    @app.post(INPAINT_PATH, response_class=Response, operation_id="inpaint", dependencies=token, tags=["repair"],
              summary="Repair one photo and wait for it",
              responses={200: image_response("the repaired image, in the requested format", REPAIR_HEADERS),
                         **errors(*UPLOAD_ERRORS, "out_of_memory", "gpu_error", "worker_lost")})
    async def inpaint(upload: RepairUpload = Depends(repair_upload)) -> Response:
        """Repair `image` where `mask` is set and answer with the repaired image; the connection is
        held until it is done (for many images, see the jobs routes)."""
        options = upload.options
        decoded = None
        try:
            if service.hands_to_workers:  # its CPU steps in a worker process, not queued for this one's GIL
                repair = await run_in_threadpool(service.submit_to_worker, *await read_upload(upload),
                                                 upload.image.filename, options)
                try:
                    timed = await asyncio.wrap_future(repair.queued) if repair.queued else None
                except BaseException:
                    service.abandon(repair)
                    raise
                return repaired_response(await run_in_threadpool(service.finish_in_worker, repair, timed, True))
            decoded = await decode_upload(upload)
            # On a thread: the memory estimate refines the mask (CPU work, not for the event loop).
            queued = await run_in_threadpool(service.submit, decoded, options)
            # Waiting for the GPU holds no thread: the queue's future is awaited.
            timed = await asyncio.wrap_future(queued)
            # The answer carries the result: its file is written after it (answer_first).
            result = await run_in_threadpool(service.finish, decoded, timed, options, True)
        except InpaintError as error:
            service.record(status_of(error), options, decoded, error=error.message)
            raise
        except Exception as error:
            # A bug or a failure nobody foresaw: still the documented JSON, and the traceback in the log.
            log.exception("repair failed")
            service.record(500, options, decoded, error=f"{type(error).__name__}: {error}")
            return error_response(500, "internal_error", "the repair failed on the server (the log has the "
                                                         "details); please try again")
        return repaired_response(result)

    # The links tell clients (and schemathesis's stateful phase) where the returned id goes.
    job_links = {name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
                 for name, operation in (("status", "get_job"), ("result", "get_job_result"),
                                            ("delete", "delete_job"))}

    @app.post(JOBS_PATH, status_code=202, response_model=JobAccepted, operation_id="submit_job", dependencies=token,
              tags=["batch jobs"], summary="Submit a repair, fetch it later",
              responses={202: {"description": "queued", "links": job_links, "headers": {"Location": {
                  "description": "the job's URL (a path)", "required": True, "schema": {"type": "string"}}}},
                  **errors(*UPLOAD_ERRORS, "outputs_unwritable", "worker_lost")})
    async def submit_job(upload: RepairUpload = Depends(repair_upload)) -> JSONResponse:
        """Queue a repair (the same fields, limits and queue as /api/v1/inpaint) and answer at once
        with the job's id and URL; poll the job, then fetch its result. Jobs and results are files
        under the outputs folder: every replica sharing it answers, a restart keeps finished jobs,
        the outputs retention removes them."""
        decoded = None
        try:
            if service.hands_to_workers:  # as /api/v1/inpaint's repairs
                job = await run_in_threadpool(jobs.submit_to_worker, *await read_upload(upload),
                                              upload.image.filename, upload.options)
            else:
                decoded = await decode_upload(upload)
                job = await run_in_threadpool(jobs.submit, decoded, upload.options)
        except InpaintError as error:
            service.record(status_of(error), upload.options, decoded, error=error.message)
            raise
        accepted = {"id": job.id, "status": job.status, "url": job_url(job.id)}
        return JSONResponse(accepted, status_code=202, headers={"Location": accepted["url"]})

    @app.get(JOBS_PATH + "/{job_id}", response_model=JobStatus, operation_id="get_job", dependencies=token,
             tags=["batch jobs"], summary="A job's status",
             responses=errors("job_not_found", (422, "invalid_request")))
    async def get_job(job_id: str) -> dict:
        """A job's status: queued, running, done (with `result_url` and `timings`) or failed (with `error`)."""
        return job_status(await run_in_threadpool(jobs.get, job_id))

    @app.get(JOBS_PATH + "/{job_id}/result", response_class=Response, operation_id="get_job_result",
             dependencies=token, tags=["batch jobs"], summary="A done job's image",
             responses={200: image_response("the repaired image", {
                 "X-Saved-As": REPAIR_HEADERS["X-Saved-As"], "Content-Disposition": REPAIR_HEADERS["Content-Disposition"]}),
                        **errors("job_not_found", "job_not_done", "job_failed", (422, "invalid_request"))})
    async def get_job_result(job_id: str) -> Response:
        """A done job's repaired image; 409 while it is pending or once it failed."""
        job, data = await run_in_threadpool(jobs.result, job_id)
        # Named after the upload, as /api/v1/inpaint names its answer (the saved name without its prefix).
        return Response(data, media_type=job.media_type, headers={
            "X-Saved-As": job.saved_as, "Content-Disposition": f'inline; filename="{download_name(job.saved_as)}"'})

    @app.delete(JOBS_PATH + "/{job_id}", status_code=204, response_class=Response, operation_id="delete_job",
                dependencies=token, tags=["batch jobs"], summary="Delete a job and its result",
                responses={204: {"description": "deleted"},
                           **errors("job_not_found", "outputs_unwritable", (422, "invalid_request"))})
    async def delete_job(job_id: str) -> Response:
        """Delete a job and its result, whichever replica accepted it; from then on it is 404. A job
        still queued never runs; one running ends, and its result is not kept."""
        await run_in_threadpool(jobs.delete, job_id)
        return Response(status_code=204)

    @app.get("/api/v1/monitor", responses=errors((422, "invalid_request")), dependencies=token, tags=["operations"])
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

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        """`{"status": "ok"|"degraded", "model", "gpu_mem": "6.8GB", "gpu", "queue": {"depth", "capacity"},
        "gpu_budget": {"budget_bytes", "admitted_bytes", "waiting_bytes", "running", "waiting", "workers",
        "memory_model"}, "uptime_s"}`, with CPU worker processes `"cpu_workers": {"count", "in_flight",
        "restarts"}`: degraded with the OpenCV fallback, a failing GPU or a stuck worker; `gpu_mem` is the
        string the seed's probes read; `gpu`, `budget_bytes` and `memory_model` are null on the CPU."""
        return service.health()

    @app.get("/livez", tags=["operations"])
    def livez() -> dict:
        """The process answers: Kubernetes' liveness probe."""
        return {"status": "alive"}

    readiness = {"description": "ready or not, the same shape", "content": {"application/json": {"schema": {
        "type": "object", "required": ["ready", "draining", "queue"],
        "properties": {"ready": {"type": "boolean"}, "draining": {"type": "boolean"},
                       "queue": {"type": "object", "properties": {"depth": {"type": "integer"},
                                                                  "capacity": {"type": "integer"}}}}}}}}

    @app.get("/readyz", response_class=JSONResponse, responses={200: readiness, 503: readiness}, tags=["operations"])
    def readyz() -> JSONResponse:
        """200 once the model is loaded and warm, the queue has room, the GPU works and no repair has
        held a worker past the watchdog bound (--queue-stuck-after-s); 503 otherwise, and from the
        moment a SIGTERM starts the drain (Kubernetes' readiness probe)."""
        ready = service.ready()
        return JSONResponse({"ready": ready, "draining": service.draining,
                             "queue": {"depth": service.queue.depth, "capacity": service.queue.capacity}},
                            status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"],
             responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}})
    def prometheus_metrics() -> Response:
        """Prometheus text: `inpaint_requests_total{status}` (repairs and job submissions),
        `inpaint_request_duration_seconds`, `inpaint_queue_depth`, `inpaint_gpu_available`,
        `inpaint_model_loaded`, `inpaint_gpu_budget_bytes` (CUDA only), `inpaint_gpu_admitted_bytes`,
        `inpaint_gpu_waiting_bytes`, `inpaint_saves_pending`, `inpaint_pinned_host_bytes` (CUDA only); with CPU
        workers `inpaint_cpu_workers_in_flight` and `inpaint_cpu_worker_restarts_total`."""
        # A plain route: a mounted ASGI app would answer /metrics with a redirect to /metrics/.
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    # The probes and metrics answer any other method with 405 themselves, not with Gradio's 404
    # (the router prefers a route matching path and method to one matching the path alone).
    for route in [route for route in app.routes if isinstance(route, APIRoute)
                  and not route.path.startswith(API_PREFIX)]:
        app.router.add_route(route.path, AnyMethod(partial(method_not_allowed, ", ".join(sorted(route.methods)))),
                             include_in_schema=False)

    # Last of the API's routes: anything else under /api/ is answered here, not by Gradio's 404.
    async def no_such_route(request: Request) -> JSONResponse:
        allowed = sorted({method for route in app.routes if isinstance(route, APIRoute)
                          and route.matches(request.scope)[0] is Match.PARTIAL for method in route.methods})
        if allowed:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed on "
                                  f"{request.url.path}; use {', '.join(allowed)}", {"Allow": ", ".join(allowed)})
        return error_response(404, "not_found", f"no route {request.url.path}; the API's routes are "
                                                f"{INPAINT_PATH}, {JOBS_PATH} and /api/v1/monitor (see /docs)")

    app.router.add_route(API_PREFIX + "{path:path}", AnyMethod(no_such_route), include_in_schema=False)

    return app
