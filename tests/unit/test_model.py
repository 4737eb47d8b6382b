"""The generator's parameter layout is exactly the official big-lama checkpoint's."""

import json

import torch

from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator, GeneratorConfig, parameter_count


def test_full_size_generator_matches_the_official_manifest_entry_by_entry(fixtures_dir):
    manifest = json.loads((fixtures_dir / "big-lama-state-dict.json").read_text())
    expected = {entry["key"].removeprefix("generator."): entry for entry in manifest["entries"]}
    state = FFCResNetGenerator(BIG_LAMA_CONFIG).state_dict()

    assert sorted(state) == sorted(expected), "parameter names differ from the official checkpoint"
    for key, tensor in state.items():
        entry = expected[key]
        assert list(tensor.shape) == entry["shape"], key
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], key
    assert len(state) == 989
    assert parameter_count(FFCResNetGenerator(BIG_LAMA_CONFIG)) == manifest["parameters"] == 50_975_875


def test_manifest_config_is_the_default_big_lama_config(fixtures_dir):
    manifest = json.loads((fixtures_dir / "big-lama-state-dict.json").read_text())
    assert GeneratorConfig.from_dict(manifest["generator_config"]) == BIG_LAMA_CONFIG


def test_generator_keeps_the_spatial_size_and_outputs_probabilities():
    config = GeneratorConfig(ngf=8, n_blocks=1)
    generator = FFCResNetGenerator(config).eval()
    with torch.inference_mode():
        out = generator(torch.rand(2, 4, 40, 56))
    assert out.shape == (2, 3, 40, 56)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
