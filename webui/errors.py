"""The one table from the application's errors to HTTP: status codes and headers live here only.

lama.errors draws the tree; a class not named below answers 500. HttpError is for the few
refusals that exist only at the edge (a missing API token), which the application never raises.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from lama.errors import (ImageError, ImageTooLargeError, InpaintError, InputError, JobNotFinishedError,
                         JobNotFoundError, ShuttingDownError, StorageError, TooLargeForGpuError, UnavailableError)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[InpaintError], int], ...] = (
    (ImageTooLargeError, 413),
    (TooLargeForGpuError, 413),
    (ImageError, 400),
    (InputError, 422),
    (JobNotFoundError, 404),
    (JobNotFinishedError, 409),
    (UnavailableError, 503),
    (StorageError, 507),
)


class HttpError(Exception):
    """A refusal of the web layer itself, already in HTTP's terms."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def status_of(error: BaseException) -> int:
    if isinstance(error, HttpError):
        return error.status
    return next((status for kind, status in STATUS_BY_ERROR if isinstance(error, kind)), 500)


def headers_of(error: BaseException) -> dict[str, str]:
    if isinstance(error, HttpError):
        return error.headers
    headers = {}
    if isinstance(error, UnavailableError):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, ShuttingDownError):
        # The client should open its next connection elsewhere (another replica behind the balancer).
        headers["Connection"] = "close"
    return headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The documented shape of every /api error: {"error": {"code", "message"}}."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def response_for(error: InpaintError | HttpError) -> JSONResponse:
    return error_response(status_of(error), error.code, error.message, headers_of(error))
