"""Every error the project raises on purpose, in one tree.

    InpaintError                    message (one line, for people) and a stable `code`
    ├── InputError                  what was sent cannot be repaired as sent
    │   ├── ImageError              a file that is not an image we decode (`part`: image or mask)
    │   │   └── ImageTooLargeError  over the size limits (file bytes, pixels, side)
    │   ├── OptionError             an option out of its range (`name`)
    │   ├── MaskError               a mask that does not fit its photo, or is empty
    │   └── TooLargeForGpuError     more than this server's GPU budget, even cropped
    ├── UnavailableError            the server cannot take the job now (`retry_after_s`)
    │   ├── QueueFullError          every queue slot is taken
    │   ├── ShuttingDownError       the server is draining
    │   ├── GpuOutOfMemoryError     the GPU ran out of memory twice for this job
    │   └── GpuFailedError          the GPU failed; the server reports itself not ready
    ├── JobError                    a batch job's state does not allow what was asked (`job_id`)
    │   ├── JobNotFoundError        no such job: never submitted, or swept with its result
    │   └── JobNotFinishedError     its result, asked for while it is pending or after it failed
    ├── StorageError                the outputs folder cannot take a write (full, read-only, not a folder)
    ├── ModelError                  the model cannot be loaded or run as configured
    │   ├── CheckpointError         a checkpoint file we refuse (UnsafeCheckpointError below it)
    │   ├── DownloadError           a download that failed, nothing half-written left
    │   └── EngineError             a device or precision this machine does not have
    ├── ConfigError                 a setting or folder the operator must fix
    └── UsageError                  a command line whose parts do not fit together

The root derives from Exception, not from ValueError or another builtin, so `except InpaintError`
catches what a user or operator can get wrong and never a bug's ValueError. Errors carry data
(the part, sizes, `retry_after_s`), never HTTP status codes: webui/errors.py maps classes to
statuses and headers at the edge, the CLI prints the message in one line.
"""

from __future__ import annotations


class InpaintError(Exception):
    """The root. `code` is stable (clients branch on it); the message may change."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class InputError(InpaintError):
    code = "invalid_input"


class ImageError(InputError):
    """A problem with an image the user supplied. `part` is "image" or "mask" when the caller
    knows which upload is wrong (decode_image_and_mask sets it), else None."""

    part: str | None = None

    @property
    def code(self) -> str:  # type: ignore[override]
        return f"invalid_{self.part or 'image'}"


class ImageTooLargeError(ImageError):
    @property
    def code(self) -> str:  # type: ignore[override]
        return f"{self.part or 'image'}_too_large"


class OptionError(InputError):
    code = "invalid_option"

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


class MaskError(InputError):
    code = "invalid_mask"


class TooLargeForGpuError(InputError):
    code = "too_large_for_gpu"

    def __init__(self, message: str, needed_bytes: int, budget_bytes: int):
        super().__init__(message)
        self.needed_bytes, self.budget_bytes = needed_bytes, budget_bytes


class UnavailableError(InpaintError):
    """Nothing is wrong with the job; retry after `retry_after_s` seconds."""

    code = "unavailable"
    default_retry_after_s = 5

    def __init__(self, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.retry_after_s = self.default_retry_after_s if retry_after_s is None else retry_after_s


class QueueFullError(UnavailableError):
    code = "queue_full"


class ShuttingDownError(UnavailableError):
    code = "shutting_down"


class GpuOutOfMemoryError(UnavailableError):
    code = "out_of_memory"


class GpuFailedError(UnavailableError):
    code = "gpu_error"
    default_retry_after_s = 30


class JobError(InpaintError):
    code = "job_error"

    def __init__(self, message: str, job_id: str):
        super().__init__(message)
        self.job_id = job_id


class JobNotFoundError(JobError):
    code = "job_not_found"


class JobNotFinishedError(JobError):
    """`status`: the job's (queued, running or failed)."""

    def __init__(self, message: str, job_id: str, status: str):
        super().__init__(message, job_id)
        self.status = status

    @property
    def code(self) -> str:  # type: ignore[override]
        return "job_failed" if self.status == "failed" else "job_not_done"


class StorageError(InpaintError):
    code = "outputs_unwritable"


class ModelError(InpaintError):
    code = "model_error"


class CheckpointError(ModelError):
    """A checkpoint that cannot be loaded; the message says why, in one line."""

    code = "bad_checkpoint"


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle tries to call something other than a tensor or container constructor."""

    code = "unsafe_checkpoint"


class DownloadError(ModelError):
    """The download failed; no partial file was left behind. The message is one line."""

    code = "download_failed"


class EngineError(ModelError):
    """A request the engine cannot serve as configured (bad argument, unavailable device)."""

    code = "engine_error"


class ConfigError(InpaintError):
    code = "bad_config"


class UsageError(InpaintError):
    code = "usage"
