"""A Kafka producer for Lambda: idempotent (acks=all), made once per execution environment, and a `send`
that reports each record's delivery inside a deadline, with a PRODUCER span whose context travels in the
record's `traceparent` header.

A producer that hit a fatal error (the idempotent producer fenced, or a broker that lost its state answering
UNKNOWN_PRODUCER_ID) can send nothing more, so it is replaced at once. confluent-kafka never hands a fatal
error to `error_cb`: it raises it out of poll()/flush(), as a SystemError whose cause is the KafkaException
when a delivery report is served after it in the same call, and every later produce() fails with
`Local: Fatal error`. Every call that serves callbacks goes through `_serve`, which turns that into the fatal
flag instead of an exception."""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from lambda_event_bus.bus.exceptions import BusError
from lambda_event_bus.bus.kafka_settings import KafkaSettings
from lambda_event_bus.bus.records import KafkaRecord
from lambda_event_bus.telemetry import Telemetry, snapstart

__all__ = ["DELIVERED", "NOT_SENT", "UNKNOWN", "Delivery", "DeliveryOutcome", "EventProducer", "ProducerFailedError"]

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer


class DeliveryOutcome(enum.StrEnum):
    """Where a produced record is: see Delivery."""

    DELIVERED = "delivered"
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"


DELIVERED, NOT_SENT, UNKNOWN = DeliveryOutcome.DELIVERED, DeliveryOutcome.NOT_SENT, DeliveryOutcome.UNKNOWN


@dataclass(frozen=True)
class Delivery:
    """A record's fate: `delivered` (the broker acknowledged it), `not_sent` (it never reached the broker, or
    the broker refused it: safe to send again), or `unknown` (in flight when the wait ended, or timed out
    there: the broker may have it)."""

    record: KafkaRecord
    outcome: DeliveryOutcome
    partition: int | None = None
    offset: int | None = None
    error: str | None = None
    permanent: bool = False  # refused for good (too large, not authorized, invalid): a retry cannot help

    @property
    def ok(self) -> bool:
        return self.outcome == DELIVERED


KAFKA_LOGGER = logging.getLogger("eventbus.kafka")
SNAPSHOT_FLUSH_S = 5.0
"""Before a snapshot, init's records get this long to be acknowledged (init may take minutes with SnapStart)."""
NOT_ACKNOWLEDGED = "the broker did not acknowledge the record before the deadline"


