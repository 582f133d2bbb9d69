"""JSON log lines with trace correlation: every line carries trace_id, span_id and the request id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from lambda_event_bus.telemetry.invocation import current_invocation

LOGGER_NAME = "eventbus"
FIELDS_ATTRIBUTE = "fields"
"""Structured fields travel in `extra={"fields": {...}}` and become top-level keys of the line."""


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            line["trace_id"] = trace.format_trace_id(span_context.trace_id)
            line["span_id"] = trace.format_span_id(span_context.span_id)
        invocation = current_invocation()
        if invocation is not None:
            line["request_id"] = invocation.request_id
            if invocation.correlation_id:
                line["correlation_id"] = invocation.correlation_id
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info and "stacktrace" not in line:
            line["stacktrace"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time of each record (not the one seen at creation)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:  # noqa: ANN401 - a text stream
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:  # noqa: ANN401
        pass


def get_logger(service: str, level: int = logging.INFO) -> logging.Logger:
    """The layer's logger: JSON lines on stdout (Lambda ships stdout to CloudWatch Logs).

    It does not propagate to the root logger, whose handler the Lambda runtime owns, so nothing
    is written twice.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(JsonFormatter(service))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
