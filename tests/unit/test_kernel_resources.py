"""tools/kernel_resources.py: the residual layers' kernels compiled for a Hopper GPU on a box without
one, each production tile's registers, spill stack and shared memory read back from the cubin."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from lama.fastnet import PADDED_MAP_PIXELS
from lama.kernels import LARGE_MAP_PIXELS
from support.paths import ROOT


def test_each_residual_layer_tile_compiles_for_hopper_and_reports_its_resources():
    if importlib.util.find_spec("triton") is None:
        pytest.fail("Triton is one of the test extras: pip install -e '.[test]'")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "kernel_resources.py"), "--arch", "90"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines()
            if line.startswith("| local") or line.startswith("| global")]
    # Both layers, each with the gather kernel's tile for large maps (from 320×240 on) and the one
    # for the rest, then with the padded maps' kernel, which Hopper runs from 160×120 on.
    assert [(layer.strip(), int(least)) for layer, least, *_ in rows] == [
        ("local", LARGE_MAP_PIXELS), ("local", 0), ("global", LARGE_MAP_PIXELS), ("global", 0),
        ("local, padded maps", PADDED_MAP_PIXELS), ("global, padded maps", PADDED_MAP_PIXELS)]
    for _, _, tile, registers, stack, shared in rows:
        assert tile.strip().startswith("("), tile
        assert 1 <= int(registers) <= 255 and int(stack) >= 0 and int(shared) > 0
    # The padded kernel reads and writes every operand through tensor descriptors so that its
    # 128×128 tiles hold no address a value: with pointer tensors in its epilogue it took the
    # 255-register cap and spilled (Triton 3.6 and 3.9 alike).
    for layer, _, _, registers, stack, _ in rows[4:]:
        assert int(registers) < 255 and int(stack) == 0, (layer, registers, stack)
