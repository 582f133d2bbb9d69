"""The structured record of one captured error: what its single JSON log line carries."""

from __future__ import annotations

import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_event_id() -> str:
    """An event id in Sentry's format (32 hex digits), for when Sentry is not configured."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ErrorRecord:
    event_id: str
    component: str
    operation: str
    error_type: str
    error_message: str
    handled: bool
    service: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    stacktrace: str | None = None

    @classmethod
    def describe(cls, error: BaseException) -> tuple[str, str, str]:
        """(error_type, message, stacktrace) of an exception."""
        error_type = type(error).__qualname__
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return error_type, str(error), stack

    def log_fields(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "component": self.component,
            "operation": self.operation,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "handled": self.handled,
            "service": self.service,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id,
            "context": self.context,
            "stacktrace": self.stacktrace,
        }
