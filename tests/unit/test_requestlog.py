"""The per-request log: the rotated requests.jsonl an operator reads later, and the recent
records in memory that the dashboard and GET /api/v1/monitor serve."""

from __future__ import annotations

import json
import logging

import numpy as np

from monitor.requestlog import RequestLog


def request(number: int, **fields) -> dict:
    """A record shaped as the service writes one (monitor/records.py RequestRecord)."""
    return {"id": f"r{number}", "ts": 1000.0 + number, "width": 1280, "height": 960, "mask_fraction": 0.12,
            "strategy": "crop", "device": "cuda:0", "precision": "fp16", "status": 200, "error": None,
            "timings": {"decode": 0.004, "queue": 0.0, "preprocess": 0.002, "infer": 0.031, "postprocess": 0.003,
                        "encode": 0.011, "save": 0.001, "total": 0.052},
            "peak_gpu_bytes": 1_100_000_000, "rss_bytes": 900_000_000, **fields}


def test_recent_filters_by_time_and_keeps_the_last(tmp_path):
    log = RequestLog(tmp_path / "requests.jsonl", keep=3)
    for number in range(5):
        log.record(request(number))
    assert [rec["id"] for rec in log.recent()] == ["r2", "r3", "r4"]  # only `keep` in memory
    assert [rec["id"] for rec in log.recent(since=1003.0)] == ["r4"]
    assert [rec["id"] for rec in log.recent(limit=2)] == ["r3", "r4"]
    assert [rec["id"] for rec in log.recent(since=1002.0, limit=1)] == ["r4"]
    assert log.recent(limit=0) == []
    # ... while the file has all five, one JSON object per line
    assert [json.loads(line)["id"] for line in (tmp_path / "requests.jsonl").read_text().splitlines()] == \
        [f"r{number}" for number in range(5)]


def test_numpy_values_and_a_missing_ts_are_written_as_plain_json(tmp_path):
    log = RequestLog(tmp_path / "requests.jsonl")
    rec = request(0, width=np.int64(640), mask_fraction=np.float32(0.25))
    del rec["ts"]
    log.record(rec)
    line = json.loads((tmp_path / "requests.jsonl").read_text())
    assert line["width"] == 640 and line["mask_fraction"] == 0.25
    assert line["ts"] == log.recent()[0]["ts"] > 1.7e9
    assert "ts" not in rec  # the caller's dict is left alone


def test_the_file_rotates_within_its_bounds(tmp_path):
    path = tmp_path / "logs" / "requests.jsonl"
    log = RequestLog(path, max_bytes=1500, backups=2)
    for number in range(60):  # about 25 kB of records
        log.record(request(number))
    log.close()
    files = sorted(path.parent.iterdir())
    assert [file.name for file in files] == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    assert all(file.stat().st_size <= 1500 for file in files)
    records = [json.loads(line) for file in reversed(files) for line in file.read_text().splitlines()]
    assert records[-1]["id"] == "r59"  # the newest survive, in order
    assert [rec["id"] for rec in records] == [f"r{number}" for number in range(60 - len(records), 60)]


def test_memory_only_without_a_path(tmp_path):
    log = RequestLog(None)
    log.record(request(1))
    assert log.recent()[0]["id"] == "r1"
    assert list(tmp_path.iterdir()) == []


def test_a_broken_log_file_never_fails_the_request_and_is_reported_once(tmp_path, caplog):
    path = tmp_path / "requests.jsonl"
    path.mkdir()  # cannot be opened as a file
    log = RequestLog(path)
    with caplog.at_level(logging.WARNING, logger="monitor.jsonl"):
        for number in range(3):
            log.record(request(number))
    assert [rec["id"] for rec in log.recent()] == ["r0", "r1", "r2"]
    assert len([record for record in caplog.records if "cannot write" in record.getMessage()]) == 1


def test_amend_changes_the_record_in_memory_and_appends_a_line_to_the_file(tmp_path):
    log = RequestLog(tmp_path / "requests.jsonl", keep=2)
    for number in range(3):
        log.record(request(number))
    waited = {"total": 0.5, "upload": 0.1, "transfer": 0.1}
    assert log.amend("r2", waited)
    assert log.recent()[-1]["waited"] == waited and log.recent()[-1]["status"] == 200
    assert not log.amend("r0", waited)  # no longer kept: nothing written
    lines = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and lines[-1]["amends"] == "r2" and lines[-1]["waited"] == waited
