"""Secret scrubbing for error context: values under secret-looking keys never reach logs or Sentry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

FILTERED = "[Filtered]"
MAX_DEPTH = 8
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authori[sz]ation|api[-_ ]?key|apikey|cookie|credential|private[-_ ]?key"
    r"|session|signature|dsn",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def scrub(value: object, depth: int = 0) -> Any:  # noqa: ANN401 - it returns JSON-like data of any shape
    """A copy of `value` with secrets replaced; containers are walked, anything else is kept as is
    (or turned into its repr when it is not a plain JSON value)."""
    if depth > MAX_DEPTH:
        return "[Truncated]"
    if isinstance(value, Mapping):
        return {str(key): FILTERED if is_secret_key(key) else scrub(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(item, depth + 1) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return repr(value)
