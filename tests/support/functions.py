"""Load a function's handler the way Lambda does: its CodeUri folder and the layer's folder on sys.path,
`app.py` imported fresh, with the environment given (and the process-wide telemetry read again)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from observability.provider import reset_telemetry

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def load_function(folder: str, package: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    reset_telemetry()
    for name in list(sys.modules):
        if name == package or name.startswith(f"{package}."):
            del sys.modules[name]
    monkeypatch.syspath_prepend(str(FUNCTIONS / folder))
    spec = importlib.util.spec_from_file_location(f"{folder}_app", FUNCTIONS / folder / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
