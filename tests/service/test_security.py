"""Security: hostile checkpoints, secrets, and what the HTTP routes will and will not serve.

tests/unit/test_safe_pickle.py and tests/unit/test_checkpoint.py hold the bulk of the hostile-pickle tests
(REDUCE/INST/OBJ of os.system, posix.system, builtins.eval, subprocess.Popen); this file adds the
opcodes and callables they leave out, and the checks that need a whole server: no secret in any
log, no file outside the app's own served through any route (Gradio's included), no other
session's upload by guessing, output names never taken from an upload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pickle
import re
import shutil
import signal
import sys
import urllib.parse
from pathlib import Path

import httpx
import pytest

from webui.compose import build_app
from support.liveserver import ROOT, LiveServer
from lama.checkpoint import load_checkpoint
from lama.safe_pickle import CheckpointError, StubObject, UnsafeCheckpointError, load_archive
from support.reliability import record
from support.app import encode, error_of, make_case, make_settings, saved_file, serve, upload
from support.pickles import _ops, write_archive

# ------------------------------------------------------------------ hostile checkpoints


class Payload:
    """Pickles as a call of func(*args): what a malicious checkpoint embeds."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path, evil_pt: Path, evil_py: Path):
    """(name, callable, args) that create `marker` if the loader ever calls them."""
    import builtins
    import importlib
    import posix
    import runpy
    import subprocess

    import torch

    touch = f"open({str(marker)!r}, 'w').close()"
    return [
        ("builtins.exec", builtins.exec, (touch,)),
        ("builtins.eval", builtins.eval, (f"exec({touch!r})",)),
        ("builtins.compile", builtins.compile, (touch, "x", "exec")),
        ("builtins.getattr", builtins.getattr, (Payload(importlib.import_module, "os"), "system")),
        ("builtins.__import__", builtins.__import__, ("evilmod",)),
        ("builtins.open", builtins.open, (str(marker), "w")),
        ("posix.system", posix.system, (f"touch {marker}",)),
        ("os.popen", os.popen, (f"touch {marker}",)),
        ("subprocess.check_output", subprocess.check_output, (["touch", str(marker)],)),
        ("subprocess.run", subprocess.run, (["touch", str(marker)],)),
        ("importlib.import_module", importlib.import_module, ("evilmod",)),
        ("runpy.run_path", runpy.run_path, (str(evil_py),)),
        ("pickle.loads", pickle.loads, (pickle.dumps(Payload(os.system, f"touch {marker}")),)),
        ("torch.load", torch.load, (str(evil_pt),)),
        ("torch.jit.load", torch.jit.load, (str(evil_pt),)),
    ]


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A marker that any executed payload creates, and a module whose import creates it too."""
    marker = tmp_path / "EXECUTED"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    evil_pt = tmp_path / "inner.pt"
    torch_save_payload(evil_pt, Payload(os.system, f"touch {marker}"))
    return marker, evil_pt, tmp_path / "evilmod.py"


def torch_save_payload(path: Path, obj) -> None:
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": obj}, path)


PAYLOAD_NAMES = [name for name, _, _ in _payloads(Path("m"), Path("p"), Path("q"))]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_a_call_of_any_global_is_refused_and_nothing_runs(tmp_path, evil, name, protocol):
    marker, evil_pt, evil_py = evil
    func, args = next((f, a) for n, f, a in _payloads(marker, evil_pt, evil_py) if n == name)
    path = write_archive(tmp_path / "evil.ckpt", pickle.dumps(Payload(func, *args), protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match="tries to call"):
        load_checkpoint(path)
    assert not marker.exists() and "evilmod" not in sys.modules


def test_every_hostile_pickle_case_counted(tmp_path, evil):
    """The figure for docs/RELIABILITY.md: every payload × protocol above, refused, none run."""
    marker, evil_pt, evil_py = evil
    refused = 0
    cases = [(n, f, a, p) for n, f, a in _payloads(marker, evil_pt, evil_py) for p in (0, 2, 4, 5)]
    for name, func, args, protocol in cases:
        path = write_archive(tmp_path / f"{name}-{protocol}.ckpt", pickle.dumps(Payload(func, *args), protocol))
        try:
            load_checkpoint(path)
        except UnsafeCheckpointError:
            refused += 1
    assert refused == len(cases) and not marker.exists()
    record("Security: hostile pickles", f"payloads refused ({len(PAYLOAD_NAMES)} callables × protocols 0/2/4/5: "
           "os/posix.system, popen, subprocess, exec/eval/compile/getattr/__import__/open, importlib, runpy, "
           "pickle.loads, torch.load, torch.jit.load)", f"{refused} / {len(cases)}; marker file never created",
           "all; nothing executed")


def test_a_named_module_is_never_imported(tmp_path, evil):
    marker, _, _ = evil
    # NEWOBJ of evilmod.Thing: allowed (an inert stub), but evilmod must not be imported for it.
    newobj = b"\x80\x02cevilmod\nThing\n)\x81."
    root = load_archive(write_archive(tmp_path / "a.pt", newobj)).root
    assert isinstance(root, StubObject)
    assert not marker.exists() and "evilmod" not in sys.modules


def test_a_stack_global_of_a_submodule_is_a_stub_not_an_import(tmp_path, evil):
    marker, _, _ = evil
    stack_global = (b"\x80\x04\x8c\x0bevilmod.sub\x94\x8c\x05Thing\x94\x93)\x81.")
    root = load_archive(write_archive(tmp_path / "a.pt", stack_global)).root
    assert type(root).qualified_name == "evilmod.sub.Thing"
    assert not marker.exists() and "evilmod" not in sys.modules and "evilmod.sub" not in sys.modules


def _tensor_ops(numel=6, size=(6,), stride=(1,)) -> bytes:
    pid = b"(" + _ops("storage") + b"ctorch\nFloatStorage\n" + _ops("0") + _ops("cpu") + _ops(numel) + b"tQ"
    args = b"(" + pid + _ops(0) + _ops(size) + _ops(stride) + b"\x89}t"
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def test_tensor_setstate_cannot_reach_outside_its_storage(tmp_path):
    # BUILD on a rebuilt tensor calls Tensor.__setstate__, whose legacy form is set_(source,
    # offset, size, stride): a view far past the 6 elements the archive holds must be refused.
    state = b"(" + _tensor_ops() + _ops(0) + _ops((1_000_000,)) + _ops((1,)) + b"t"
    path = write_archive(tmp_path / "a.pt", b"\x80\x02" + _tensor_ops() + state + b"b.", {"0": bytes(24)})
    with pytest.raises(CheckpointError):
        load_archive(path)


def test_a_pickle_cannot_modify_the_loader_itself(tmp_path):
    from lama import safe_pickle

    before = safe_pickle._latin1_bytes.__defaults__
    build = b"\x80\x02c_codecs\nencode\n(N}X\x0c\x00\x00\x00__defaults__(X\x05\x00\x00\x00rot13tstb0N."
    try:
        with pytest.raises(CheckpointError):
            load_archive(write_archive(tmp_path / "a.pt", build))
        assert safe_pickle._latin1_bytes.__defaults__ == before
    finally:
        safe_pickle._latin1_bytes.__defaults__ = before


def test_a_hostile_config_yaml_beside_the_weights_is_refused(tiny_dir, tmp_path):
    marker = tmp_path / "EXECUTED"
    model = tmp_path / "big-lama"
    shutil.copytree(tiny_dir, model)
    (model / "config.yaml").write_text(f"generator: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CheckpointError):
        load_checkpoint(model)
    assert not marker.exists()


def test_the_service_refuses_to_start_on_a_hostile_checkpoint(tmp_path, evil):
    marker, _, _ = evil
    path = tmp_path / "evil.ckpt"
    torch_save_payload(path, Payload(os.system, f"touch {marker}"))
    settings = make_settings(None, tmp_path, "--ui-cache-dir", str(tmp_path / "cache"), model=str(path))
    with pytest.raises(SystemExit, match=r"error: checkpoint refused: its pickle tries to call posix\.system"):
        build_app(settings)
    assert not marker.exists()


# ------------------------------------------------------------------ the token and the UI login


def test_the_token_is_compared_in_constant_time(tiny_dir, tmp_path, monkeypatch):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    settings = make_settings(tiny_dir, tmp_path, "--api-token", "s3cret-token", "--ui-cache-dir",
                             str(tmp_path / "cache"))
    with serve(settings, wait_ready=False) as client:
        response = client.get("/api/v1/monitor", headers={"Authorization": "Bearer s3cret-tokeX"})
        error_of(response, 401, "unauthorized")
    assert (b"s3cret-tokeX", b"s3cret-token") in compared


def test_gradio_uploads_are_limited_server_side(tiny_dir, tmp_path):
    # The UI's upload route takes a file of at most the API's per-file limit (it took twice that).
    settings = make_settings(tiny_dir, tmp_path, "--ui-cache-dir", str(tmp_path / "cache"), max_upload_mb=1)
    with serve(settings, wait_ready=False) as client:
        too_big = client.post("/gradio_api/upload", files={"files": ("a.png", b"\0" * (2**20 + 1), "image/png")})
        assert too_big.status_code == 413
        fine = client.post("/gradio_api/upload", files={"files": ("a.png", encode(make_case()[0]), "image/png")})
        assert fine.status_code == 200
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 2**20]


# ------------------------------------------------------------------ a live server with secrets

TOKEN = "tok-" + "7f3a9c2e" * 4
ESCAPE = "escaped-9c1f"  # in the file names of uploads that try to escape
USER, PASSWORD = "ann", "pw-" + "5e1d8b4a" * 3
CANARY = "canary-" + "c0ffee42" * 3


@pytest.fixture(scope="module")
def secured(tiny_dir, tmp_path_factory):
    """python app.py --api-token TOKEN (a flag) with LAMA_AUTH=USER:PASSWORD (the environment);
    yields (app, a client logged in to the UI); stopped with SIGTERM so that logs are flushed."""
    folder = tmp_path_factory.mktemp("secured")
    with LiveServer.start(tiny_dir, folder, "--api-token", TOKEN, "--monitor-interval", "0.2",
                 env={"LAMA_AUTH": f"{USER}:{PASSWORD}", "LAMA_TEST_CANARY": CANARY}) as app:
        with httpx.Client(base_url=app.base, timeout=30) as user:
            wrong = user.post("/login", data={"username": USER, "password": PASSWORD[:-1] + "X"})
            assert wrong.status_code != 200 or wrong.json().get("success") is not True
            assert user.post("/login", data={"username": USER, "password": PASSWORD}).json() == {"success": True}
            assert user.get("/config").status_code == 200
            yield app, user


def test_api_token_and_ui_login_from_flag_and_environment(secured):
    app, user = secured
    image, mask = make_case()
    with httpx.Client(base_url=app.base, timeout=30) as anyone:
        for header in ({}, {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": f"Basic {TOKEN}"}):
            error_of(anyone.post("/api/v1/inpaint", headers=header, **upload(image, mask)), 401, "unauthorized")
        assert anyone.post("/api/v1/inpaint", headers={"Authorization": f"Bearer {TOKEN}"},
                           **upload(image, mask)).status_code == 200
        for path in ("/healthz", "/livez", "/readyz", "/metrics"):
            assert anyone.get(path).status_code == 200, path  # probes and metrics stay open
        assert anyone.get("/config").status_code == 401  # the UI is behind the login
        assert anyone.post("/gradio_api/upload", files={"files": ("a.png", encode(image))}).status_code == 401


def _request_names_from_the_upload(app, user):
    """API and UI uploads whose file names try to escape: the results get generated names."""
    image, mask = make_case()
    names = [f"../../{ESCAPE}-api.png", f"/tmp/{ESCAPE}-abs.png", f"..\\..\\{ESCAPE}-win.png",
             f"../../../../../../../../tmp/{ESCAPE}-deep.png"]
    saved = []
    for name in names:
        response = httpx.post(app.url("/api/v1/inpaint"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                              files={"image": (name, encode(image), "image/png"),
                                     "mask": (name.replace(ESCAPE, ESCAPE + "-mask"), encode(mask), "image/png")})
        assert response.status_code == 200, response.text
        saved.append(response.headers["x-saved-as"])
        saved_file(app.folder / "outputs", response)  # written just after the answer
    uploaded = user.post("/gradio_api/upload", files={"files": (f"../../{ESCAPE}-ui.png", encode(image), "image/png")})
    assert uploaded.status_code == 200
    return saved, Path(uploaded.json()[0])


RESULT = re.compile(r"\d{4}-\d{2}-\d{2}/\d{6}-[0-9a-f]{12}-[A-Za-z0-9_.-]+_repaired\.png")


def test_output_names_are_generated_never_taken_from_the_upload(secured):
    app, user = secured
    saved, ui_path = _request_names_from_the_upload(app, user)
    # A generated day folder and prefix; after it, the upload's stem reduced to ASCII letters, digits
    # and _ . - (service.storage.result_name): never a path, whatever the upload was called.
    assert all(RESULT.fullmatch(name) for name in saved), saved
    assert ui_path.is_relative_to((app.folder / "cache").resolve())
    # Where an escaping name would land: around the server's folders, /tmp, the checkout.
    found = [*app.folder.parent.parent.rglob(f"*{ESCAPE}*"), *Path("/tmp").glob(f"*{ESCAPE}*"),
             *ROOT.glob(f"*{ESCAPE}*"), *Path("/").glob(f"*{ESCAPE}*")]
    # The stem may repeat the upload's name in a result under an outputs/ day folder (this server's,
    # or an earlier run's of this test) and in the UI cache, nowhere else.
    def result_in_outputs(path: Path) -> bool:
        return path.parent.parent.name == "outputs" and RESULT.fullmatch(f"{path.parent.name}/{path.name}") is not None

    cache = (app.folder / "cache").resolve()
    assert [p for p in found if not (p.resolve().is_relative_to(cache) or result_in_outputs(p))] == []
    record("Security: file names", "files named after an upload's file name (../../x.png, absolute, "
           "backslashes) outside the UI cache", "0 (4 API results under a generated prefix and a sanitised stem)", "0")


def _targets(app) -> dict[str, bytes]:
    """Files no route may serve, with a chunk of each that must not appear in any answer."""
    import gradio.utils

    result = next(p for p in (app.folder / "outputs").rglob("*.png"))
    targets = {
        "/etc/passwd": b"root:",
        str(ROOT / "app.py"): b"The entry point",
        str(ROOT / "configs" / "default.yaml"): b"Service settings. Precedence",
        str(app.folder / "logs" / "app.log"): b"warm: ready to serve",
        str(result): result.read_bytes()[40:80],
        gradio.utils.HASH_SEED_PATH: Path(gradio.utils.HASH_SEED_PATH).read_bytes().strip()[:16],
        "/proc/self/environ": CANARY.encode(),
        "/proc/self/cmdline": TOKEN.encode(),
    }
    ckpt = Path(app.process.args[app.process.args.index("--model") + 1]) / "models" / "best.ckpt"
    targets[str(ckpt)] = ckpt.read_bytes()[5000:5040]
    return targets


def _spellings(path: str, depth: int = 12) -> list[str]:
    """Ways to write `path` (absolute) into a URL so that a naive server would reach it."""
    up = "../" * depth
    rel = up + path.lstrip("/")
    quote = urllib.parse.quote
    return [
        path, "/" + path, rel,
        quote(path, safe=""), quote(rel, safe=""),
        rel.replace("../", "..%2f"), rel.replace("../", "%2e%2e/"), rel.replace("../", "%2e%2e%2f"),
        rel.replace("../", "%252e%252e%252f"), rel.replace("../", "..\\"), rel.replace("../", "....//"),
        rel.replace("../", "%c0%ae%c0%ae/"), rel.replace("../", "..%5c"), rel + "%00.png",
        "file://" + path, "file:" + quote(path),
    ]


ROUTE_PREFIXES = ["/gradio_api/file=", "/gradio_api/file/", "/file=", "/file/", "/static/", "/assets/",
                  "/svelte/", "/gradio_api/static/", "/gradio_api/custom_component/a/b/c/",
                  "/gradio_api/run-history/records/a/b/assets/", "/gradio_api/proxy=", "/", "/api/v1/",
                  "/docs/", "/gradio_api/stream/a/b/1/", "/pwa_icon/", "/monitoring/"]


def test_no_route_serves_a_file_outside_what_the_app_serves(secured):
    app, user = secured
    _request_names_from_the_upload(app, user)  # a result in outputs/ to aim at
    cookies = "; ".join(f"{name}={value}" for name, value in user.cookies.items())
    served, requests = [], 0
    for target, secret in _targets(app).items():
        for prefix in ROUTE_PREFIXES:
            for spelling in _spellings(target):
                path = prefix + spelling
                for headers in ({"Cookie": cookies}, {}):  # logged in to the UI, and not
                    status, body = app.get_raw(path, headers)
                    requests += 1
                    if secret in body:
                        served.append((path, status))
    assert served == [], served[:10]
    assert app.alive()
    record("Security: path traversal", f"requests for the app's and the system's files through every route "
           f"({len(ROUTE_PREFIXES)} route prefixes × 16 spellings × 9 targets × with/without login) that "
           "returned the file", f"0 of {requests}", "0")


def test_another_sessions_upload_cannot_be_had_by_guessing(secured):
    app, user = secured
    content = encode(make_case(seed=42)[0])
    (real,) = user.post("/gradio_api/upload", files={"files": ("photo.png", content, "image/png")}).json()
    cache = (app.folder / "cache").resolve()
    assert Path(real).is_relative_to(cache)
    cookies = {"Cookie": "; ".join(f"{name}={value}" for name, value in user.cookies.items())}
    # The holder of the URL, logged in, gets it; without the login, nobody does.
    assert app.get_raw(f"/gradio_api/file={real}", cookies) == (200, content)
    assert app.get_raw(f"/gradio_api/file={real}")[0] in (401, 403)
    # Guesses at the name, logged in: the folder is a keyed hash of the content, not the content's hash.
    guesses = [cache / "photo.png", cache / hashlib.sha256(content).hexdigest() / "photo.png",
               cache / hashlib.sha1(content).hexdigest() / "photo.png",
               cache / hashlib.md5(content).hexdigest() / "photo.png", cache]
    answers = [app.get_raw(f"/gradio_api/file={guess}", cookies) for guess in guesses]
    assert all(status != 200 and content not in body for status, body in answers), [s for s, _ in answers]
    record("Security: other users' uploads", "guessed upload URLs served (plain sha256/sha1/md5 of the "
           "content, the bare name, the folder); the real URL without the login", "0 of 5; refused (401/403)",
           "0; refused")


def test_no_secret_is_ever_logged(secured):
    """Run last in this module (pytest keeps file order): every request above has been logged."""
    app, user = secured
    with httpx.Client(base_url=app.base, timeout=30) as anyone:
        anyone.get("/api/v1/monitor", headers={"Authorization": f"Bearer {TOKEN}"})
        anyone.get("/api/v1/monitor", headers={"Authorization": f"Bearer {TOKEN}x"})
        anyone.post("/login", data={"username": USER, "password": PASSWORD + "x"})
        anyone.get("/config", auth=(USER, PASSWORD))
    app.process.send_signal(signal.SIGTERM)  # flush and close the logs
    app.process.wait(40)
    secrets = [TOKEN, PASSWORD, f"{USER}:{PASSWORD}", base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
               urllib.parse.quote(PASSWORD), TOKEN[4:]]
    files = [p for p in (app.folder / "logs").rglob("*") if p.is_file()] + [app.log_path]
    assert {p.name for p in files} >= {"app.log", "requests.jsonl", "monitor.jsonl", "server.log"}
    assert json.loads((app.folder / "logs" / "requests.jsonl").read_text().splitlines()[0])  # they were written
    leaks = [(p.name, s) for p in files for s in secrets if s.encode() in p.read_bytes()]
    assert leaks == []
    total = sum(p.stat().st_size for p in files)
    record("Security: secrets in logs", "occurrences of the API token or the UI password (plain, base64, "
           "URL-encoded) in logs/app.log, requests.jsonl, monitor.jsonl and stdout/stderr, after right and "
           "wrong credentials", f"0 in {len(files)} files ({total / 1024:.0f} KiB)", "0")
