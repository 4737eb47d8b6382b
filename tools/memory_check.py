"""On the GPU box: the memory model the warm-up learns against the real peaks, per size.

    python tools/memory_check.py

Full-size random big-lama under the default preset (70 % of the card, longest side 2560):
prints the learned model, what the process holds at rest, the budget, and for each size the
estimate of a repair (strategy 'original') next to its measured peak, first run and again.
"""

from lama.engine import HDSettings, InpaintEngine
from lama.synthetic import synthetic_case

FRACTION = 0.7

engine = InpaintEngine.with_random_weights(device="cuda", hd=HDSettings(max_side=2560))
engine.device.limit_memory(FRACTION)
engine.warmup()
print(engine.memory.describe(), "| at rest", engine.steady_gpu_bytes, "| budget", engine.gpu_budget())
for width, height in ((640, 480), (1280, 960), (1536, 1152), (2560, 1920)):
    image, mask = synthetic_case(width, height)
    estimate = engine.memory_estimate(mask, "original")
    peaks = [engine.device.peak_above_baseline(lambda: engine.inpaint(image, mask, strategy="original"))
             for _ in range(2)]
    print(f"{width}×{height}: estimate {estimate / 1e6:.0f} MB, real peak {peaks[0] / 1e6:.0f} / "
          f"{peaks[1] / 1e6:.0f} MB, estimate/peak {estimate / max(peaks):.2f}")
