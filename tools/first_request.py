"""The first repairs after /readyz against the steady ones, per size, over real HTTP.

    python tools/first_request.py http://127.0.0.1:7860

Prints, per size, the first request's server-side `infer` time, the median of the next
five, and their ratio (the issue asks for at most 2). Strategy 'original': the whole image
goes through the model.
"""

from __future__ import annotations

import re
import statistics
import sys
import urllib.request
import uuid

from lama import imageio
from lama.synthetic import synthetic_case

SIZES = ((640, 480), (1280, 960), (2560, 1920))


def infer_ms(url: str, image: bytes, mask: bytes) -> float:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in (("image", image), ("mask", mask)):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="strategy"\r\n\r\noriginal\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/v1/inpaint", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        timing = response.headers["Server-Timing"]
        response.read()
    return float(re.search(r"infer;dur=([\d.]+)", timing).group(1))


def main() -> None:
    url = sys.argv[1].rstrip("/")
    for width, height in SIZES:
        image, mask = synthetic_case(width, height)
        png_image, png_mask = imageio.encode_image(image), imageio.encode_image(mask)
        first = infer_ms(url, png_image, png_mask)
        steady = statistics.median(infer_ms(url, png_image, png_mask) for _ in range(5))
        print(f"{width}×{height}: first request infer {first:.1f} ms, steady {steady:.1f} ms, "
              f"ratio {first / steady:.2f}")


if __name__ == "__main__":
    main()
