"""The stages of one repair, in the order a request meets them: the names of Server-Timing,
the request log's timings, inpaint_stage_duration_seconds{stage} and the dashboard's series."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    DECODE = "decode"  # the uploads to arrays (service)
    QUEUE = "queue"  # waiting for a GPU worker and the memory budget (service)
    PREPROCESS = "preprocess"  # layout and mask refinement (engine)
    INFER = "infer"  # the model runs, transfers included (engine)
    POSTPROCESS = "postprocess"  # feathering, layout back, the paste (engine)
    ENCODE = "encode"  # the result to PNG/JPEG/WebP (service)
    SAVE = "save"  # the atomic write under outputs/ (service)
    TOTAL = "total"  # all of the above, as the server measured it


MODEL_STAGES = (Stage.PREPROCESS, Stage.INFER, Stage.POSTPROCESS)  # what the engine's call costs
