"""Without weights the OpenCV fallback serves, on the CPU whatever GPU the machine has: /healthz,
/metrics and the monitor's samples all read the engine's device, so all of them say so (before,
on a CUDA box the fallback said `device: cpu` while /metrics said the GPU was available)."""

from __future__ import annotations

import torch

from support.app import make_settings, metric, serve, wait_until


def test_on_a_gpu_machine_without_weights_every_report_names_the_cpu(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ folder: the fallback
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # 'auto' would pick CUDA
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    settings = make_settings(tiny_dir, tmp_path, model=None, device="auto", monitor_interval=0.05)
    with serve(settings) as client:
        health = client.get("/healthz").json()
        assert health["model"]["name"] == "opencv-telea" and health["model"]["device"] == "cpu"
        assert health["gpu"] is None and health["gpu_budget"]["budget_bytes"] is None
        text = client.get("/metrics").text
        assert metric(text, "inpaint_gpu_available") == 0.0 and metric(text, "inpaint_model_loaded") == 0.0
        wait_until(lambda: client.get("/healthz").json()["sample"], what="a sample")
        assert client.get("/healthz").json()["sample"]["torch"] is None, "no CUDA allocator is read"
