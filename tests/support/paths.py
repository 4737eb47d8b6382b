"""Where things are."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
TESTS = ROOT / "tests"


def fixtures() -> Path:
    """``$LAMA_FIXTURES``, else ``shared/fixtures`` beside the checkout (``<root>/main``, ``<root>/shared``)."""
    override = os.environ.get("LAMA_FIXTURES")
    return Path(override) if override else ROOT.parent / "shared" / "fixtures"


def tiny_model() -> Path:
    """The tiny test checkpoint (big-lama's layout, 0.5 M parameters): the tools' CPU default."""
    return fixtures() / "tiny-lama"
