"""What every function checks of a CloudEvent it takes in, and how it words a parser's error for a client."""

from __future__ import annotations

import re

from cloudevents.core.base import BaseCloudEvent

IDENTITY = ("id", "source", "type")
# C0 and C1 control characters and DEL: the CloudEvents type system forbids them in String attributes
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# RFC 3339's date-time (section 5.6), the only form CloudEvents allows for `time`
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
TIME_EXAMPLE = "2026-01-31T12:00:00Z"


def identity_problem(event: BaseCloudEvent) -> str | None:
    """The checks the SDK leaves to us: the identifying attributes are non-empty strings, and no string
    attribute holds a control character or text that is not Unicode (a lone surrogate)."""
    attributes = event.get_attributes()
    for name in IDENTITY:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            return f"attribute {name!r} must be a non-empty string"
    for name, value in attributes.items():
        if isinstance(value, str):
            problem = text_problem(value, f"attribute {name!r}", control=True)
            if problem:
                return problem
    return None


def text_problem(value: str, what: str, *, control: bool = False) -> str | None:
    """Why `value` cannot travel as text: a lone surrogate (never encodable as UTF-8, so no Kafka header or
    JSON document could carry it), or, when `control` is set, a control character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode text (a lone surrogate)"
    if control:
        found = _CONTROL.search(value)
        if found:
            return f"{what} contains a control character (U+{ord(found.group()):04X}), which CloudEvents forbids"
    return None


def time_problem(value: object) -> str | None:
    """`time` must be an RFC 3339 timestamp; say so in the client's terms rather than the parser's."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return f"attribute 'time' must be an RFC 3339 timestamp such as {TIME_EXAMPLE} (got {value!r})"
    return None


def describe(error: Exception, limit: int = 300) -> str:
    """A parser's error on one line, at most `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
