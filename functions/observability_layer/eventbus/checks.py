"""What every function checks of a CloudEvent it takes in, and how it words a parser's error for a client."""

from __future__ import annotations

from cloudevents.core.base import BaseCloudEvent

IDENTITY = ("id", "source", "type")


def identity_problem(event: BaseCloudEvent) -> str | None:
    """The check the SDK leaves to us: the identifying attributes are non-empty strings."""
    attributes = event.get_attributes()
    for name in IDENTITY:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            return f"attribute {name!r} must be a non-empty string"
    return None


def describe(error: Exception, limit: int = 300) -> str:
    """A parser's error on one line, at most `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
