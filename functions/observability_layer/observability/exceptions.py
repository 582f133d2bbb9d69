"""Exceptions raised by the observability layer (one base, names ending in Error)."""

from __future__ import annotations


class ObservabilityError(Exception):
    """Base of every error the layer raises on purpose."""


class ConfigError(ObservabilityError, ValueError):
    """A configuration variable has a bad value.

    The message is one line that names the variable and says what was expected, so that a failed
    cold start explains itself in the first line of the function's log.
    """

    def __init__(self, variable: str, value: str, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"{variable}={shown!r} is invalid: expected {expected}")
