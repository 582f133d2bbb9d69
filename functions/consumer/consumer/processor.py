"""One batch from the Kafka event source mapping: every record ends delivered, reported for retry, or
dead-lettered, never dropped silently.

- A record that cannot decode (poison) goes to the DLQ with its reason and is not retried.
- Each matching subscription gets the event once (idempotency key: subscription + source + id).
- A transient delivery failure reports the record in `batchItemFailures` ({"partition": "<topic>-<n>",
  "offset": n}), and the rest of its partition in this batch too, so that the partition's order holds: the
  mapping redelivers them, and subscriptions that already got them are skipped. After MAX_DELIVERY_ATTEMPTS
  the record goes to the DLQ for that subscription, so one bad target never blocks a partition for good.
- A permanent failure (the target refused the event) goes to the DLQ at once.
- A delivery whose idempotency claim is not granted (another delivery holds it, or the store does not answer)
  is deferred with a log line and retried; a store that still fails after MAX_DELIVERY_ATTEMPTS sends the
  record to the DLQ for that subscription with the reason.
- The mapping gives up on a record it delivered MaximumRetryAttempts + 1 times, and its on-failure letter says
  nothing of why. The consumer counts how often it reported each record for retry (in this execution
  environment); on the invocation that is the record's last (EVENT_SOURCE_MAX_RETRY_ATTEMPTS reached), it
  settles the record itself: delivered where its targets take it, dead-lettered with the reason where they do
  not, even when an earlier record of its partition failed (that one is settled by then: it was reported more
  often).
- When the DLQ itself cannot be written, the record is reported for retry: it is never lost.

Powertools' BatchProcessor (EventType.Kafka) walks the records in order and builds the partial response.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from cloudevents.core.base import BaseCloudEvent
from eventbus.idempotency import Claim, ClaimState, Idempotency
from observability import Telemetry
from observability.types import LambdaContext
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from consumer.dead_letters import DeadLetter, DeadLetterQueue
from consumer.decoding import PoisonRecordError, RawRecord, read_record, to_cloud_event
from consumer.errors import ConsumerError
from consumer.settings import ConsumerSettings
from consumer.subscriptions import Subscription, matching
from consumer.targets import Deliverer, DeliveryError

DELIVERED, DUPLICATE, RETRY, DEAD_LETTERED = "delivered", "duplicate", "retry", "dead_lettered"
MAX_TRACKED_ATTEMPTS = 10_000
RESPONSE_RESERVE_S = 0.5


class RetryRecordError(ConsumerError):
    """Marks a record for the partial batch response (the mapping delivers it again)."""


@dataclass
class BatchContext:
    deadline: float  # time.monotonic() by which record processing must stop
    blocked: set[str]  # partitions with an earlier failure in this batch
    out_of_time: bool = False
    last_chance: set[tuple[str, int]] = field(default_factory=set)  # records the mapping will not retry again

    def time_left_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def is_last_chance(self, raw: RawRecord) -> bool:
        """The mapping will not deliver this record again: settle it now."""
        return (raw.partition_id, raw.offset) in self.last_chance


class Processor:
    def __init__(
        self,
        settings: ConsumerSettings,
        telemetry: Telemetry,
        *,
        deliverer: Deliverer,
        dead_letters: DeadLetterQueue,
        idempotency: Idempotency,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._deliverer = deliverer
        self._dead_letters = dead_letters
        self._idempotency = idempotency
        # delivery attempts per (partition, offset, subscription) in this execution environment; the mapping's
        # MaximumRetryAttempts and MaximumRecordAgeInSeconds bound retries across environments
        self._attempts: OrderedDict[tuple[str, int, str], int] = OrderedDict()
        # how often this environment reported each (partition, offset) for retry: the mapping's count of it
        self._reported: OrderedDict[tuple[str, int], int] = OrderedDict()

    def handle(self, event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        records = _records(event)
        if not records:  # nothing to do (Powertools' processor refuses an empty batch)
            return {"batchItemFailures": []}
        producer_contexts = [self.telemetry.context_from_kafka_headers(record.get("headers")) for record in records]
        topics = sorted({str(record.get("topic")) for record in records})
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "consume",
            "messaging.batch.message_count": len(records),
            "messaging.destination.name": topics[0] if len(topics) == 1 else ",".join(topics),
        }
        time_left = context.get_remaining_time_in_millis() / 1000 if context is not None else 60.0
        # stop starting records while one more slow delivery and the telemetry flush still fit
        reserve = self.settings.webhook_timeout_s + self.telemetry.settings.flush_timeout_s + RESPONSE_RESERVE_S
        batch = BatchContext(
            deadline=time.monotonic() + time_left - reserve, blocked=set(), last_chance=self._last_chances(records)
        )
        contexts_by_record = {id(record): ctx for record, ctx in zip(records, producer_contexts, strict=True)}
        with self.telemetry.span(
            f"process {attributes['messaging.destination.name']!s}",
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=self.telemetry.links(producer_contexts),
        ):

            def record_handler(record: KafkaEventRecord) -> None:
                raw = record.raw_event
                self._process(raw, contexts_by_record.get(id(raw), Context()), batch)

            processor = BatchProcessor(event_type=EventType.Kafka, raise_on_entire_batch_failure=False)
            response = dict(
                process_partial_response(event=dict(event), record_handler=record_handler, processor=processor)
            )
        self._remember_reported(records, response)
        return response

    def _last_chances(self, records: Sequence[Mapping[str, Any]]) -> set[tuple[str, int]]:
        limit = self.settings.mapping_retry_attempts
        if limit is None:
            return set()
        return {position for position in map(_position, records) if self._reported.get(position, 0) >= limit}

    def _remember_reported(self, records: Sequence[Mapping[str, Any]], response: Mapping[str, Any]) -> None:
        failed = {
            (str(failure["itemIdentifier"]["partition"]), int(failure["itemIdentifier"]["offset"]))
            for failure in response.get("batchItemFailures", [])
        }
        for position in map(_position, records):
            if position in failed:
                self._reported[position] = self._reported.get(position, 0) + 1
                self._reported.move_to_end(position)
            else:
                self._reported.pop(position, None)
        while len(self._reported) > MAX_TRACKED_ATTEMPTS:
            self._reported.popitem(last=False)

    # one record

    def _process(self, record: Mapping[str, Any], producer_context: Context, batch: BatchContext) -> None:
        partition_id = f"{record.get('topic')}-{record.get('partition')}"
        if partition_id in batch.blocked and _position(record) not in batch.last_chance:
            raise RetryRecordError(f"an earlier record of {partition_id} is being retried; order is kept")
        if batch.out_of_time or batch.time_left_s() <= 0:
            batch.out_of_time = True  # the rest of the batch comes back in the next invocation
            if _position(record) in batch.last_chance:  # ... except for a record the mapping retries no more
                self._give_up_unattempted(record, batch)
                return
            raise RetryRecordError("not enough time left in this invocation")
        try:
            raw = read_record(record)
            event = to_cloud_event(
                raw, max_bytes=self.settings.max_record_bytes, plain_event_type=self.settings.default_event_type
            )
        except PoisonRecordError as poison:
            self._poison(record, poison, batch)
            return
        self._measure(raw)
        if event is None:
            return  # a tombstone: nothing to deliver
        try:
            outcomes = self._deliver_all(raw, event, producer_context, batch)
        except Exception as error:  # a bug or an unforeseen failure: keep the record, and its partition's order
            batch.blocked.add(raw.partition_id)
            raise RetryRecordError(f"processing {event.get_id()} failed: {type(error).__name__}") from error
        if RETRY in outcomes:
            batch.blocked.add(raw.partition_id)
            raise RetryRecordError(f"delivery of {event.get_id()} will be retried")

    def _give_up_unattempted(self, record: Mapping[str, Any], batch: BatchContext) -> None:
        """A record on its last invocation with no time left to deliver it: dead-lettered with the reason for each
        subscription that has not had it, rather than left to the mapping's on-failure destination."""
        try:
            raw = read_record(record)
            event = to_cloud_event(
                raw, max_bytes=self.settings.max_record_bytes, plain_event_type=self.settings.default_event_type
            )
        except PoisonRecordError as poison:
            self._poison(record, poison, batch)
            return
        if event is None:
            return
        reason_of = "delivery to {} not attempted: the invocation ran out of time on the record's last retry"
        for subscription in matching(self.settings.subscriptions, event):
            key = _delivery_key(subscription, event)
            if self._idempotency.claim(key, 1000).state is ClaimState.DUPLICATE:
                continue
            reason = reason_of.format(subscription.name)
            if not self._dead_letter_delivery(subscription, raw, event, reason):
                self._idempotency.release(key, reason)
                raise RetryRecordError("the record could not be dead-lettered; kept for a retry")
            self._idempotency.complete(key, {"dead_lettered_at": time.time(), "reason": reason})
            self._count(subscription, DEAD_LETTERED, 0.0)

    def _poison(self, record: Mapping[str, Any], poison: PoisonRecordError, batch: BatchContext) -> None:
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
        if not self._dead_letter(DeadLetter.of(raw, f"poison record: {poison.reason}", event_id)):
            batch.blocked.add(f"{record.get('topic')}-{record.get('partition')}")
            raise RetryRecordError("the poison record could not be dead-lettered; kept for a retry") from poison

    def _measure(self, raw: RawRecord) -> None:
        metrics = self.telemetry.metrics
        metrics.inc("kafka_operations_total", operation="consume", topic=raw.topic, status="success")
        metrics.observe("kafka_message_size_bytes", raw.size, operation="consume", topic=raw.topic)
        if raw.timestamp_ms is not None:
            metrics.observe(
                "kafka_consumer_lag_seconds", max(0.0, time.time() - raw.timestamp_ms / 1000), topic=raw.topic
            )

    def _deliver_all(
        self, raw: RawRecord, event: BaseCloudEvent, producer_context: Context, batch: BatchContext
    ) -> list[str]:
        outcomes: list[str] = []
        with self.telemetry.event_processing(
            event.get_type(), event.get_source(), kind=SpanKind.CONSUMER, context=producer_context
        ) as processing:
            processing.set_attribute("messaging.system", "kafka")
            processing.set_attribute("messaging.destination.name", raw.topic)
            processing.set_attribute("messaging.destination.partition.id", str(raw.partition))
            processing.set_attribute("messaging.kafka.offset", raw.offset)
            processing.set_attribute("messaging.message.id", event.get_id())
            outcomes.extend(
                self._deliver(subscription, raw, event, batch)
                for subscription in matching(self.settings.subscriptions, event)
            )
            labels = {"event_type": event.get_type(), "topic": raw.topic, "source": event.get_source()}
            if outcomes and all(outcome == DUPLICATE for outcome in outcomes):
                # every delivery was done before: the mapping delivered the record again (a retry of its batch)
                self.telemetry.metrics.inc("events_redelivered_total", 1.0, **labels)
            elif RETRY not in outcomes:  # settled: counted once, when its last delivery is done
                self.telemetry.metrics.inc("events_consumed_total", 1.0, **labels)
        return outcomes

    def _deliver(self, subscription: Subscription, raw: RawRecord, event: BaseCloudEvent, batch: BatchContext) -> str:
        key = _delivery_key(subscription, event)
        # held while this invocation may still deliver it
        claim = self._idempotency.claim(key, int((batch.time_left_s() + self.settings.webhook_timeout_s) * 1000) + 1000)
        if claim.state is ClaimState.DUPLICATE:
            self._count(subscription, DUPLICATE, 0.0)
            return DUPLICATE
        if claim.state is not ClaimState.NEW:  # being delivered elsewhere, or the store is down: later
            outcome = self._deferred(subscription, raw, event, claim, batch)
            self._count(subscription, outcome, 0.0)
            return outcome
        started = time.perf_counter()
        with self.telemetry.span(
            f"deliver {subscription.name}",
            kind=SpanKind.PRODUCER if subscription.target.type in ("kafka", "sqs", "sns") else SpanKind.CLIENT,
            attributes={"eventbus.subscription": subscription.name, "eventbus.target.type": subscription.target.type},
        ) as span:
            try:
                self._deliverer.deliver(subscription, event, self.telemetry.http_headers())
            except Exception as error:
                failure = error if isinstance(error, DeliveryError) else _unexpected(error)
                span.set_status(Status(StatusCode.ERROR, failure.reason[:256]))
                outcome = self._after_failure(subscription, raw, event, failure, batch)
                if outcome == DEAD_LETTERED:  # settled: a redelivery must not send it, or dead-letter it, again
                    self._idempotency.complete(key, {"dead_lettered_at": time.time(), "reason": failure.reason})
                else:
                    self._idempotency.release(key, failure.reason)
                self._count(subscription, outcome, time.perf_counter() - started)
                return outcome
        self._idempotency.complete(key, {"delivered_at": time.time()})
        self._count(subscription, DELIVERED, time.perf_counter() - started)
        return DELIVERED

    def _deferred(
        self, subscription: Subscription, raw: RawRecord, event: BaseCloudEvent, claim: Claim, batch: BatchContext
    ) -> str:
        """The claim was not granted: say so, and retry. Another delivery's claim is waited out (it expires with
        its invocation); a store that keeps failing ends, after MAX_DELIVERY_ATTEMPTS, in the DLQ with why."""
        attempts = self._attempt(raw, subscription)
        detail = claim.detail or claim.state.value
        self.telemetry.logger.warning(
            "delivery of %s to %s deferred (attempt %d of %d): %s",
            event.get_id(),
            subscription.name,
            attempts,
            self.settings.max_delivery_attempts,
            detail,
            extra={"fields": {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset}},
        )
        last_chance = batch.is_last_chance(raw)
        exhausted = claim.state is ClaimState.UNAVAILABLE and attempts >= self.settings.max_delivery_attempts
        if not (exhausted or last_chance):
            return RETRY
        reason = f"delivery to {subscription.name} deferred {attempts} times: {detail}"
        if not self._dead_letter_delivery(subscription, raw, event, reason):
            return RETRY
        if claim.state is ClaimState.IN_PROGRESS:  # the store answers: settled, a redelivery must not deliver it too
            key = _delivery_key(subscription, event)
            self._idempotency.complete(key, {"dead_lettered_at": time.time(), "reason": reason})
        return DEAD_LETTERED

    def _after_failure(
        self,
        subscription: Subscription,
        raw: RawRecord,
        event: BaseCloudEvent,
        failure: DeliveryError,
        batch: BatchContext,
    ) -> str:
        attempts = self._attempt(raw, subscription)
        context = {
            "event_type": event.get_type(),
            "source": event.get_source(),
            "event_id": event.get_id(),
            "subscription": subscription.name,
            "topic": raw.topic,
            "partition": raw.partition,
            "offset": raw.offset,
            "attempt": attempts,
            "transient": failure.transient,
        }
        event_id = self.telemetry.capture_error(failure, "consumer", f"deliver {subscription.name}", context)
        last_chance = batch.is_last_chance(raw)
        if failure.transient and attempts < self.settings.max_delivery_attempts and not last_chance:
            return RETRY
        why = "refused" if not failure.transient else f"failed {attempts} times"
        if failure.transient and last_chance and attempts < self.settings.max_delivery_attempts:
            why += " (the event source mapping retries the record no more)"
        reason = f"delivery to {subscription.name} {why}: {failure.reason}"
        return DEAD_LETTERED if self._dead_letter_delivery(subscription, raw, event, reason, event_id) else RETRY

    def _dead_letter_delivery(
        self,
        subscription: Subscription,
        raw: RawRecord,
        event: BaseCloudEvent,
        reason: str,
        error_event_id: str | None = None,
    ) -> bool:
        """One subscription's dead letter for an event, with `reason`; the failure is captured first unless it
        was (`error_event_id`). True when the letter is stored."""
        if error_event_id is None:
            context = {"event_type": event.get_type(), "source": event.get_source(), "event_id": event.get_id()}
            error_event_id = self.telemetry.capture_error(
                DeliveryError(reason, transient=True), "consumer", f"deliver {subscription.name}", context
            )
        letter = DeadLetter.of(
            raw,
            reason,
            error_event_id,
            subscription=subscription.name,
            event={"id": event.get_id(), "type": event.get_type(), "source": event.get_source()},
        )
        return self._dead_letter(letter)

    def _dead_letter(self, letter: DeadLetter) -> bool:
        try:
            self._dead_letters.send(letter)
        except Exception as error:
            self.telemetry.capture_error(
                error, "consumer", "dead-letter", {"topic": letter.topic, "offset": letter.offset}
            )
            return False
        return True

    def _attempt(self, raw: RawRecord, subscription: Subscription) -> int:
        key = (raw.partition_id, raw.offset, subscription.name)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        self._attempts.move_to_end(key)
        while len(self._attempts) > MAX_TRACKED_ATTEMPTS:
            self._attempts.popitem(last=False)
        return self._attempts[key]

    def _count(self, subscription: Subscription, outcome: str, seconds: float) -> None:
        labels = {"subscription": subscription.name, "target_type": subscription.target.type}
        self.telemetry.metrics.inc("deliveries_total", 1.0, outcome=outcome, **labels)
        if outcome not in (DUPLICATE,):
            self.telemetry.metrics.observe("delivery_duration_seconds", seconds, **labels)


def _delivery_key(subscription: Subscription, event: BaseCloudEvent) -> dict[str, str]:
    """The idempotency key of one event's delivery to one subscription."""
    return {"subscription": subscription.name, "source": event.get_source(), "id": event.get_id()}


def _position(record: Mapping[str, Any]) -> tuple[str, int]:
    """(`<topic>-<partition>`, offset): how the partial batch response names a record."""
    offset = record.get("offset")
    return f"{record.get('topic')}-{record.get('partition')}", offset if isinstance(offset, int) else -1


def _unexpected(error: Exception) -> DeliveryError:
    """An exception no target documents (a bug, a library surprise): assume a retry may help."""
    return DeliveryError(f"unexpected {type(error).__name__}: {error}", transient=True)


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
