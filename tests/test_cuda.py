"""The GPU path. Skipped where there is no CUDA (CI); run on the device machine."""

import cv2
import numpy as np
import pytest
import torch

from lama.bench import strict_fp32
from lama.synthetic import synthetic_case
from lama.engine import InpaintEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_precision_on_cuda_is_fp16_with_half_weights(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="auto")
    assert engine.device.type == "cuda" and engine.precision == "fp16"
    assert all(p.dtype == torch.float16 and p.is_cuda for p in engine.generator.parameters())


def test_fp32_on_cuda_matches_the_official_fixture(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="cuda", precision="fp32")
    image = cv2.cvtColor(cv2.imread(str(tiny_dir / "cases/stroke_100x76_image.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(tiny_dir / "cases/stroke_100x76_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    with strict_fp32():
        predicted = engine.predict(image, mask)
    assert np.abs(predicted - np.load(tiny_dir / "cases/stroke_100x76_expected.npy")).max() <= 1e-4


@pytest.mark.parametrize(("width", "height"), [(8, 8), (1, 1), (150, 33), (640, 480), (641, 481), (1000, 750)])
def test_fp16_works_for_sizes_half_precision_cufft_refuses(width, height):
    """Naive .half() fails at 640×480: cuFFT in fp16 only takes powers of two."""
    engine = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    image, mask = synthetic_case(width, height)
    mask[: max(1, height // 2), : max(1, width // 2)] = 255
    out = engine.inpaint(image, mask, strategy="original")
    assert out.shape == image.shape
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_fp16_differs_from_fp32_of_the_same_weights_by_less_than_1e_3():
    fast = InpaintEngine.with_random_weights(device="cuda", precision="fp16")
    exact = fast.with_precision("fp32")
    image, mask = synthetic_case(640, 480)
    with torch.inference_mode(), strict_fp32():
        a = fast.generator(fast.model_input(image, mask > 0)[2]).float()
        b = exact.generator(exact.model_input(image, mask > 0)[2])
    assert float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)) < 1e-3
