"""The direction of imports that the layout promises, checked on what Python really loads.

loadreport is a client of the service's HTTP API: it runs on a machine without torch, the model
or the web stack. monitor is imported by the service and imports nothing else of the project.
Each package is imported whole in a fresh interpreter (nothing loaded before it), and the
packages it pulled in are compared with what it may not touch.

torch belongs to the engine (lama/). The service composes the engine, so importing the service
loads torch through lama.engine, and that is as it should be; what the layers promise is that
no module outside lama/ imports torch itself: every device question goes through lama.device.
That is checked on the source (every import statement, wherever it sits in a module), and the
modules that must not even load torch are checked by importing them: the monitor and the
strategy planning, which the engine keeps pure.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def imported_names(path: Path) -> set[str]:
    """Top-level names of every import statement in a source file (function-local ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_only_the_engine_imports_torch():
    outside = [path for package in PROJECT - {"lama"} for path in (ROOT / package).rglob("*.py")]
    outside.append(ROOT / "app.py")
    assert any(path.parts[-2] == "service" for path in outside)  # the layout this test knows
    importers = sorted(str(path.relative_to(ROOT)) for path in outside if "torch" in imported_names(path))
    assert importers == [], f"torch imported outside lama/: {importers}"


def test_the_check_sees_a_function_local_import(tmp_path):
    """Guard for the guard: the app imports its heavy parts inside functions."""
    module = tmp_path / "module.py"
    module.write_text("def build():\n    import torch.cuda\n    from torch import nn\n")
    assert imported_names(module) == {"torch"}


def test_strategy_planning_loads_no_torch():
    done = subprocess.run([sys.executable, "-c", "import json, sys, lama.planning; print(json.dumps(sorted(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch" not in json.loads(done.stdout)
