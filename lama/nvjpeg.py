"""JPEG decoding on an NVIDIA GPU (nvJPEG, through torchvision) for the photos uploads bring.

On the GPU box one 2560×1920 photo (JPEG q92) decodes in 3.7 ms this way, against 16.7 ms on
one of its cores with libjpeg-turbo (docs/BENCHMARKS.md, "nvJPEG against the service's JPEG
decoder"): for one client a fifth of the wait at that size. torchvision serialises its nvJPEG
calls, so a server decodes at most about 270 such photos a second this way, nine times what
the model repairs at that size; small photos stay on the CPU, where a decode costs less than
the trip to the GPU and back.

Every photo of a given file decodes the same way on a given server (by its size, never by the
load), so a repair is reproducible there; nvJPEG's pixels differ from libjpeg-turbo's by a few
levels (another IDCT and chroma upsampling), as two JPEG decoders' do. `--jpeg-decoder cpu`
keeps libjpeg-turbo's.

torchvision is a GPU box's extra: the CPU wheel of torch this project installs elsewhere has no
torchvision that imports beside it. Without it, or without CUDA, `create` says why and returns
None, and lama.imageio decodes on the CPU as before.
"""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np
import torch

from lama.device import Device

log = logging.getLogger(__name__)

# Below this many pixels a photo decodes on the CPU (a 640×480 photo takes about 2 ms there).
MIN_PIXELS = 1_000_000


class GpuJpegDecoder:
    """Decodes an 8-bit gray or colour JPEG into a host array of the size already checked
    (lama.imageio's contract for its JPEG decoders), on its own CUDA stream."""

    def __init__(self, device: Device):
        from torchvision.io import ImageReadMode, decode_jpeg

        self._decode = decode_jpeg
        self._modes = {2: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
        self._device = device.torch
        self._stream = torch.cuda.Stream(self._device)
        self._lock = threading.Lock()  # one stream; torchvision serialises its nvJPEG calls anyway

    @classmethod
    def create(cls, device: Device) -> GpuJpegDecoder | None:
        """A decoder that has decoded a test picture correctly; None (and the reason, logged)
        where there is no CUDA device or no torchvision that decodes JPEG on it."""
        if not device.is_cuda:
            return None
        try:
            decoder = cls(device)
            # A smooth picture, which any two JPEG decoders read within a level or two.
            ramp = np.linspace(0, 255, 96, dtype=np.float32)
            picture = np.dstack([np.add.outer(ramp[:64] / 2, ramp / 2)] * 3).astype(np.uint8)
            data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            out = np.empty_like(picture)
            # The first call also sets nvJPEG up: done here, not in a user's request.
            decoded = decoder.decode_into(data, out)
        except (ImportError, RuntimeError) as error:
            log.info("JPEG uploads decode on the CPU: nvJPEG through torchvision is not available (%s: %s)",
                     type(error).__name__, error)
            return None
        if not decoded or np.abs(out.astype(int) - expected).max() > 4:
            log.warning("JPEG uploads decode on the CPU: nvJPEG and libjpeg-turbo disagree on a test picture")
            return None
        return decoder

    def __call__(self, data: bytes, out: np.ndarray) -> bool:
        """lama.imageio's JPEG offload: True when `data` was decoded into `out`; False for a photo
        under MIN_PIXELS or one nvJPEG cannot read (libjpeg-turbo then decodes it, or says why not)."""
        if out.shape[0] * out.shape[1] < MIN_PIXELS:
            return False
        try:
            return self.decode_into(data, out)
        except RuntimeError as error:  # what nvJPEG refuses (arithmetic coding, 12-bit) or a failing GPU
            log.debug("nvJPEG could not decode a %d×%d JPEG (%s): decoding it on the CPU", out.shape[1],
                      out.shape[0], error)
            return False

    def decode_into(self, data: bytes, out: np.ndarray) -> bool:
        """`data` decoded on the GPU into `out` (H×W×3 RGB or H×W gray uint8); False when the
        file's pixels are not of out's size."""
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # a writable copy: torch wants one
        with self._lock, torch.cuda.stream(self._stream):
            image = self._decode(encoded, mode=self._modes[out.ndim], device=self._device)  # C×H×W
            if tuple(image.shape[1:]) != out.shape[:2]:
                return False
            # Into pageable memory: the copy waits for the decode, so `out` is complete on return.
            torch.from_numpy(out).copy_(image.permute(1, 2, 0) if out.ndim == 3 else image[0])
        return True
