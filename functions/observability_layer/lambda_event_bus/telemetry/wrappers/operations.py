"""Wrappers for units of work inside an invocation: processing an event, a Kafka operation, a CDC change.

Each is a context manager (`with telemetry.kafka_operation("produce", topic) as op:`) and a decorator
(`@telemetry.kafka_operation("produce", topic)`); each records its span and metrics, and captures an
exception (then re-raises it untouched).
"""

from __future__ import annotations

import copy
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from lambda_event_bus.telemetry.provider import Telemetry

P = ParamSpec("P")
R = TypeVar("R")


class Operation(ABC):
    """Base of the operation wrappers. Subclasses say what the span and the metrics are."""

    component = "operation"

    def __init__(
        self, telemetry: Telemetry, *, parent: Context | None = None, links: Sequence[Link] | None = None
    ) -> None:
        self.telemetry = telemetry
        self.parent = parent
        self.links = links
        self.span: Span | None = None
        self.status = "success"
        self._started = 0.0
        self._span_scope: AbstractContextManager[Span] | None = None

    # what subclasses define
    @abstractmethod
    def span_name(self) -> str: ...

    def span_kind(self) -> SpanKind:
        return SpanKind.INTERNAL

    def span_attributes(self) -> dict[str, AttributeValue]:
        return {}

    def error_context(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def record(self, seconds: float, error: BaseException | None) -> None:
        """Record the operation's metrics once it ended."""

    # the protocol
    def __enter__(self) -> Self:
        self._span_scope = self.telemetry.tracing.span(
            self.span_name(),
            kind=self.span_kind(),
            attributes=self.span_attributes(),
            links=self.links,
            context=self.parent,
            record_exception=False,
        )
        self.span = self._span_scope.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        seconds = time.perf_counter() - self._started
        try:
            if isinstance(exc, Exception):
                self.status = "error"
                # re-raised to the caller: reported as unhandled, as Sentry's integrations do
                self.telemetry.capture_error(exc, self.component, self.span_name(), self.error_context(), handled=False)
            self.record(seconds, exc)
        finally:
            if self._span_scope is not None:
                self._span_scope.__exit__(exc_type, exc, tb)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with copy.copy(self):  # a fresh scope per call: the decorator may be re-entered
                return function(*args, **kwargs)

        return wrapper

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.span is not None:
            self.span.set_attribute(key, value)


class EventProcessing(Operation):
    component = "event_processing"

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        event_type: str,
        source: str,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | None = None,
    ) -> None:
        super().__init__(telemetry, parent=parent)
        self.event_type = event_type
        self.source = source
        self.kind = kind

    def span_name(self) -> str:
        return f"process {self.event_type}"

    def span_kind(self) -> SpanKind:
        return self.kind

    def span_attributes(self) -> dict[str, AttributeValue]:
        return {"cloudevents.event_type": self.event_type, "cloudevents.event_source": self.source}

    def error_context(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "source": self.source}

    def record(self, seconds: float, error: BaseException | None) -> None:
        self.telemetry.metrics.observe(
            "event_processing_duration_seconds", seconds, event_type=self.event_type, source=self.source
        )


_KAFKA_KINDS = {"produce": SpanKind.PRODUCER, "consume": SpanKind.CONSUMER}
_KAFKA_OPERATION_TYPES = {"produce": "send", "consume": "process"}


class KafkaOperation(Operation):
    component = "kafka"

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        operation: str,
        topic: str,
        partition: int | None = None,
        parent: Context | None = None,
    ) -> None:
        super().__init__(telemetry, parent=parent)
        self.operation = operation
        self.topic = topic
        self.partition = partition

    def span_name(self) -> str:
        return f"{self.operation} {self.topic}"

    def span_kind(self) -> SpanKind:
        return _KAFKA_KINDS.get(self.operation, SpanKind.CLIENT)

    def span_attributes(self) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.name": self.operation,
            "messaging.destination.name": self.topic,
        }
        if self.operation in _KAFKA_OPERATION_TYPES:
            attributes["messaging.operation.type"] = _KAFKA_OPERATION_TYPES[self.operation]
        if self.partition is not None:
            attributes["messaging.destination.partition.id"] = str(self.partition)
        return attributes

    def error_context(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition}

    def record_message(self, size_bytes: int, *, offset: int | None = None, key: str | None = None) -> None:
        """Record one message's size (and its offset/key on the span)."""
        self.telemetry.metrics.observe(
            "kafka_message_size_bytes", size_bytes, operation=self.operation, topic=self.topic
        )
        self.set_attribute("messaging.message.body.size", size_bytes)
        if offset is not None:
            self.set_attribute("messaging.kafka.offset", offset)
        if key is not None:
            self.set_attribute("messaging.kafka.message.key", key)

    def record(self, seconds: float, error: BaseException | None) -> None:
        self.telemetry.metrics.inc(
            "kafka_operations_total", operation=self.operation, topic=self.topic, status=self.status
        )


class CdcOperation(Operation):
    component = "cdc"

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        connector: str,
        table: str,
        operation: str,
        parent: Context | None = None,
        links: Sequence[Link] | None = None,
    ) -> None:
        super().__init__(telemetry, parent=parent, links=links)
        self.connector = connector
        self.table = table
        self.operation = operation

    def span_name(self) -> str:
        return f"cdc {self.operation} {self.table}"

    def span_attributes(self) -> dict[str, AttributeValue]:
        return {
            "db.collection.name": self.table,
            "db.operation.name": self.operation,
            "cdc.connector": self.connector,
        }

    def error_context(self) -> dict[str, Any]:
        return {"connector": self.connector, "table": self.table, "cdc_operation": self.operation}

    def record_lag(self, seconds: float) -> None:
        """Observe how far behind the source this change is handled."""
        self.telemetry.metrics.observe("cdc_lag_seconds", max(seconds, 0.0), connector=self.connector, table=self.table)
        self.set_attribute("cdc.lag_seconds", seconds)

    def record_source_time(self, epoch_seconds: float) -> None:
        """Observe the lag from the source's change time (seconds since the epoch)."""
        self.record_lag(time.time() - epoch_seconds)

    def record(self, seconds: float, error: BaseException | None) -> None:
        if error is None:
            self.telemetry.metrics.inc(
                "cdc_events_total", connector=self.connector, table=self.table, operation=self.operation
            )
