"""Files leave the server in 1 MiB reads (webui/compose.py says why), whole: a file of several
reads and a part comes back byte for byte through Gradio's file route."""

from __future__ import annotations

import numpy as np
from starlette.responses import FileResponse

from support.app import make_settings, serve
from webui.compose import FILE_CHUNK_BYTES


def test_a_file_of_several_reads_is_served_whole(tiny_dir, tmp_path):
    data = np.random.default_rng(3).integers(0, 256, 3 * FILE_CHUNK_BYTES + 12345, dtype=np.uint8).tobytes()
    with serve(make_settings(tiny_dir, tmp_path), wait_ready=False) as client:
        assert FileResponse.chunk_size == FILE_CHUNK_BYTES
        uploaded = client.post("/gradio_api/upload", files={"files": ("big.png", data, "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        (path,) = uploaded.json()
        served = client.get(f"/gradio_api/file={path}")
    assert served.status_code == 200 and served.content == data
