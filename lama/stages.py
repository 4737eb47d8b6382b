"""The stages of one repair: the names of Server-Timing, the request log's timings,
inpaint_stage_duration_seconds{stage} and the dashboard's series. Listed in the order tables
show them; a request meets preprocess before the queue (the GPU workers run only the model)."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    DECODE = "decode"  # the uploads to arrays (service)
    QUEUE = "queue"  # waiting for a GPU worker and the memory budget (service)
    PREPROCESS = "preprocess"  # layout, mask refinement, the plan, the model inputs (engine, before the queue)
    INFER = "infer"  # the model runs, transfers included (engine, on a GPU worker)
    POSTPROCESS = "postprocess"  # the feather ramp (while the model runs), scaling back, feathering, the paste (engine)
    ENCODE = "encode"  # the result to PNG/JPEG/WebP (service)
    SAVE = "save"  # the atomic write under outputs/ (service)
    # From decoding's start to the saved result: what the request waited in the server. Not the
    # stages' sum: the feather ramp (postprocess) is computed while the model runs.
    TOTAL = "total"


MODEL_STAGES = (Stage.PREPROCESS, Stage.INFER, Stage.POSTPROCESS)  # what the engine's call costs
