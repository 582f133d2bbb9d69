"""Secret scrubbing for error context and error messages: secrets never reach logs, spans or Sentry.

By name: a value is secret when one of its name's words is (`client_secret`, `X-Api-Key`, `accessToken`,
`Set-Cookie`, `pw`, `hmac`, `sig`), not when a secret word merely hides inside another (`passenger_count`,
`bypass_cache`). Names are found as mapping keys, as the first item of `(name, value)` pairs
(confluent-kafka's and HTTP libraries' header lists) and in `{"key"|"name": ..., "value": ...}` items.

By value (`scrub_text`, applied to every string): the credentials of a URL (`postgres://admin:[Filtered]@db`,
`https://[Filtered]@o1.ingest.sentry.io/1`), `name=value` and `name: value` pairs whose name is secret
(`password=...`, `?token=...`, `"api_key": "..."`), and `Bearer`/`Basic` credentials.
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
        "pw",
        "hmac",
        "sig",
    }
)
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
_SECRET_COMPOUNDS = frozenset(
    {"apikey", "secretkey", "accesskey", "privatekey", "accesstoken", "authtoken", "sessionid", "xapikey"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-zA-Z0-9]+")
# scheme://userinfo@ : the userinfo is a user and a password, or a token on its own (a Sentry DSN's key); it runs
# to the authority's last `@`. Scheme and names start only where a run of their characters starts, and their
# quantifiers are possessive: every pattern here is linear in the text's length (a 64 KiB blob takes ~1 ms).
_URL_CREDENTIALS = re.compile(r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*+://)(?P<userinfo>[^\s/?#]+)@")
_AUTH_SCHEMES = "Bearer|Basic|Digest|Token|Negotiate|NTLM"
# name=value, name: value, "name": "value" (a quoted value is taken whole); a bare value may be an auth scheme and
# its credentials, and runs to whitespace, `&`, `;`, a bracket or a comma followed by a space
_PAIR = re.compile(
    r"""(?<![\w.-])(?P<name>[A-Za-z_][\w.-]*+)(?P<sep>["']?\s*+[=:]\s*+)"""
    r"""(?:"(?P<double>[^"\n]*+)"|'(?P<single>[^'\n]*+)'"""
    rf"""|(?P<bare>(?:(?:{_AUTH_SCHEMES})\s++)?(?:[^\s&;,"'<>()\[\]{{}}]|,(?!\s))++))"""
)
_AUTH_SCHEME = re.compile(rf"\b(?P<scheme>{_AUTH_SCHEMES})\s+(?P<credentials>[A-Za-z0-9._~+/=-]{{6,}})")
_HINTS = ("@", "=", ":", "Bearer", "Basic", "Digest", "Token", "Negotiate", "NTLM")


def _words(name: str) -> list[str]:
    return [word for word in _SEPARATORS.split(_CAMEL.sub("_", name).lower()) if word]


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    words = _words(key)
    if any(word in _SECRET_WORDS or word in _SECRET_COMPOUNDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words)) or "".join(words) in _SECRET_COMPOUNDS


def scrub_text(text: str) -> str:
    """`text` with the secrets it spells out replaced (URL credentials, secret `name=value` pairs, auth
    schemes' credentials); text without any of their marks is returned as is, at the cost of a scan."""
    if not any(hint in text for hint in _HINTS):
        return text
    if "://" in text:
        text = _URL_CREDENTIALS.sub(_filter_userinfo, text)
    text = _PAIR.sub(_filter_pair, text)
    return _AUTH_SCHEME.sub(lambda found: f"{found['scheme']} {FILTERED}", text)


def _filter_userinfo(found: re.Match[str]) -> str:
    user, has_password, _ = found["userinfo"].partition(":")
    return f"{found['scheme']}{user}:{FILTERED}@" if has_password else f"{found['scheme']}{FILTERED}@"


def _filter_pair(found: re.Match[str]) -> str:
    value = found["double"] if found["double"] is not None else found["single"] or found["bare"]
    if value == FILTERED or not is_secret_key(found["name"]):
        return found[0]
    quote = '"' if found["double"] is not None else "'" if found["single"] is not None else ""
    return f"{found['name']}{found['sep']}{quote}{FILTERED}{quote}"


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
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return repr(value)
