"""Batch jobs through live servers: replicas sharing one outputs folder answer for (and delete)
each other's jobs, a SIGTERM drain finishes accepted jobs, a restart keeps finished ones, and the README's
curl recipe works as written."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess

import httpx
from support.app import decode, encode, error_of, make_case, upload, wait_until
from support.jobs import EXACT, JOB_ID, assert_repaired, poll, submit
from support.liveserver import LiveServer
from support.paths import ROOT

README = ROOT / "README.md"


def test_replicas_sharing_the_outputs_answer_for_each_others_jobs_across_a_drain_and_a_restart(tiny_dir, tmp_path):
    shared = tmp_path / "shared-outputs"
    cases = [make_case(seed=seed) for seed in range(16)]
    with LiveServer.start(tiny_dir, tmp_path / "a", "--outputs-dir", str(shared)) as a, \
            LiveServer.start(tiny_dir, tmp_path / "b", "--outputs-dir", str(shared)) as b, \
            httpx.Client(base_url=a.base, timeout=30) as to_a, httpx.Client(base_url=b.base, timeout=30) as to_b:
        accepted = [submit(to_a, image, mask, **EXACT) for image, mask in cases[:12]]
        error_of(to_a.post("/api/v1/jobs", **upload(b"not an image", cases[0][1])), 400, "invalid_image")
        error_of(to_b.get(f"/api/v1/jobs/{'0' * 32}"), 404, "job_not_found")
        for job, (image, mask) in zip(accepted, cases, strict=False):
            status = poll(to_b, job["url"])  # the other replica answers
            assert status["status"] == "done", status
            assert_repaired(decode(to_b.get(status["result_url"]).content), image, mask)
        # Deleted through the other replica: gone for both, its result with it.
        deleted = submit(to_a, *cases[0])
        assert poll(to_a, deleted["url"])["status"] == "done"
        saved = shared / to_a.get(deleted["url"] + "/result").headers["x-saved-as"]
        assert to_b.delete(deleted["url"]).status_code == 204
        error_of(to_a.get(deleted["url"]), 404, "job_not_found")
        def files_of_deleted():
            return sorted(path.name for path in (shared / "jobs").glob(f"{deleted['id']}.*"))
        # Its record, result and tombstone go at once; its owner removes its lock a moment after
        # the record is final (service.batch_jobs).
        assert not saved.exists() and files_of_deleted() in ([], [f"{deleted['id']}.lock"])
        wait_until(lambda: files_of_deleted() == [], 10, what="the deleted job's lock removed by its owner")

        # A SIGTERM right after accepting jobs: the drain finishes them before the process ends.
        drained = [submit(to_a, image, mask, **EXACT) for image, mask in cases[12:]]
        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(40) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert [poll(to_b, job["url"])["status"] for job in drained] == ["done"] * len(drained)
        accepted += drained

    with LiveServer.start(tiny_dir, tmp_path / "c", "--outputs-dir", str(shared)) as c, \
            httpx.Client(base_url=c.base, timeout=30) as to_c:
        for job, (image, mask) in zip(accepted, cases, strict=True):
            status = to_c.get(job["url"]).json()
            assert status["status"] == "done", status
            result = to_c.get(status["result_url"])
            assert result.status_code == 200 and result.headers["content-type"] == "image/png"
            assert_repaired(decode(result.content), image, mask)
        assert not list((shared / "jobs").glob("*.lock"))


def test_the_readmes_curl_recipe_repairs_a_folder(tiny_dir, tmp_path):
    assert shutil.which("curl") and shutil.which("jq"), "the recipe needs curl and jq (Debian packages)"
    recipe = re.search(r"```bash\n(api=.*?)```", README.read_text(), re.DOTALL)
    assert recipe, "the README's batch-over-HTTP recipe is gone"
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    for seed in range(3):
        (work / "photos" / f"photo{seed}.jpg").write_bytes(encode(make_case(seed=seed)[0], ".jpg"))
    (work / "photos" / "broken.jpg").write_bytes(b"not a photo")  # refused at once, and said so
    (work / "watermark.png").write_bytes(encode(make_case()[1]))
    with LiveServer.start(tiny_dir, tmp_path / "server") as server:
        script = recipe.group(1).replace("127.0.0.1:7860", f"127.0.0.1:{server.port}")
        run = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    ids = [line.split()[0] for line in (work / "jobs.txt").read_text().splitlines()]
    assert len(ids) == 3 and all(JOB_ID.fullmatch(job_id) for job_id in ids)
    for seed in range(3):
        assert decode((work / "photos" / f"photo{seed}_repaired.png").read_bytes()).shape == (72, 96, 3)
    assert "photos/broken.jpg: " in run.stdout and "invalid_image" in run.stdout
    assert not list((tmp_path / "server" / "outputs" / "jobs").iterdir())  # the recipe deleted its jobs
