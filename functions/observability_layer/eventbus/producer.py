"""A Kafka producer for Lambda: idempotent (acks=all), made once per execution environment, and a `send`
that reports each record's delivery inside a deadline, with a PRODUCER span whose context travels in the
record's `traceparent` header."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from observability import Telemetry
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from eventbus.kafka_settings import KafkaSettings
from eventbus.records import KafkaRecord

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer


DELIVERED, NOT_SENT, UNKNOWN = "delivered", "not_sent", "unknown"


@dataclass(frozen=True)
class Delivery:
    """A record's fate: `delivered` (the broker acknowledged it), `not_sent` (it never reached the broker, or
    the broker refused it: safe to send again), or `unknown` (in flight when the wait ended, or timed out
    there: the broker may have it)."""

    record: KafkaRecord
    outcome: str
    partition: int | None = None
    offset: int | None = None
    error: str | None = None
    permanent: bool = False  # refused for good (too large, not authorized, invalid): a retry cannot help

    @property
    def ok(self) -> bool:
        return self.outcome == DELIVERED


KAFKA_LOGGER = logging.getLogger("eventbus.kafka")
NOT_ACKNOWLEDGED = "the broker did not acknowledge the record before the deadline"


class EventProducer:
    def __init__(
        self,
        settings: KafkaSettings,
        telemetry: Telemetry,
        *,
        delivery_timeout_s: float = 5.0,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._telemetry = telemetry
        self._fatal = False
        self._config = (
            settings.client_config()
            | {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                # librdkafka gives up on a record on its own after this, whatever the caller's deadline
                "message.timeout.ms": max(1, int(delivery_timeout_s * 1000)),
                "log.connection.close": False,
                "error_cb": self._on_client_error,
                # librdkafka's own log lines go through logging (WARNING and up), not straight to stderr
                "logger": KAFKA_LOGGER,
            }
            | (extra_config or {})
        )
        self._producer = self._create()

    def _create(self) -> Producer:
        from confluent_kafka import Producer

        self._fatal = False
        return Producer(self._config)

    def _on_client_error(self, error: KafkaError) -> None:
        from confluent_kafka import KafkaError as Errors

        if error.code() in (Errors._ALL_BROKERS_DOWN, Errors._TRANSPORT):
            self._broker_status(0)
        if error.fatal():  # e.g. the idempotent producer was fenced: this instance can send nothing more
            KAFKA_LOGGER.warning("fatal Kafka producer error, the producer will be recreated: %s", error)
            self._fatal = True

    def _broker_status(self, up: int) -> None:
        self._telemetry.metrics.set("kafka_connection_status", up, broker=self.settings.first_broker)

    def send(
        self, records: Sequence[KafkaRecord], timeout_s: float, *, parents: Sequence[Context] | None = None
    ) -> list[Delivery]:
        """Produce every record and wait for its delivery report, at most `timeout_s` in all.

        Records still in the local queue then are purged (`not_sent`: they will not be sent behind the
        caller's back); records in flight are `unknown` (the broker may have them), which is why consumers
        deduplicate by event source and id. A producer that hit a fatal error is recreated first.
        """
        if self._fatal:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer = self._create()
        deadline = time.monotonic() + max(0.0, timeout_s)
        reports: dict[int, tuple[object, object]] = {}
        spans: list[Span] = []
        tracer = self._telemetry.tracing.tracer
        for index, record in enumerate(records):
            span = tracer.start_span(
                f"produce {record.topic}",
                context=parents[index] if parents is not None else None,
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.name": "produce",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": record.topic,
                    "messaging.message.id": record.event_id,
                    "messaging.kafka.message.key": (record.key or b"").decode(errors="replace"),
                    "messaging.message.body.size": len(record.value),
                    "cloudevents.event_id": record.event_id,
                    "cloudevents.event_type": record.event_type,
                    "cloudevents.event_source": record.source,
                },
            )
            spans.append(span)
            headers: list[tuple[str, str | bytes | None]] = [
                *record.headers,
                *self._telemetry.kafka_headers(trace.set_span_in_context(span)),
            ]
            self._enqueue(record, headers, functools.partial(_remember, reports, index), deadline)
        self._producer.flush(max(0.0, deadline - time.monotonic()))
        if len(reports) < len(records):
            self._producer.purge(in_queue=True, in_flight=False, blocking=False)
            self._producer.poll(0)  # delivery reports of the purged records
        return [
            self._finish(record, spans[index], *reports.get(index, (None, None)))
            for index, record in enumerate(records)
        ]

    def _enqueue(
        self,
        record: KafkaRecord,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[object, object], None],
        deadline: float,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic, value=record.value, key=record.key, headers=headers, on_delivery=on_delivery
                )
            except BufferError:  # the local queue is full: serve delivery reports, then try again
                if time.monotonic() >= deadline:
                    on_delivery(None, None)
                    return
                self._producer.poll(0.01)
            except Exception as error:  # e.g. a record larger than the client allows
                on_delivery(error, None)
                return
            else:
                return

    def _finish(self, record: KafkaRecord, span: Span, error: object, message: object) -> Delivery:
        metrics = self._telemetry.metrics
        outcome = _outcome(error, message)
        if outcome == DELIVERED and isinstance(message, _message_type()):
            delivery = Delivery(record, DELIVERED, partition=message.partition(), offset=message.offset())
            span.set_attribute("messaging.destination.partition.id", str(delivery.partition))
            span.set_attribute("messaging.kafka.offset", delivery.offset or 0)
            metrics.inc("events_produced_total", event_type=record.event_type, topic=record.topic, source=record.source)
            metrics.observe("kafka_message_size_bytes", record.size, operation="produce", topic=record.topic)
            self._broker_status(1)
        else:
            reason = str(error) if error is not None else NOT_ACKNOWLEDGED
            delivery = Delivery(record, outcome, error=reason, permanent=_is_permanent(error))
            span.set_status(Status(StatusCode.ERROR, reason[:256]))
            span.set_attribute("error.type", type(error).__name__ if error is not None else "timeout")
            span.set_attribute("eventbus.delivery.outcome", outcome)
            if _is_fatal(error):
                self._fatal = True
        metrics.inc(
            "kafka_operations_total",
            operation="produce",
            topic=record.topic,
            status="success" if delivery.ok else "error",
        )
        span.end()
        return delivery

    def ping(self, timeout_s: float) -> int:
        """How many brokers answered a metadata request within `timeout_s` (raises when none did)."""
        metadata = self._producer.list_topics(timeout=timeout_s)
        self._broker_status(1 if metadata.brokers else 0)
        return len(metadata.brokers)


def _remember(reports: dict[int, tuple[object, object]], index: int, error: object, message: object) -> None:
    reports.setdefault(index, (error, message))


def _message_type() -> type[Message]:
    from confluent_kafka import Message

    return Message


def _message_error(message: object) -> bool:
    return isinstance(message, _message_type()) and message.error() is not None


def _kafka_error(error: object) -> KafkaError | None:
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return error if isinstance(error, KafkaError) else None


def _is_fatal(error: object) -> bool:
    kafka_error = _kafka_error(error)
    return kafka_error is not None and kafka_error.fatal()


def _outcome(error: object, message: object) -> str:
    """What a delivery report (or its absence) says about where the record is."""
    if error is None and message is not None and not _message_error(message):
        return DELIVERED
    if error is None:  # no report by the deadline: the record was in flight
        return UNKNOWN
    kafka_error = _kafka_error(error)
    if kafka_error is None:  # raised by produce() itself: the record never left
        return NOT_SENT
    from confluent_kafka import KafkaError

    if kafka_error.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._PURGE_INFLIGHT, KafkaError._TIMED_OUT):
        return UNKNOWN
    if kafka_error.fatal() or kafka_error.retriable():
        # a fenced or failing producer may have written some of its in-flight batch
        return UNKNOWN
    return NOT_SENT  # purged from the queue, or refused by the broker (too large, not authorized, ...)


def _is_permanent(error: object) -> bool:
    """A refusal no retry can fix: the broker's or the client's verdict on the record itself."""
    if error is None or isinstance(error, BufferError):
        return False
    kafka_error = _kafka_error(error)
    if kafka_error is None:
        return True  # produce() refused the record outright (e.g. larger than message.max.bytes)
    from confluent_kafka import KafkaError

    transient_codes = (
        KafkaError._PURGE_QUEUE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._PURGE_INFLIGHT,
        KafkaError._TIMED_OUT,
    )
    return not (kafka_error.retriable() or kafka_error.fatal() or kafka_error.code() in transient_codes)
