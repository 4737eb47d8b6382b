"""start_app.sh --install (what deploy/Containerfile builds with) leaves every module of the project
compiled to bytecode: the container's service may not write its code, so without it each start
compiled the project from source on the way to /readyz."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from support.paths import ROOT

PROJECT_FILES = ("start_app.sh", "pyproject.toml", "app.py")


def project_packages() -> list[str]:
    """The packages pyproject.toml ships ("lama*" and the like, as folders of the root)."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [pattern.rstrip("*") for pattern in found["include"]]


def test_install_compiles_every_module_of_the_project(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, checkout / name)
    for package in project_packages():
        shutil.copytree(ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    # A venv of its own that runs this one's interpreter, its install stamp current: the script
    # installs nothing (no pip, no network) and this test's venv is left as it is.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    pyproject_hash = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".lama-install-stamp").write_text(f"{pyproject_hash} \n")

    result = subprocess.run(["bash", "start_app.sh", "--install"], cwd=checkout, capture_output=True, text=True,
                            env={**os.environ, "LAMA_VENV": str(venv)}, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout  # the stamp held: nothing was installed
    sources = [checkout / "app.py", *(path for package in project_packages()
                                      for path in (checkout / package).rglob("*.py"))]
    assert len(sources) > 50
    missing = [str(path.relative_to(checkout)) for path in sources
               if not Path(importlib.util.cache_from_source(str(path))).exists()]
    assert missing == []
