"""`python -m lama` as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from support.paths import ROOT as REPO


def run_lama(*args):
    return subprocess.run([sys.executable, "-m", "lama", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
