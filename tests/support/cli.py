"""`python -m lama` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from support.paths import ROOT as REPO


def run_lama(*args, cwd=REPO, preexec_fn=None, path_first=None):
    """In `cwd` (the checkout unless a test needs another: what the defaults find depends on it),
    always with this checkout's package; `preexec_fn` runs in the child before it starts (limits);
    `path_first`: a folder whose modules shadow everything else's."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*([str(path_first)] if path_first else []), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "lama", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300, preexec_fn=preexec_fn)
