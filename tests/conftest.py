"""Shared pytest fixtures: where the project's test data lives."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything loads torch (its OpenMP runtime reads this once, when it loads), here and in every
# process the tests start, which inherit it. By default torch's OpenMP threads spin for a while
# after each parallel region: the tiny checkpoint's forwards are hundreds of small regions, and on
# the 2-core CI box, shared by dozens of servers, browsers and the two pytest workers, those spins
# held cores the other processes were waiting for (a fifth of the suite's CPU time:
# docs/PROFILING.md). Waiting threads sleep instead; what the tests check does not change.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

import lama  # noqa: F401 - lama's OpenCV caps into the environment before support.app imports cv2
from support.app import make_settings, serve
from support.paths import fixtures


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = fixtures()
    if not path.is_dir():
        # A failure, not a skip: tests that silently stop running prove nothing.
        pytest.fail(f"test fixtures not found at {path}; set LAMA_FIXTURES to the shared/fixtures folder")
    return path


@pytest.fixture(scope="session")
def tiny_dir(fixtures_dir: Path) -> Path:
    """The tiny big-lama checkpoint in the official directory layout, with its reference cases."""
    return fixtures_dir / "tiny-lama"


# The app most service tests share (one per module): support.app builds it.
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def client(tiny_dir, folder):
    settings = make_settings(tiny_dir, folder)
    assert settings.api_token is None and settings.auth is None
    with serve(settings) as client:
        yield client


@pytest.fixture(scope="module")
def outputs(folder):
    return folder / "outputs"
