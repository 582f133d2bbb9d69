"""One batch from the Kafka event source mapping: every record ends delivered, parked for a retry, or
dead-lettered with the reason, by the function itself, in the same invocation.

1. Each record is decoded; a record that cannot decode (poison) goes to the DLQ with its reason at once.
2. Each event becomes one delivery per subscription it matches. Ordered subscriptions' lanes (record keys)
   that have events parked from earlier batches wait behind them (the lane store says which).
3. The delivery engine attempts them all, each subscription on its own (see `engine`).
4. Each attempt is settled: delivered; refused by the target (permanent) -> DLQ; failed (transient), held
   behind a failure of its key, or out of time -> parked in the retry queue with its backoff (see `parking`);
   a subscription whose retry policy allows no retry, or whose window has passed -> DLQ with the reason.
5. Only what could neither be parked nor dead-lettered (SQS did not answer) is reported in
   `batchItemFailures`, with the rest of its partition: the mapping's retries and its on-failure destination
   are the last resort, never the plan.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from lambda_event_bus.base import LambdaContext
from lambda_event_bus.bus.idempotency import Idempotency
from lambda_event_bus.telemetry import Telemetry
from lambda_event_bus.telemetry.metrics import Metrics, Series
from lambda_event_bus.telemetry.tracing import RecordSpan
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from consumer.dead_letters import DeadLetter, DeadLetterQueue
from consumer.decoding import PoisonRecordError, RawRecord, read_record, to_cloud_event
from consumer.deliveries import Attempt, Delivery, Status
from consumer.engine import OUT_OF_TIME, DeliveryEngine
from consumer.lanes import LaneId, Lanes, LaneState, LaneStoreError
from consumer.parking import Backoff, RetryQueue, Ticket, record_of
from consumer.settings import ConsumerSettings
from consumer.settlement import Outcome, Parking, Settler
from consumer.subscriptions import matching
from consumer.targets import Deliverer

RESPONSE_RESERVE_S = 0.5
SETTLE_RESERVE_S = 1.5  # parking and dead letters after the deliveries


_Decoded = tuple[RawRecord, BaseCloudEvent | None]


@dataclass
class _Record:
    """One record of the batch, as it goes through."""

    position: tuple[str, int]  # (`<topic>-<partition>`, offset): how the partial batch response names it
    raw: RawRecord | None = None
    labels: dict[str, str] | None = None  # event_type, topic, source
    span: RecordSpan | None = None
    outcomes: list[Outcome] | None = None
    unsettled: bool = False  # reported for a retry by the mapping


class Processor:
    def __init__(
        self,
        settings: ConsumerSettings,
        telemetry: Telemetry,
        *,
        deliverer: Deliverer,
        dead_letters: DeadLetterQueue,
        idempotency: Idempotency,
        retry_queue: RetryQueue,
        lanes: Lanes,
        engine: DeliveryEngine | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.engine = engine or DeliveryEngine(deliverer, idempotency, telemetry)
        self.settler = Settler(
            telemetry, idempotency=idempotency, dead_letters=dead_letters, retry_queue=retry_queue, lanes=lanes
        )
        self.backoff = Backoff(settings.retry_base_delay_s, settings.retry_max_delay_s)

    def handle(self, event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        records = _records(event)
        if not records:
            return {"batchItemFailures": []}
        reads = [self._decode(record) for record in records]
        producer_contexts = [self._producer_context(r, read) for r, read in zip(records, reads, strict=True)]
        topics = sorted({str(record.get("topic")) for record in records})
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "consume",
            "messaging.batch.message_count": len(records),
            "messaging.destination.name": topics[0] if len(topics) == 1 else ",".join(topics),
        }
        time_left = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0
        # stop starting deliveries while one more slow one, the settling and the telemetry flush still fit
        reserve = (
            self.settings.webhook_timeout_s
            + SETTLE_RESERVE_S
            + self.telemetry.settings.flush_timeout_s
            + RESPONSE_RESERVE_S
        )
        now = time.monotonic()
        with self.telemetry.span(
            f"process {attributes['messaging.destination.name']!s}",
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=self.telemetry.links(context for context in producer_contexts if context is not None),
        ):
            batch = self._batch(
                records,
                reads,
                producer_contexts,
                deadline=now + time_left - reserve,
                hold_ms=int(time_left * 1000) + 1000,
            )
        return {"batchItemFailures": _failures(batch)}

    def _batch(
        self,
        records: Sequence[Mapping[str, Any]],
        reads: Sequence[_Decoded | PoisonRecordError],
        producer_contexts: Sequence[Context | None],
        *,
        deadline: float,
        hold_ms: int,
    ) -> list[_Record]:
        batch: list[_Record] = []
        deliveries: list[Delivery] = []
        owner: dict[int, _Record] = {}
        in_batch: set[tuple[str, str, str]] = set()  # (subscription, source, id) of the deliveries so far
        record_spans = self.telemetry.tracing.record_spans
        measures = _RecordMeasures(self.telemetry.metrics)
        try:
            for record, read, producer_context in zip(records, reads, producer_contexts, strict=True):
                item = _Record(_position(record))
                batch.append(item)
                if isinstance(read, PoisonRecordError):
                    item.unsettled = not self._poison(record, read)
                    continue
                raw, event = read
                measures.add(raw)
                if event is None:
                    continue  # a tombstone: nothing to deliver
                item.raw = raw
                item.labels = {"event_type": event.get_type(), "topic": raw.topic, "source": event.get_source()}
                item.outcomes = []
                subscriptions = matching(self.settings.subscriptions, event)
                if producer_context is None:  # sampled out: no span; its deliveries carry the producer's context
                    parent = self.telemetry.context_from_kafka_headers(raw.headers) if subscriptions else Context()
                else:
                    item.span = record_spans.start(
                        f"process {event.get_type()}",
                        producer_context,
                        SpanKind.CONSUMER,
                        {
                            "cloudevents.event_type": event.get_type(),
                            "cloudevents.event_source": event.get_source(),
                            "messaging.system": "kafka",
                            "messaging.destination.name": raw.topic,
                            "messaging.destination.partition.id": str(raw.partition),
                            "messaging.kafka.offset": raw.offset,
                            "messaging.message.id": event.get_id(),
                        },
                    )
                    parent = item.span.context
                for subscription in subscriptions:
                    delivery = Delivery(subscription, raw, event, parent)
                    copy = (subscription.name, event.get_source(), event.get_id())
                    if copy in in_batch:  # the same event twice in the batch (a producer's retry): one delivery
                        item.outcomes.append(Outcome.DUPLICATE)
                        self.settler.count(delivery, Outcome.DUPLICATE, 0.0)
                        continue
                    in_batch.add(copy)
                    deliveries.append(delivery)
                    owner[id(delivery)] = item
        finally:  # what was read is counted, even if the batch then fails
            measures.done()
        started = time.perf_counter()
        waiting, held = self._waiting_lanes(deliveries)
        attempts = self.engine.run(
            deliveries, deadline=deadline, hold_ms=hold_ms, held=held, context=otel_context.get_current()
        )
        for attempt, outcome in self._settle(attempts, waiting):
            record_outcomes = owner[id(attempt.delivery)].outcomes
            if record_outcomes is not None:
                record_outcomes.append(outcome)
        self._end_records(batch, time.perf_counter() - started)
        return batch

    def _decode(self, record: Mapping[str, Any]) -> _Decoded | PoisonRecordError:
        """The record and its event (None for a tombstone), or why it is poison."""
        try:
            raw = read_record(record)
            return raw, to_cloud_event(
                raw, max_bytes=self.settings.max_record_bytes, plain_event_type=self.settings.default_event_type
            )
        except PoisonRecordError as poison:
            return poison

    def _producer_context(self, record: Mapping[str, Any], read: _Decoded | PoisonRecordError) -> Context | None:
        """The context the record's producer sent, the parent of the record's span; None when that producer
        sampled the trace out (a span would record nothing: none is started, and the context is extracted only if
        a delivery carries the trace on)."""
        tracing = self.telemetry.tracing
        if isinstance(read, PoisonRecordError):
            return tracing.context_from_kafka_headers(record.get("headers"))
        headers = read[0].headers
        return None if tracing.sampled_out(headers) else tracing.context_from_kafka_headers(headers)

    def _waiting_lanes(self, deliveries: Sequence[Delivery]) -> tuple[dict[LaneId, LaneState], dict[LaneId, str]]:
        """The ordered lanes of this batch that have events parked from earlier batches, and why they wait."""
        ordered = {(d.subscription.name, d.lane) for d in deliveries if d.subscription.ordering == "key"}
        lanes = self.settler.lanes
        if not ordered or not lanes.tracks_order:
            return {}, {}
        try:
            waiting = lanes.waiting(ordered)
        except LaneStoreError as error:  # the order cannot be known: nothing of these lanes overtakes anything
            self.telemetry.logger.warning("lanes unknown (%s): ordered deliveries are parked", error)
            return {}, dict.fromkeys(ordered, f"parked: {error}")
        held = {
            lane: f"behind {len(state.pending)} earlier events of its key that wait for a retry"
            for lane, state in waiting.items()
        }
        return waiting, held

    def _settle(
        self, attempts: Sequence[Attempt], waiting: Mapping[LaneId, LaneState]
    ) -> list[tuple[Attempt, Outcome]]:
        settled = self.settler.delivered_all([attempt for attempt in attempts if attempt.done])
        parkings: list[Parking] = []
        letters: list[tuple[Attempt, Callable[[], Outcome]]] = []
        now = time.time()
        for attempt in attempts:
            delivery = attempt.delivery
            if attempt.done:
                continue
            error = attempt.error
            failed = attempt.status is Status.FAILED
            error_event_id = self._capture(attempt) if failed else None
            name = delivery.subscription.name
            if failed and error is not None and not error.transient:
                reason = f"delivery to {name} refused: {error.reason}"
                letter = functools.partial(
                    self.settler.dead_letter, attempt, reason, attempts=1, error_event_id=error_event_id
                )
                letters.append((attempt, letter))
                continue
            policy = delivery.subscription.retry
            window_left = _window_end(delivery.raw, policy.maximum_event_age_s, now) - now
            if not failed and not self.settings.retry_queue_url:  # nowhere to park it: the mapping brings it back
                self.settler.release(attempt, "not attempted")
                self.settler.count(delivery, Outcome.UNSETTLED, 0.0)
                settled.append((attempt, Outcome.UNSETTLED))
                continue
            if not self.settings.retry_queue_url or (failed and policy.maximum_retry_attempts == 0) or window_left <= 0:
                why = (
                    "no retry queue (RETRY_QUEUE_URL) is configured"
                    if not self.settings.retry_queue_url
                    else "its retry policy allows no retries"
                    if window_left > 0
                    else f"the event is older than its retry window ({policy.maximum_event_age_s} s)"
                )
                what = "failed" if failed else "was not attempted"
                reason = f"delivery to {name} {what} and {why}: {error.reason if error else ''}"
                letter = functools.partial(
                    self.settler.dead_letter,
                    attempt,
                    reason,
                    attempts=int(failed),
                    first_failed_at=now,
                    error_event_id=error_event_id,
                )
                letters.append((attempt, letter))
                continue
            ticket = Ticket(
                subscription=name,
                lane=delivery.lane,
                seq=delivery.seq,
                record=record_of(delivery.raw),
                attempts=int(failed),
                first_failed_at=now,
                last_error=error.reason[:1000] if error else "",
                ordered=delivery.subscription.ordering == "key",
            )
            parkings.append(
                Parking(attempt, ticket, self._delay(attempt, waiting.get((name, delivery.lane)), window_left))
            )
        outcomes = self.settler.park(parkings) if parkings else []
        settled.extend(zip((p.attempt for p in parkings), outcomes, strict=True))
        dead = self.settler.side_by_side([letter for _, letter in letters])  # one SQS message each
        settled.extend(zip((attempt for attempt, _ in letters), dead, strict=True))
        return settled

    def _delay(self, attempt: Attempt, waiting: LaneState | None, window_left: float) -> int:
        """A failed delivery waits its backoff; one behind parked events of its key waits for their head's
        next retry (it cannot go first anyway); one out of time goes back at once."""
        if waiting is not None:
            return max(1, min(int(waiting.next_attempt_at - time.time()) + 1, int(window_left), 900))
        error = attempt.error
        if attempt.status is Status.HELD and error is not None and error.reason == OUT_OF_TIME:
            return 0
        return max(1, self.backoff.delay_s(1, time_left_s=window_left))

    def _capture(self, attempt: Attempt) -> str:
        delivery = attempt.delivery
        event, raw = delivery.event, delivery.raw
        error = attempt.error
        context = {
            "event_type": event.get_type(),
            "source": event.get_source(),
            "event_id": event.get_id(),
            "subscription": delivery.subscription.name,
            "topic": raw.topic,
            "partition": raw.partition,
            "offset": raw.offset,
            "transient": error.transient if error else True,
        }
        return self.telemetry.capture_error(
            error or RuntimeError("delivery failed"), "consumer", f"deliver {delivery.subscription.name}", context
        )

    def _end_records(self, batch: Sequence[_Record], seconds: float) -> None:
        metrics = self.telemetry.metrics
        counted: collections.Counter[tuple[str, tuple[tuple[str, str], ...]]] = collections.Counter()
        durations: dict[tuple[str, str], Series] = {}
        for item in batch:
            if item.labels is None or item.outcomes is None:
                continue
            labels, span = item.labels, item.span  # no span: the record's producer sampled its trace out
            if Outcome.UNSETTLED in item.outcomes:
                item.unsettled = True
                if span is not None:
                    span.set_error("a delivery could not be settled")
            elif item.outcomes and all(outcome is Outcome.DUPLICATE for outcome in item.outcomes):
                # every delivery was done before: the mapping delivered the record again
                counted["events_redelivered_total", tuple(labels.items())] += 1
            else:  # settled (delivered, parked or dead-lettered everywhere): counted once
                counted["events_consumed_total", tuple(labels.items())] += 1
                if span is not None and Outcome.DEAD_LETTERED in item.outcomes:
                    span.set_error("dead-lettered")
            kind = (labels["event_type"], labels["source"])
            duration = durations.get(kind)
            if duration is None:
                duration = durations[kind] = metrics.series(
                    "event_processing_duration_seconds", event_type=kind[0], source=kind[1]
                )
            duration.observe(seconds)
            if span is not None:
                span.end()
        for (name, labels_of), count in counted.items():  # added once per label set, not once per record
            metrics.inc(name, count, **dict(labels_of))

    def _poison(self, record: Mapping[str, Any], poison: PoisonRecordError) -> bool:
        """The poison record's dead letter; True when it is stored."""
        context = {"topic": record.get("topic"), "partition": record.get("partition"), "offset": record.get("offset")}
        # its type and source are unknown: it still counts as an event whose processing failed
        unknown = {"event_type": "unknown", "source": "unknown"}
        event_id = self.telemetry.capture_error(
            poison, "consumer", "decode", {**context, **unknown, "reason": poison.reason}
        )
        self.telemetry.metrics.inc(
            "kafka_operations_total", operation="consume", topic=record.get("topic"), status="error"
        )
        try:
            raw: RawRecord | dict[str, Any] = read_record(record)
        except PoisonRecordError:
            raw = dict(record)
        return self.settler.send_letter(DeadLetter.of(raw, f"poison record: {poison.reason}", event_id))