class ProducerFailedError(BusError, RuntimeError):
    """The producer hit a fatal error and could not have sent anything (it has been replaced since)."""


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
                # Connect to every broker at once, in librdkafka's threads while init goes on. With sparse
                # connections (the default) the leader's connection waits for the first produce, and the
                # idempotent producer's id only comes with its 500 ms retry timer: the first request of an
                # environment waited 0.5-1 s for it (measured against tansu; 5 ms once ~100 ms of init follow)
                "enable.sparse.connections": False,
                # ... and those connections keep reconnecting while a broker is down: back off at most 1 s
                # (librdkafka's default grows to 10 s), so that a broker back from a restart is used at once
                "reconnect.backoff.max.ms": 1000,
                # librdkafka gives up on a record on its own after this, whatever the caller's deadline
                "message.timeout.ms": max(1, int(delivery_timeout_s * 1000)),
                "log.connection.close": False,
                "error_cb": self._on_client_error,
                # librdkafka's own log lines go through logging (WARNING and up), not straight to stderr
                "logger": KAFKA_LOGGER,
            }
            | (extra_config or {})
        )
        self._producer: Producer | None = self._create()
        snapstart.register(self._before_snapshot, self._after_restore)

    def _before_snapshot(self) -> None:
        """Send what init queued, then let the client go (its connections and threads end with it): a restored
        environment's connections from the snapshot would be dead, and shared by every environment restored."""
        if self._producer is not None:
            try:
                self._serve(self._producer.flush, SNAPSHOT_FLUSH_S)
            except Exception:  # a hook that raises fails the snapshot, and the version's publication with it
                KAFKA_LOGGER.warning("before the snapshot: the producer's flush failed", exc_info=True)
        self._producer = None  # no client, no thread, no connection in the snapshot

    def _after_restore(self) -> None:
        """A client of this environment's own, connecting now, while the restore goes on."""
        self._producer = self._create()

    @property
    def _client(self) -> Producer:
        if self._producer is None:
            self._producer = self._create()
        return self._producer

    def _create(self) -> Producer:
        from confluent_kafka import Producer

        self._fatal = False
        return Producer(self._config)

    def _on_client_error(self, error: KafkaError) -> None:
        # fatal errors never arrive here (confluent-kafka raises them from poll/flush): see _serve
        from confluent_kafka import KafkaError as Errors

        if error.code() in (Errors._ALL_BROKERS_DOWN, Errors._TRANSPORT):
            self._broker_status(0)

    def _serve(self, call: Callable[[float], object], timeout_s: float) -> KafkaError | None:
        """`poll` or `flush`, with a fatal error raised out of it recorded (and returned) rather than raised."""
        from confluent_kafka import KafkaException

        try:
            call(timeout_s)
        except (KafkaException, SystemError) as raised:
            fatal = _fatal_cause(raised)
            if fatal is None:
                raise
            KAFKA_LOGGER.warning("fatal Kafka producer error, the producer is replaced: %s", fatal)
            self._fatal = True
            return fatal
        return None

    def _replace_if_fatal(self) -> None:
        """A new producer gets a new producer id; what the old one still held is purged (its fate: unknown)."""
        if not self._fatal:
            return
        failed, self._producer = self._producer, self._create()
        if failed is not None:
            with contextlib.suppress(Exception):
                failed.purge(in_queue=True, in_flight=True, blocking=False)

    def _broker_status(self, up: int) -> None:
        self._telemetry.metrics.set("kafka_connection_status", up, broker=self.settings.first_broker)

    def send(
        self, records: Sequence[KafkaRecord], timeout_s: float, *, parents: Sequence[Context] | None = None
    ) -> list[Delivery]:
        """Produce every record and wait for its delivery report, at most `timeout_s` in all.

        Records still in the local queue then are purged (`not_sent`: they will not be sent behind the
        caller's back); records in flight are `unknown` (the broker may have them), which is why consumers
        deduplicate by event source and id. A producer that hit a fatal error is replaced (first, when the
        error came since the last call; at the end, when this send met it, so the next one works).
        """
        self._serve(self._client.poll, 0)
        self._replace_if_fatal()
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
        fatal = self._serve(self._client.flush, max(0.0, deadline - time.monotonic()))
        if len(reports) < len(records) and fatal is None:
            self._client.purge(in_queue=True, in_flight=False, blocking=False)
            fatal = self._serve(self._client.poll, 0)  # delivery reports of the purged records
        deliveries = [
            self._finish(record, spans[index], *_report(reports, index, fatal)) for index, record in enumerate(records)
        ]
        self._replace_if_fatal()
        return deliveries

    def _enqueue(
        self,
        record: KafkaRecord,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[object, object], None],
        deadline: float,
    ) -> None:
        while True:
            try:
                self._client.produce(
                    record.topic, value=record.value, key=record.key, headers=headers, on_delivery=on_delivery
                )
            except BufferError:  # the local queue is full: serve delivery reports, then try again
                if time.monotonic() >= deadline:
                    on_delivery(None, None)
                    return
                fatal = self._serve(self._client.poll, 0.01)
                if fatal is not None:  # this producer can send nothing more: the record never left
                    on_delivery(fatal, None)
                    return
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
        """How many brokers answered a metadata request within `timeout_s`. Raises when none did, and
        ProducerFailedError when the producer hit a fatal error since its last send (metadata requests still
        work on such a producer, so they alone cannot tell); it is replaced for the next call."""
        self._serve(self._client.poll, 0)
        if self._fatal:
            self._replace_if_fatal()
            raise ProducerFailedError("the Kafka producer hit a fatal error and was replaced; retry")
        metadata = self._client.list_topics(timeout=timeout_s)
        self._broker_status(1 if metadata.brokers else 0)
        return len(metadata.brokers)


def _remember(reports: dict[int, tuple[object, object]], index: int, error: object, message: object) -> None:
    reports.setdefault(index, (error, message))


def _report(reports: dict[int, tuple[object, object]], index: int, fatal: object) -> tuple[object, object]:
    """A record's delivery report. After a fatal error a record not delivered is reported with that error:
    `unknown` (the failed producer may have written part of its in-flight batches), never refused for good,
    which its own report (UNKNOWN_PRODUCER_ID without the fatal flag) would wrongly say."""
    error, message = reports.get(index, (None, None))
    if fatal is not None and _outcome(error, message) != DELIVERED:
        return fatal, None
    return error, message


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
    """A fatal error, or produce()'s `Local: Fatal error` on a producer that had one (its fatal() is False)."""
    from confluent_kafka import KafkaError

    kafka_error = _kafka_error(error)
    return kafka_error is not None and (kafka_error.fatal() or kafka_error.code() == KafkaError._FATAL)


def _fatal_cause(raised: BaseException) -> KafkaError | None:
    """The fatal KafkaError behind an exception out of poll/flush: itself, or what a SystemError wraps."""
    seen: BaseException | None = raised
    while seen is not None:
        if _is_fatal(seen):
            return _kafka_error(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _outcome(error: object, message: object) -> DeliveryOutcome:
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
    return not (kafka_error.retriable() or _is_fatal(kafka_error) or kafka_error.code() in transient_codes)
