"""tools/replicas.py's placement of the replicas and its comparison table, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.balancer import CONFIG, MAX_REPLICAS, haproxy_environment
from tools import replicas


def placed(monkeypatch: pytest.MonkeyPatch, gpus: int, count: int, device: str = "cuda") -> list[replicas.Replica]:
    monkeypatch.setattr(replicas, "gpu_count", lambda: gpus)
    args = replicas.parse_args(["--model", "m", "--out", "o", "--device", device, "--haproxy", "haproxy"])
    return replicas.make_replicas(args, count, Path("/work"), Path("/logs"))


def share_flag(replica: replicas.Replica) -> str | None:
    command = replica.command
    return command[command.index("--gpu-memory-fraction") + 1] if "--gpu-memory-fraction" in command else None


def test_with_two_gpus_each_replica_has_its_own_and_the_preset_s_memory_share(monkeypatch):
    pair = placed(monkeypatch, gpus=2, count=2)
    assert [r.env["CUDA_VISIBLE_DEVICES"] for r in pair] == ["0", "1"]
    assert [share_flag(r) for r in pair] == [None, None]
    assert [r.port for r in pair] == [7861, 7862] and [r.name for r in pair] == ["r1", "r2"]


def test_with_one_gpu_both_share_it_and_split_its_memory_but_one_alone_keeps_the_preset_s(monkeypatch):
    pair = placed(monkeypatch, gpus=1, count=2)
    assert [r.env["CUDA_VISIBLE_DEVICES"] for r in pair] == ["0", "0"]
    assert [float(share_flag(r)) for r in pair] == [replicas.SHARED_GPU_SHARE] * 2
    assert replicas.SHARED_GPU_SHARE * 2 <= 1
    (single,) = placed(monkeypatch, gpus=1, count=1)
    assert single.env["CUDA_VISIBLE_DEVICES"] == "0" and share_flag(single) is None


def test_replicas_keep_their_own_logs_and_ui_cache_and_share_the_outputs(monkeypatch):
    pair = placed(monkeypatch, gpus=0, count=2, device="cpu")
    folders = [{flag: r.command[r.command.index(flag) + 1] for flag in ("--outputs-dir", "--logs-dir", "--ui-cache-dir")}
               for r in pair]
    assert folders[0]["--outputs-dir"] == folders[1]["--outputs-dir"]
    assert folders[0]["--logs-dir"] != folders[1]["--logs-dir"]
    assert folders[0]["--ui-cache-dir"] != folders[1]["--ui-cache-dir"]
    assert [share_flag(r) for r in pair] == [None, None]


def cell(clients: int, rate: float, busy: dict[str, float], failed: int = 0) -> dict:
    return {"width": 1280, "height": 960, "clients": clients,
            "summary": {"requests_per_s": rate, "sent": 10, "ok": 10 - failed,
                        "gpu_busy_ratio": next(iter(busy.values())) if len(busy) == 1 else None,
                        "gpu_busy_by_index": busy}}


def test_the_table_puts_each_cell_of_one_replica_beside_the_balancer_s_with_each_gpu_s_busy_share():
    one = {"cells": [cell(1, 2.0, {"0": 0.4}), cell(32, 4.0, {"0": 0.9})]}
    two = {"cells": [cell(1, 2.1, {"0": 0.2, "1": 0.2}), cell(32, 7.6, {"0": 0.88, "1": 0.86}, failed=1)]}
    table = replicas.comparison(one, two)
    assert table[2] == "| 1280×960 | 1 | 2.00 | 2.10 | 1.05× | 40% | GPU0 20%, GPU1 20% | 0 / 0 |"
    assert table[3] == "| 1280×960 | 32 | 4.00 | 7.60 | 1.90× | 90% | GPU0 88%, GPU1 86% | 0 / 1 |"


def test_the_balancer_s_environment_names_each_replica_and_refuses_more_than_the_file_has():
    assert haproxy_environment(["127.0.0.1:7861", "127.0.0.1:7862"], "0.0.0.0:8080", "127.0.0.1:8404") == {
        "LAMA_LB_BIND": "0.0.0.0:8080", "LAMA_LB_STATS_BIND": "127.0.0.1:8404",
        "LAMA_REPLICA_1": "127.0.0.1:7861", "LAMA_REPLICA_2": "127.0.0.1:7862"}
    assert CONFIG.read_text().count(f"server r{MAX_REPLICAS} ") == 2  # the API's and the UI's backends
    assert f"LAMA_REPLICA_{MAX_REPLICAS + 1}" not in CONFIG.read_text()
    for count in (0, MAX_REPLICAS + 1):
        with pytest.raises(ValueError, match="1 to 8"):
            haproxy_environment([f"127.0.0.1:{7861 + i}" for i in range(count)], "a:1", "b:2")
