"""Load a function's handler the way Lambda does, in-process with a test's environment (restored when the test
ends): its CodeUri folder on sys.path (the layer's is there already: pytest's pythonpath), `app.py` imported fresh
and configured from os.environ (the process-wide telemetry is read again)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from lambda_event_bus.telemetry.process import reset_telemetry

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def load_handler_module(folder: str, package: str) -> ModuleType:
    """Import functions/<folder>/app.py as a fresh module; `package` is the function's own package, which is
    imported again too so that its settings are read from the current environment."""
    reset_telemetry()
    for name in list(sys.modules):
        if name == package or name.startswith(f"{package}."):
            del sys.modules[name]
    code_uri = str(FUNCTIONS / folder)
    if code_uri not in sys.path:
        sys.path.insert(0, code_uri)
    spec = importlib.util.spec_from_file_location(f"{folder}_app", FUNCTIONS / folder / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no app.py in {code_uri}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_function(folder: str, package: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(FUNCTIONS / folder))
    return load_handler_module(folder, package)
