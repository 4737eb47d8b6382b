"""The engine as tests configure and watch it."""

from __future__ import annotations

import contextlib

from lama.engine import HDSettings


SMALL_HD = HDSettings(crop_trigger=48, crop_margin=8, resize_limit=40)


@contextlib.contextmanager
def model_calls(engine):
    """Shapes of every generator call inside the block: what the model was asked to do."""
    shapes = []
    handle = engine.backend.generator.register_forward_pre_hook(lambda _module, args: shapes.append(tuple(args[0].shape)))
    try:
        yield shapes
    finally:
        handle.remove()
