"""Secret scrubbing for error context: values under secret-looking names never reach logs or Sentry.

A name is secret when one of its words is (`client_secret`, `X-Api-Key`, `accessToken`, `Set-Cookie`),
not when a secret word merely hides inside another (`passenger_count`, `bypass_cache`). Names are found
as mapping keys, as the first item of `(name, value)` pairs (confluent-kafka's and HTTP libraries' header
lists) and in `{"key"|"name": ..., "value": ...}` items.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

FILTERED = "[Filtered]"
MAX_DEPTH = 8

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "auth",
        "bearer",
        "jwt",
        "cookie",
        "credential",
        "credentials",
        "session",
        "signature",
        "dsn",
    }
)
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
_SECRET_COMPOUNDS = frozenset(
    {"apikey", "secretkey", "accesskey", "privatekey", "accesstoken", "authtoken", "sessionid", "xapikey"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-zA-Z0-9]+")


def _words(name: str) -> list[str]:
    return [word for word in _SEPARATORS.split(_CAMEL.sub("_", name).lower()) if word]


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    words = _words(key)
    if any(word in _SECRET_WORDS or word in _SECRET_COMPOUNDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words)) or "".join(words) in _SECRET_COMPOUNDS


def _scrub_mapping(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    named = value.get("key", value.get("name"))
    if "value" in value and is_secret_key(named):  # {"key": "token", "value": "..."}
        return {str(key): FILTERED if key == "value" else scrub(item, depth + 1) for key, item in value.items()}
    return {str(key): FILTERED if is_secret_key(key) else scrub(item, depth + 1) for key, item in value.items()}


def scrub(value: object, depth: int = 0) -> Any:  # noqa: ANN401, PLR0911 - JSON-like data of any shape, one return per kind
    """A copy of `value` with secrets replaced; containers are walked, anything else is kept as is
    (or turned into its repr when it is not a plain JSON value)."""
    if depth > MAX_DEPTH:
        return "[Truncated]"
    if isinstance(value, Mapping):
        return _scrub_mapping(value, depth)
    if isinstance(value, (list, tuple)) and len(value) == 2 and is_secret_key(value[0]):  # ("Authorization", ...)
        return [value[0], FILTERED]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(item, depth + 1) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return repr(value)