class _RecordMeasures:
    """A batch's per-record metrics, kept to plain values in the loop: each topic's series are looked up once
    per batch, and the records consumed are counted once per topic when the batch has been read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._now = time.time()
        self._series: dict[str, tuple[Series, Series]] = {}
        self._consumed: collections.Counter[str] = collections.Counter()

    def add(self, raw: RawRecord) -> None:
        series = self._series.get(raw.topic)
        if series is None:
            series = self._series[raw.topic] = (
                self._metrics.series("kafka_message_size_bytes", operation="consume", topic=raw.topic),
                self._metrics.series("kafka_consumer_lag_seconds", topic=raw.topic),
            )
        self._consumed[raw.topic] += 1
        series[0].observe(raw.size)
        if raw.timestamp_ms is not None:
            series[1].observe(max(0.0, self._now - raw.timestamp_ms / 1000))

    def done(self) -> None:
        for topic, count in self._consumed.items():
            self._metrics.inc("kafka_operations_total", count, operation="consume", topic=topic, status="success")


def _window_end(raw: RawRecord, maximum_age_s: int, now: float) -> float:
    """When the event's retry window ends: `maximum_age_s` after it entered the bus (its record's time)."""
    born = raw.timestamp_ms / 1000 if raw.timestamp_ms else now
    return min(born, now) + maximum_age_s


def _failures(batch: Sequence[_Record]) -> list[dict[str, Any]]:
    """The unsettled records, and every record behind one in its partition (the mapping keeps the order)."""
    failures: list[dict[str, Any]] = []
    blocked: set[str] = set()
    for item in batch:
        partition, offset = item.position
        if item.unsettled or partition in blocked:
            blocked.add(partition)
            failures.append({"itemIdentifier": {"partition": partition, "offset": offset}})
    return failures


def _position(record: Mapping[str, Any]) -> tuple[str, int]:
    offset = record.get("offset")
    return f"{record.get('topic')}-{record.get('partition')}", offset if isinstance(offset, int) else -1


def _records(event: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    batches = event.get("records")
    if not isinstance(batches, Mapping):
        return []
    return [
        record
        for batch in batches.values()
        if isinstance(batch, list)
        for record in batch
        if isinstance(record, Mapping)
    ]
