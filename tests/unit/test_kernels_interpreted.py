"""lama.kernels' Triton kernels checked on the CPU by Triton's interpreter: each kernel against
torch's own operations at odd sizes, and the fast path's whole forward of the tiny checkpoint
against the reference model (tests/support/interpreted_kernels.py, in a process of its own: the
interpreter is chosen when Triton loads). On the GPU box tests/gpu/test_cuda.py checks the same
kernels compiled; here CI catches an indexing or arithmetic slip before a GPU ever runs them."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def errors(tiny_dir):
    if importlib.util.find_spec("triton") is None:
        pytest.fail("Triton is one of the test extras (its interpreter checks the GPU kernels): "
                    "pip install -e '.[test]'")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "interpreted_kernels.py"), str(tiny_dir)],
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_kernel_computes_what_torch_computes(errors):
    """fp32 to float32's rounding, fp16 to half precision's; the padding exactly."""
    kernels = {name: error for name, error in errors.items() if not name.startswith(("FastGenerator", "overflow flag"))}
    assert len(kernels) == 16, sorted(kernels)
    for name, error in kernels.items():
        tolerance = 0.0 if name.startswith("reflect_pad") else 2e-3 if name.endswith("float16") else 1e-5
        assert error <= tolerance, (name, error)


def test_the_conv_sum_kernels_flag_what_is_not_finite_and_nothing_else(errors):
    """Both kernels' overflow flag: nan for inf or nan in an input and for an output past fp16's
    range, 0 for finite maps and for a sum past it that the ReLU cuts to 0."""
    flags = {name: wrong for name, wrong in errors.items() if name.startswith("overflow flag")}
    assert len(flags) == 12, sorted(flags)
    assert [name for name, wrong in flags.items() if wrong] == []


def test_the_fast_forward_with_its_kernels_interpreted_is_the_reference_model(errors):
    assert errors["FastGenerator tiny 56x40"] < 1e-4
    assert errors["FastGenerator tiny 56x40, padded maps"] < 1e-4
