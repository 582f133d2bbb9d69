"""The layer's exceptions: one base for everything it raises on purpose, and the configuration error every
package's settings raise (one line that names the variable)."""

from __future__ import annotations


class LayerError(Exception):
    """Base of every error the layer (`lambda_event_bus`) raises on purpose."""


class ConfigError(LayerError, ValueError):
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
