"""The error tree (lama/errors.py) and the one table that maps it to HTTP (webui/errors.py)."""

from __future__ import annotations

import inspect

import pytest

from lama import cli, errors
from webui.errors import headers_of, status_of

TREE = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.InpaintError)]


def test_every_project_error_has_one_root_and_no_builtin_base_but_exception():
    """A bug's ValueError or RuntimeError must never be caught as a user's mistake."""
    assert len(TREE) >= 18
    for cls in TREE:
        assert not issubclass(cls, (ValueError, RuntimeError, OSError, LookupError)), cls


def test_errors_carry_data_not_status_codes():
    full = errors.QueueFullError("the repair queue is full (4 jobs); retry in 3 s", 3)
    assert (full.retry_after_s, full.code) == (3, "queue_full")
    assert errors.GpuFailedError("gone").retry_after_s == 30
    too_large = errors.TooLargeForGpuError("too large", needed_bytes=9, budget_bytes=4)
    assert (too_large.needed_bytes, too_large.budget_bytes) == (9, 4)
    mask = errors.ImageTooLargeError("mask: file is 60 MB")
    mask.part = "mask"
    assert mask.code == "mask_too_large"
    for cls in TREE:
        assert not {"status", "status_code", "headers"} & set(vars(cls)), cls


@pytest.mark.parametrize("error, status, headers", [
    (errors.ImageError("not an image"), 400, {}),
    (errors.ImageTooLargeError("over the limit"), 413, {}),
    (errors.TooLargeForGpuError("over the budget", 2, 1), 413, {}),
    (errors.OptionError("dilate", "dilate must be between 0 and 256 px"), 422, {}),
    (errors.MaskError("empty", code="empty_mask"), 422, {}),
    (errors.QueueFullError("full", 7), 503, {"Retry-After": "7"}),
    (errors.ShuttingDownError("draining"), 503, {"Retry-After": "5", "Connection": "close"}),
    (errors.GpuOutOfMemoryError("twice"), 503, {"Retry-After": "5"}),
    (errors.GpuFailedError("lost"), 503, {"Retry-After": "30"}),
    (errors.CheckpointError("bad"), 500, {}),
    (ValueError("a bug"), 500, {}),
])
def test_the_web_table_maps_each_kind(error, status, headers):
    assert (status_of(error), headers_of(error)) == (status, headers)


def test_the_cli_gives_one_line_for_user_errors_and_a_traceback_for_bugs(monkeypatch, capsys):
    def fails_with(error):
        def run(_args):
            raise error
        return run

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["info", "x"])
    monkeypatch.setattr(parser, "parse_args", lambda _argv=None: args)
    args.run = fails_with(errors.CheckpointError("x is not a checkpoint"))
    assert cli.main([]) == 1
    assert capsys.readouterr().err == "error: x is not a checkpoint\n"
    args.run = fails_with(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        cli.main([])
