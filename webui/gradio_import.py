"""Gradio imported as a server needs it: without rewriting its components' type stubs or rendering
their event listeners' docstrings, without importing matplotlib at its first queued event, and its
Blocks laid out without building apps that are thrown away.

Gradio's component metaclass, for every component class defined (81 at `import gradio` 6.31),
reads the class's source file and its .pyi stub, parses both with Python's ast and writes the stub
again where it differs: an editor's type hints for people developing components. A server gains
nothing from it (the stubs ship in Gradio's wheel; this app defines no component classes), and it
is close to half of `import gradio`, which is on the way to /readyz (`python tools/import_times.py`
measures both ways; docs/BENCHMARKS.md). So the server imports Gradio with that step replaced by
one that does nothing, as soon as the metaclass's module has run and before any component is
defined. Where Gradio no longer has the step, nothing is replaced and the import is Gradio's own.

The same metaclass also renders each of a component's event listeners' docstrings as a Jinja
template (to name the component in `help(gr.Button.click)`): Jinja compiles a template per listener
(Gradio 6.31: about a fifth of the server's import of it on the 2-core box, `python
tools/import_times.py`). The server's help() is never read, so its listeners keep their docstrings
as written.

Gradio also runs every queued event inside a switch of matplotlib's backend to Agg (for handlers
that draw figures on a worker thread), which imports matplotlib, and its pyplot, where it is
installed: the service installs it for the resource report's plots, so the first repair from the
page after each start waited for that import, and the server kept its modules in memory for good
(`python tools/first_ui_repair.py` times the first repair both ways). No handler of this server
draws with matplotlib (the dashboard's plots are Gradio's own, drawn in the browser), so its events
run without the switch.

Gradio's Blocks also build a whole FastAPI app for themselves (about 90 routes, each analysed by
FastAPI: 90 ms on the 2-core box) when they are made and again when their `with` block ends, each
replaced by the next: by the one `queue()` builds, which Gradio's queue uses, and by the one
mount_gradio_app builds, which serves. The server's UI is laid out inside `without_interim_apps`,
which leaves the first two out; that is on the way to /readyz too.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator
from types import ModuleType

STUB_MODULE = "gradio.component_meta"
STUB_WRITER = "create_or_modify_pyi"
EVENTS_MODULE = "gradio.events"
LISTENER_CLASS = "EventListener"
DOC_RENDERER = "set_doc"  # EventListener's, called for each listener of each component class defined
BACKEND_SWITCH = "MatplotlibBackendMananger"  # (sic) gradio.utils's, entered around every queued event
APP_FACTORY = "create_app"  # gradio.routes.App's static method that builds a Blocks' FastAPI app


def skip_stub(*_args: object, **_kwargs: object) -> None:
    """What the server does instead of rewriting a component's type stub: nothing."""


def keep_doc(_listener: object, component: str) -> None:
    """What the server does instead of rendering an event listener's docstring: nothing (it keeps
    the template's text)."""


def _skip_stub_writer(module: ModuleType) -> None:
    if hasattr(module, STUB_WRITER):
        setattr(module, STUB_WRITER, skip_stub)


def _keep_listener_docs(module: ModuleType) -> None:
    listener = getattr(module, LISTENER_CLASS, None)
    if listener is not None and hasattr(listener, DOC_RENDERER):
        setattr(listener, DOC_RENDERER, keep_doc)


# What the server replaces in each of these modules once it has run, before any component class is
# defined. Where Gradio no longer has what is replaced, that module is Gradio's own.
AFTER_IMPORT = {STUB_MODULE: _skip_stub_writer, EVENTS_MODULE: _keep_listener_docs}


class _AfterGradioModules(importlib.abc.MetaPathFinder):
    """Finds AFTER_IMPORT's modules as Python would, and has their loader make its replacements
    once each module has run."""

    def find_spec(self, fullname: str, path, target=None):
        replace = AFTER_IMPORT.get(fullname)
        if replace is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            replace(module)

        spec.loader.exec_module = exec_module
        return spec


def import_gradio() -> ModuleType:
    """`import gradio`, without the stub writing and the listeners' docstrings rendered where this
    process imports it first, and its queued events without the switch of matplotlib's backend
    (where Gradio still has it)."""
    if "gradio" in sys.modules:
        gradio = sys.modules["gradio"]
    else:
        finder = _AfterGradioModules()
        sys.meta_path.insert(0, finder)
        try:
            gradio = importlib.import_module("gradio")
        finally:
            sys.meta_path.remove(finder)
    utils = importlib.import_module("gradio.utils")
    if hasattr(utils, BACKEND_SWITCH):
        # What the events then run inside: nothing (and no import of matplotlib).
        setattr(utils, BACKEND_SWITCH, contextlib.nullcontext)
    return gradio


@contextlib.contextmanager
def without_interim_apps() -> Iterator[None]:
    """Blocks made and laid out inside build no FastAPI app (their `app` stays None until their
    `queue()` builds the one Gradio's queue uses). Where Gradio no longer builds apps that way,
    nothing is left out. It replaces Gradio's factory for the whole process while it lasts: for
    the composition root's one layout, not for threads building Gradio apps at the same time."""
    from gradio.routes import App

    create_app = App.__dict__.get(APP_FACTORY)
    if not isinstance(create_app, staticmethod):
        yield
        return
    setattr(App, APP_FACTORY, staticmethod(lambda *_args, **_kwargs: None))
    try:
        yield
    finally:
        setattr(App, APP_FACTORY, create_app)
