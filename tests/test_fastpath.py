"""The fast path's rewrites compute the same function (CPU; the CUDA parts are in test_cuda.py)."""

import cv2
import numpy as np
import torch
from torch import nn

from lama.checkpoint import build_generator, load_checkpoint
from lama.engine import InpaintEngine
from lama.fastpath import fold_batchnorm
from lama.model import GeneratorConfig, FFCResNetGenerator


def test_folding_batchnorm_keeps_the_official_fixture_output(tiny_dir):
    generator = build_generator(load_checkpoint(tiny_dir))
    folded = fold_batchnorm(generator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()), "every BatchNorm is folded"
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules()), "the original is left alone"

    image = cv2.cvtColor(cv2.imread(str(tiny_dir / "cases/stroke_100x76_image.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(tiny_dir / "cases/stroke_100x76_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    engine = InpaintEngine(tiny_dir, device="cpu")
    with torch.inference_mode():
        net_input = engine.model_input(image, mask)[2]
        assert torch.allclose(folded(net_input), generator(net_input), atol=1e-5)


def test_folding_handles_random_statistics_in_every_layer_kind():
    torch.manual_seed(3)
    generator = FFCResNetGenerator(GeneratorConfig(ngf=8, n_blocks=2)).eval()
    for module in generator.modules():
        if isinstance(module, nn.BatchNorm2d):  # far from identity, so a missed fold shows
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(2, 4, 48, 64)
    with torch.inference_mode():
        assert torch.allclose(fold_batchnorm(generator)(x), generator(x), atol=1e-5)


def test_the_cpu_engine_is_the_plain_reference_path(tiny_dir):
    engine = InpaintEngine(tiny_dir, device="cpu", fast=True)
    assert engine.fast is False
    assert any(isinstance(m, nn.BatchNorm2d) for m in engine.generator.modules())
    assert np.isfinite(engine.reference().predict(np.zeros((16, 16, 3), np.uint8), np.ones((16, 16), bool))).all()
