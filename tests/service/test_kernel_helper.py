"""lama/kernel_helper.py: the warm-up's kernels compiled by a process of its own while the server
starts, where the kernel cache records no completed warm-up of the same configuration."""

import logging
import subprocess
import sys

import pytest

from lama.engine import InpaintEngine
from lama.kernel_helper import MARKER, KernelHelper
from service.warmup import WarmUp
from support.service import repair_service


def started(cache, tiny_dir, precision="auto"):
    return KernelHelper.start(cache, str(tiny_dir), "cpu", precision, None, gpu_memory_fraction=0.35)


def test_the_helper_runs_until_a_completed_warm_up_is_recorded_and_again_when_the_configuration_changes(
        tmp_path, tiny_dir, caplog):
    """Its process is the real one (`python -m lama.kernel_helper`, on the CPU, where compiling
    ahead has nothing to do): it must load the model and exit cleanly."""
    caplog.set_level(logging.INFO)
    cache = tmp_path / "kernel-cache"
    helper = started(cache, tiny_dir)
    assert helper.process is not None, "an empty cache starts a helper"
    share = helper.process.args[helper.process.args.index("--gpu-memory-fraction") + 1]
    assert share == "0.35", "on a shared GPU the helper must keep to the server's share"
    helper.wait(timeout_s=120)
    assert helper.process is None and not (cache / MARKER).exists(), "recorded before any warm-up completed"
    assert "the helper process is done; the warm-up waited" in caplog.text
    helper.mark_complete()
    assert started(cache, tiny_dir).process is None, "a completed warm-up's kernels are cached: no helper"
    again = started(cache, tiny_dir, precision="fp32")
    assert again.process is not None, "another precision compiles other kernels"
    again.stop()
    assert again.process is None


def test_a_failing_or_hanging_helper_only_leaves_the_compiling_to_the_warm_up(tmp_path, tiny_dir, caplog):
    caplog.set_level(logging.WARNING)
    failing = KernelHelper.start(tmp_path, str(tmp_path / "no-such-model.safetensors"), "cpu", "auto", None)
    failing.wait(timeout_s=120)
    assert failing.process is None and "helper process exited with status" in caplog.text
    hanging = KernelHelper(tmp_path, {}, subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
    process = hanging.process
    hanging.wait(timeout_s=0.5)
    assert hanging.process is None and process.poll() is not None, "a hanging helper is stopped"
    assert "still compiling after 0 s and was stopped" in caplog.text


def test_an_unwritable_cache_folder_costs_the_record_only(tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    KernelHelper(not_a_folder / "cache", {"a": 1}, None).mark_complete()
    assert "cannot record the completed warm-up" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


class Helper:
    """What the warm-up does with the helper, in order."""

    def __init__(self, steps):
        self.steps = steps

    def wait(self):
        self.steps.append("waited for the helper")

    def mark_complete(self):
        self.steps.append("recorded")

    def stop(self):
        self.steps.append("stopped")


@pytest.mark.parametrize("fails", [False, True])
def test_the_warm_up_waits_for_the_helper_before_compiling_and_records_only_a_completed_warm_up(tmp_path, tiny_dir,
                                                                                               fails):
    engine = InpaintEngine(tiny_dir, device="cpu")
    steps = []

    def warm(wait_for):
        steps.append("forwards recorded")
        wait_for()
        steps.append("warm-up")
        if fails:
            raise RuntimeError("out of memory")

    engine.warmup = warm
    with repair_service(engine, tmp_path) as service:
        warm_up = WarmUp(engine, service.queue, service, "balanced", kernels=Helper(steps))
        if fails:
            with pytest.raises(RuntimeError):
                warm_up.run()
        else:
            warm_up.run()
        warm_up.stop()
    assert steps == ["forwards recorded", "waited for the helper", "warm-up"] + ([] if fails else ["recorded"]) + \
        ["stopped"]


def test_the_engine_s_warm_up_waits_before_it_compiles_even_where_there_is_nothing_to_compile(tiny_dir):
    """On the CPU (or a backend without kernels) the helper is still waited for: its process must
    have left the GPU before the warm-up measures memory."""
    engine = InpaintEngine(tiny_dir, device="cpu")
    waits = []
    engine.warmup(wait_for=lambda: waits.append(1))
    assert waits == [1]
