"""The README's recipe for formats against `python app.py` over real HTTP."""

from __future__ import annotations

import httpx
from support.app import make_case, saved_file
from support.liveserver import LiveServer
from support.photos import MAKE, SRGB, camera_exif, opened, photo_bytes

from lama import imageio



def test_the_readme_recipe_same_format_and_the_servers_name(tiny_dir, tmp_path):
    """`curl -OJ -F image=@holiday.jpg -F mask=@m.png -F format=same`, against `python app.py`:
    a JPEG comes back, named as the README says, with the photo's EXIF and profile."""
    upload = photo_bytes("JPEG", exif=camera_exif(1), icc_profile=SRGB)
    _, mask = make_case(64, 48, box=(10, 10, 20, 20))
    with LiveServer.start(tiny_dir, tmp_path) as server:
        response = httpx.post(server.url("/api/v1/inpaint"), timeout=60, data={"format": "same"},
                              files={"image": ("holiday.jpg", upload, "image/jpeg"),
                                     "mask": ("m.png", imageio.encode_image(mask, "png"), "image/png")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-disposition"] == 'inline; filename="holiday_repaired.jpg"'
    result = opened(response.content)
    assert result.getexif()[MAKE] == "Camera" and result.info["icc_profile"] == SRGB
    assert saved_file(tmp_path / "outputs", response).read_bytes() == response.content
