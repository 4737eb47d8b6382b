"""Full-size big-lama with random weights (seed 0), written as our .safetensors: the checkpoint the
GPU box's servers load, where no trained weights can be fetched.

    python tools/random_weights.py models/big-lama.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lama.checkpoint import LoadedCheckpoint, save_safetensors  # noqa: E402
from lama.model import BIG_LAMA_CONFIG, FFCResNetGenerator  # noqa: E402


def main() -> None:
    destination = Path(sys.argv[1])
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    weights = FFCResNetGenerator(BIG_LAMA_CONFIG).eval().state_dict()
    save_safetensors(LoadedCheckpoint(weights, BIG_LAMA_CONFIG, "random", Path("random"), torch.float32), destination)


if __name__ == "__main__":
    main()
