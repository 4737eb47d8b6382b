"""How much GPU memory a repair needs, learned at warm-up, so that concurrent jobs can be
admitted by a budget instead of racing each other into CUDA out-of-memory.

What a repair allocates on the GPU is dominated by the generator's activations, which grow
with the number of pixels the model sees; on top of that come buffers whose size hardly
depends on the image (cuFFT plans, cuDNN workspaces, the graph runner's copies). So the
warm-up measures, for each of its sizes, the peak allocated above what was held before the
run, and fits

    bytes ≈ fixed + per_pixel × model-input pixels

The engine turns a job into its largest model input (the strategy decides it) and this
model turns that into bytes; the service's queue admits jobs while their bytes fit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The fit bounds every measured peak; this margin covers what a warm-up cannot show: the
# allocator rounds blocks up and fragments (the per-process limit counts reserved memory,
# the measurement allocated memory), cuDNN and cuFFT may pick other algorithms and
# workspaces at sizes the warm-up did not see, and large jobs are extrapolated from the
# largest warm-up size. 25 % keeps a burst of jobs that were each estimated right below
# the limit; a real out-of-memory error anyway is retried once by the service.
SAFETY_MARGIN = 1.25


@dataclass(frozen=True)
class MemoryModel:
    """bytes ≈ fixed_bytes + per_pixel_bytes × pixels, the margin already included."""

    fixed_bytes: float
    per_pixel_bytes: float
    samples: tuple[tuple[int, int], ...] = ()  # the (pixels, peak bytes) it was fitted on

    def bytes_for(self, pixels: int) -> int:
        """The estimate for a model input of `pixels` pixels; 0 when the model does not run."""
        if pixels <= 0:
            return 0
        return math.ceil(self.fixed_bytes + self.per_pixel_bytes * pixels)

    @classmethod
    def fit(cls, samples: Sequence[tuple[int, int]], margin: float = SAFETY_MARGIN) -> MemoryModel:
        """A line through (pixels, peak bytes) measurements that lies on or above every one of
        them, times `margin`.

        The slope comes from least squares over all sizes rather than from the largest ratio:
        what extrapolates to images larger than the warm-up's is the per-pixel growth, and a
        fixed cost would make the ratio of a small size overstate it (and that of a large size
        understate the small ones). The intercept is then raised until no measurement lies
        above the line, so each size the warm-up saw is covered, not merely on average. With
        one size, or a slope that is not positive (measurements too noisy to tell), the
        largest bytes-per-pixel ratio through the origin bounds them all instead.
        """
        points = [(int(pixels), int(peak)) for pixels, peak in samples if pixels > 0]
        if not points:
            raise ValueError("fitting a memory model needs at least one measurement with pixels > 0")
        if margin < 1:
            raise ValueError(f"the safety margin must be at least 1, got {margin}")
        xs = [float(x) for x, _ in points]
        ys = [float(y) for _, y in points]
        try:
            slope = statistics.linear_regression(xs, ys).slope
        except statistics.StatisticsError:  # one size (or one size measured twice): no slope to fit
            slope = 0.0
        if slope <= 0:
            slope, intercept = max(y / x for x, y in points), 0.0
        else:
            # Never below zero: a negative fixed cost would estimate tiny jobs at nothing.
            intercept = max(0.0, max(y - slope * x for x, y in zip(xs, ys)))
        return cls(intercept * margin, slope * margin, tuple(points))

    def describe(self) -> dict[str, Any]:
        """For /healthz and the log."""
        return {"fixed_bytes": round(self.fixed_bytes), "per_pixel_bytes": round(self.per_pixel_bytes, 1),
                "samples": [list(sample) for sample in self.samples]}


def budget_bytes(total_bytes: int, fraction: float, steady_bytes: int) -> int:
    """The bytes concurrent jobs may hold together: the share of the card the process may
    reserve (lama.device.Device.limit_memory) less what it holds at rest."""
    return max(0, int(total_bytes * fraction) - steady_bytes)
