"""Reading configuration from the environment: typed values, and a `ConfigError` naming the variable for a bad
one, so that a function's cold start fails with one line that says what to fix."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from lambda_event_bus.base.exceptions import ConfigError

_USERINFO = re.compile(r"(?<=://)[^@/]*@")


def redact_userinfo(url: str) -> str:
    """The URL without its credentials (`https://user:pass@host` -> `https://***@host`), for messages."""
    return _USERINFO.sub("***@", url)


class EnvReader:
    """Typed access to environment variables; every bad value raises `ConfigError` naming it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        """The stripped value, or None when unset or blank (blank counts as unset, as in the OTel spec)."""
        value = self._environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def choice(self, name: str, allowed: Iterable[str], default: str) -> str:
        options = tuple(allowed)
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in options:
            raise ConfigError(name, value, "one of " + ", ".join(options))
        return value.lower()

    def choices(self, name: str, allowed: Iterable[str], default: tuple[str, ...]) -> tuple[str, ...]:
        """A comma-separated list whose every item is one of `allowed` (duplicates dropped, order kept)."""
        options = tuple(allowed)
        value = self.raw(name)
        if value is None:
            return default
        items = [item.strip().lower() for item in value.split(",") if item.strip()]
        if not items or any(item not in options for item in items):
            raise ConfigError(name, value, "a comma-separated list of " + ", ".join(options))
        return tuple(dict.fromkeys(items))

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if not minimum <= number <= maximum:
            raise ConfigError(name, value, f"an integer from {minimum} to {maximum}")
        return number

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not minimum <= number <= maximum:  # NaN fails this too
            raise ConfigError(name, value, f"a number from {minimum:g} to {maximum:g}")
        return number

    def url(self, name: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            valid = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a bad port raises
            valid = False
        if not valid:
            raise ConfigError(name, redact_userinfo(value), "an absolute URL like " + f"{schemes[0]}://host:port")
        return value

    def key_values(self, name: str, *, secret: bool = False) -> dict[str, str]:
        """W3C-baggage-like `key=value,key2=value2` with percent-encoding (OTEL_RESOURCE_ATTRIBUTES, headers).

        `secret` keeps the value out of the error message (headers often carry API keys).
        """
        value = self.raw(name)
        if value is None:
            return {}
        pairs: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(name, "<redacted>" if secret else value, "comma-separated key=value pairs")
            pairs[unquote(key.strip())] = unquote(val.strip())
        return pairs
