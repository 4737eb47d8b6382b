"""webui.gradio_import: the server's Gradio writes no type stubs and renders no listener docstrings as
its component classes are defined, runs its queued events without importing matplotlib, and is
Gradio all the same. Each case in a fresh process, where Gradio is imported first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.paths import ROOT

COMPONENT = '''
from gradio.components import Component


class Thing(Component):
    EVENTS = ["change"]

    def preprocess(self, payload):
        return payload
'''


def define_a_component(folder: Path, importing: str) -> subprocess.CompletedProcess[str]:
    """Imports Gradio with `importing`, then defines a component class in a module of `folder`."""
    (folder / "thing.py").write_text(COMPONENT)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(folder)!r})
        {importing}
        import gradio, thing
        print(gradio.Button.click.__doc__.splitlines()[0])
        print(len(gradio.utils.get_all_components()), [type(f).__name__ for f in sys.meta_path])
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})


@pytest.mark.parametrize("importing, gradio_s_own", [
    ("import gradio", True),  # what the server's import leaves out: the stub written, the docstrings rendered
    ("from webui.gradio_import import import_gradio; import_gradio()", False),
])
def test_the_server_s_gradio_writes_no_stub_and_renders_no_listener_docstring(tmp_path, importing, gradio_s_own):
    done = define_a_component(tmp_path, importing)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thing.pyi").exists() == gradio_s_own
    listener_doc, listing = done.stdout.splitlines()
    assert listener_doc == ("Triggered when the Button is clicked." if gradio_s_own
                            else "Triggered when the {{ component }} is clicked.")
    components, finders = listing.split(" ", 1)
    assert int(components) > 30  # Gradio's components are all there, the new one among them
    assert "_AfterGradioModules" not in finders  # the finder is gone once Gradio is imported


def test_a_gradio_imported_before_is_returned_as_it_is():
    done = subprocess.run([sys.executable, "-c", "import gradio; from webui.gradio_import import import_gradio; "
                           "import gradio.component_meta as meta; assert import_gradio() is gradio; "
                           "print(meta.create_or_modify_pyi.__module__)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gradio.component_meta"


@pytest.mark.parametrize("importing, imports_matplotlib", [
    ("import gradio", True),  # Gradio's own switch of matplotlib's backend: what the server leaves out
    ("from webui.gradio_import import import_gradio; import_gradio()", False),
])
def test_the_server_s_queued_events_import_no_matplotlib(importing, imports_matplotlib):
    """What Gradio's call_process_api enters around every queued event (the page's repairs)."""
    code = (f"import sys; {importing}; from gradio import utils\n"
            "with utils.MatplotlibBackendMananger():\n    pass\n"
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(imports_matplotlib)
