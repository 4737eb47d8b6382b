"""The model loads beside the web stack's imports with short GIL turns (webui/compose.py says why),
and the server then runs with Python's own switch interval."""

from __future__ import annotations

import sys

import pytest

from lama import loading
from support.app import make_settings, serve
from webui import compose


def test_the_model_loads_with_short_turns_and_the_server_runs_with_python_s_own(tiny_dir, tmp_path, monkeypatch):
    default = sys.getswitchinterval()
    assert compose.START_UP_SWITCH_INTERVAL_S < default
    seen = []
    load_backend = loading.load_backend

    def watched(*args, **kwargs):
        seen.append(sys.getswitchinterval())
        return load_backend(*args, **kwargs)

    monkeypatch.setattr(loading, "load_backend", watched)
    with serve(make_settings(tiny_dir, tmp_path), wait_ready=False):
        assert seen == [compose.START_UP_SWITCH_INTERVAL_S], "the model's load ran with the short interval"
        assert sys.getswitchinterval() == default, "and the server with Python's own"


def test_the_interval_comes_back_when_the_start_up_fails():
    default = sys.getswitchinterval()
    with pytest.raises(RuntimeError), compose.short_gil_turns():
        assert sys.getswitchinterval() == compose.START_UP_SWITCH_INTERVAL_S
        raise RuntimeError("a model that cannot load")
    assert sys.getswitchinterval() == default
