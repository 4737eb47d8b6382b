"""What the OpenAPI document says each route answers: the error schema with every code a route
can answer, the image media types and the headers, so that /docs and clients generated from
/openapi.json see what the server really sends (schemathesis checks it against a live server).

A route lists the error codes it can answer (`errors(...)`); their statuses and meanings come
from ERRORS, the one catalogue of the API's error codes.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field

from lama.engine import STRATEGIES
from lama.output_formats import OUTPUT_FORMATS


class Problem(BaseModel):
    code: str = Field(description="stable, for programs: e.g. queue_full")
    message: str = Field(description="one line for people")


class ErrorResponse(BaseModel):
    """Every answer under /api/ that is not 2xx."""

    error: Problem


# What the jobs routes answer (webui/api.py shapes them from service.batch_jobs.Job).
class JobAccepted(BaseModel):
    id: str = Field(description="the job's id: 32 hex digits, unguessable")
    status: str = Field(description="queued")
    url: str = Field(description="where to poll the job (also the Location header)")


class JobStatus(BaseModel):
    id: str
    status: str = Field(description="queued | running | done | failed")
    error: Problem | None = Field(description="why it failed, null unless failed; its code: out_of_memory, "
                                              "gpu_error or internal_error (as a repair's), result_not_saved (the "
                                              "outputs folder could not take it), interrupted (its server stopped "
                                              "before it ran: submit it again)")
    result_url: str | None = Field(description="where to fetch the result; null until done")
    timings: dict[str, float] = Field(description="seconds per stage once done: decode, queue, infer, encode, "
                                                  "save, total")


# (status, code): when the API answers with it.
ERRORS: dict[tuple[int, str], str] = {
    (400, "invalid_request"): "the multipart body cannot be parsed",
    (400, "invalid_image"): "the image is not a PNG, JPEG or WebP the server can decode",
    (400, "invalid_mask"): "the mask is not a PNG, JPEG or WebP the server can decode",
    (401, "unauthorized"): "the server has an API token and the request lacks `Authorization: Bearer <token>`",
    (403, "cross_site_request"): "a page of another site sent it from a browser (see --allowed-origins)",
    (404, "job_not_found"): "no such job: never submitted, or swept with its result by the outputs retention",
    (409, "job_not_done"): "the job is still queued or running: poll it until it is done",
    (409, "job_failed"): "the job failed and has no result; the job's `error` says why",
    (413, "upload_too_large"): "the request body is over its limit (two files at --max-upload-mb and the form)",
    (413, "image_too_large"): "the image's file, pixels or side are over the server's limits",
    (413, "mask_too_large"): "the mask's file, pixels or side are over the server's limits",
    (413, "too_large_for_gpu"): "even cropped to the masked regions the repair needs more GPU memory than a "
                                "repair may have",
    (421, "host_not_allowed"): "the Host header names a host this server does not answer to (see --allowed-hosts)",
    (422, "invalid_request"): "a field is missing or not of its type",
    (422, "invalid_option"): "a field's value is out of its range",
    (422, "mask_size_mismatch"): "the mask's size differs from the image's",
    (500, "internal_error"): "a failure nobody foresaw; the server's log has the details",
    (503, "queue_full"): "the repair queue (or the pending jobs) are at capacity",
    (503, "shutting_down"): "the server is draining before it stops",
    (503, "out_of_memory"): "the GPU ran out of memory for this image twice",
    (503, "gpu_error"): "the GPU failed; the server reports itself not ready until it works again",
    (503, "worker_lost"): "the CPU worker process holding the repair stopped; another takes its place",
    (507, "outputs_unwritable"): "the server cannot write a job's record to its outputs folder (full, read-only)",
}

# On every route under /api/: the edge and the token check come before any route.
EVERY_API_ROUTE = ("unauthorized", "host_not_allowed", "internal_error")
# What a repair's upload can be refused with before it is queued, by a direct repair or a job.
UPLOAD_ERRORS = ("invalid_request", "invalid_image", "invalid_mask", "cross_site_request", "upload_too_large",
                 "image_too_large", "mask_too_large", "too_large_for_gpu", "invalid_option", "mask_size_mismatch",
                 "queue_full", "shutting_down")

RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "required": True,
                               "schema": {"type": "integer", "minimum": 0}}}
STATUS_HEADERS = {401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
                  503: RETRY_AFTER}

REPAIR_HEADERS = {
    "Server-Timing": {"description": "milliseconds per stage, as `stage;dur=ms`: decode, queue, preprocess, infer, "
                                     "postprocess, encode, total; the result's file is written after the answer (its "
                                     "`save` stage is in the request log and /metrics)",
                      "required": True, "schema": {"type": "string"}},
    "X-Strategy": {"description": "the strategy that ran: `crop` where the one asked for would not fit the GPU "
                                  "memory budget", "required": True,
                   "schema": {"type": "string", "enum": list(STRATEGIES)}},
    "X-Saved-As": {"description": "the result's file under the server's outputs folder (a repair's is written just "
                                  "after the answer; where that fails, the server's log says so)",
                   "schema": {"type": "string"}},
    "Content-Disposition": {"description": "the download's name: `<upload's stem>_repaired.<ext>`", "required": True,
                            "schema": {"type": "string"}},
}


def errors(*codes: str | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses` for the errors a route answers with (a code, or (status, code) where a
    code has several statuses), grouped by status, each with the error schema, an example per
    code and the status's headers; the errors of every API route added."""
    wanted = {(status, code) for status, code in ERRORS for item in (*codes, *EVERY_API_ROUTE)
              if item == code or item == (status, code)}
    known = set(ERRORS) | {code for _, code in ERRORS}
    if unknown := [item for item in codes if item not in known]:
        raise ValueError(f"errors missing from ERRORS: {unknown}")
    by_status: dict[int, list[str]] = {}
    for status, code in ERRORS:  # in the catalogue's order
        if (status, code) in wanted:
            by_status.setdefault(status, []).append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, status_codes in by_status.items():
        examples = {code: {"summary": ERRORS[status, code],
                           "value": {"error": {"code": code, "message": ERRORS[status, code]}}}
                    for code in status_codes}
        response: dict[str, Any] = {
            "model": ErrorResponse,
            "description": f"{HTTPStatus(status).phrase}: " + "; ".join(f"`{code}`" for code in status_codes),
            "content": {"application/json": {"examples": examples}},
        }
        if status in STATUS_HEADERS:
            response["headers"] = STATUS_HEADERS[status]
        responses[status] = response
    return responses


def image_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A 200 whose body is an image in one of the formats a repair writes."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    response: dict[str, Any] = {"description": description,
                                "content": {fmt.media_type: binary for fmt in OUTPUT_FORMATS.values()}}
    if headers:
        response["headers"] = headers
    return response
