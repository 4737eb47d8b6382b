"""The direction of imports that the layout promises, checked on what Python really loads.

loadreport is a client of the service's HTTP API: it runs on a machine without torch, the model
or the web stack. monitor is imported by the service and imports nothing else of the project.
Each package is imported whole in a fresh interpreter (nothing loaded before it), and the
packages it pulled in are compared with what it may not touch.

torch belongs to the engine (lama/). The service composes the engine, so importing the service
loads torch through lama.engine, and that is as it should be; what the layers promise is that
no module outside lama/ imports torch itself: every device question goes through lama.device.
import-linter checks that on the packages (pyproject.toml's contracts, direct imports), this file
on app.py, which is no package; the modules that must not even load torch are imported here:
the monitor and the strategy planning, which the engine keeps pure.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every top-level package of the project: a folder of the checkout with an __init__.py.
PROJECT = frozenset(path.parent.name for path in ROOT.glob("*/__init__.py"))
LOADED_BY_IMPORTING = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not module.name.endswith(".__main__"):  # running it is not importing it
        importlib.import_module(module.name)
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def loaded_by_importing(package: str) -> set[str]:
    """The top-level names in sys.modules after importing every module of `package`."""
    done = subprocess.run([sys.executable, "-c", LOADED_BY_IMPORTING, package], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("package, forbidden", [
    ("loadreport", PROJECT - {"loadreport"} | {"torch", "gradio", "fastapi"}),
    ("monitor", PROJECT - {"monitor"} | {"torch", "gradio", "fastapi"}),
], ids=["loadreport", "monitor"])
def test_a_package_loads_nothing_it_must_not_depend_on(package, forbidden):
    assert {"lama", "webui", "monitor", "loadreport"} <= PROJECT  # the layout this test knows
    loaded = loaded_by_importing(package)
    assert package in loaded
    assert not loaded & forbidden, f"importing {package} loads {sorted(loaded & forbidden)}"


LAYERED = ("lama", "service", "webui", "monitor", "loadreport")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter with the contracts of pyproject.toml, on the packages under `root`."""
    command = Path(sys.executable).parent / "lint-imports"  # the console script beside this interpreter
    return subprocess.run([str(command), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("module, line, contract", [
    ("service/pipeline.py", "import fastapi", "the application speaks no HTTP"),
    ("service/jobs.py", "from webui import errors", "never upwards"),
    ("monitor/sampler.py", "import lama.masks", "monitor imports nothing of the project"),
    ("service/pipeline.py", "import torch", "only the engine imports torch"),
    ("webui/api.py", "from torch import cuda", "only the engine imports torch"),
    ("lama/planning.py", "import torch", "strategy planning is pure"),
])
def test_the_layer_contracts_catch_a_deliberate_violation(tmp_path, module, line, contract):
    """The contracts CI checks (`lint-imports`) hold here, and fail on a copy with one bad import."""
    for package in LAYERED:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    kept = lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    with open(tmp_path / module, "a") as source:
        source.write(f"\n{line}\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0 and f"{contract}" in broken.stdout and "BROKEN" in broken.stdout, broken.stdout


def imported_names(path: Path) -> set[str]:
    """Top-level names of every import statement in a source file (function-local ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_the_composition_root_imports_no_torch_either(tmp_path):
    """app.py is no package, so import-linter cannot see it: its source is read instead (the
    app imports its heavy parts inside functions, which the walk sees too)."""
    assert "torch" not in imported_names(ROOT / "app.py")
    module = tmp_path / "module.py"
    module.write_text("def build():\n    import torch.cuda\n    from torch import nn\n")
    assert imported_names(module) == {"torch"}, "guard for the guard"


def test_strategy_planning_loads_no_torch():
    done = subprocess.run([sys.executable, "-c", "import json, sys, lama.planning; print(json.dumps(sorted(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch" not in json.loads(done.stdout)
