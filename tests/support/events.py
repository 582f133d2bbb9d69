"""The one loader of the sample events kept in tests/events/ (the same files feed manual invokes)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of tests/events/<name>.json with top-level keys replaced."""
    event = copy.deepcopy(_load(name))
    event.update(overrides)
    return event
