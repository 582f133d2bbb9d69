"""Load a function's handler in-process with a test's environment (restored when the test ends)."""

from __future__ import annotations

from types import ModuleType

import pytest
from localbus.functions import FUNCTIONS, load_handler_module


def load_function(folder: str, package: str, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(FUNCTIONS / folder))
    return load_handler_module(folder, package)
