"""Shared pytest fixtures: where the project's test data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def locate_fixtures() -> Path:
    """``$LAMA_FIXTURES``, else ``shared/fixtures`` beside the checkout (``<root>/main``, ``<root>/shared``)."""
    override = os.environ.get("LAMA_FIXTURES")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = locate_fixtures()
    if not path.is_dir():
        # A failure, not a skip: tests that silently stop running prove nothing.
        pytest.fail(f"test fixtures not found at {path}; set LAMA_FIXTURES to the shared/fixtures folder")
    return path


@pytest.fixture(scope="session")
def tiny_dir(fixtures_dir: Path) -> Path:
    """The tiny big-lama checkpoint in the official directory layout, with its reference cases."""
    return fixtures_dir / "tiny-lama"
