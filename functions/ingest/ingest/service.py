"""Accepting events: route, check, claim (idempotency), produce, and say per event what happened.

No event is reported accepted that the broker did not acknowledge. A batch is checked whole before
anything is produced; once produced, each event's outcome is its own, so a client can retry exactly the
events that were not accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from lambda_event_bus.bus.contract import partition_key, to_kafka_record
from lambda_event_bus.bus.idempotency import Claim, ClaimState, Idempotency
from lambda_event_bus.bus.producer import DELIVERED, NOT_SENT, UNKNOWN, Delivery, EventProducer
from lambda_event_bus.bus.records import KafkaRecord

from ingest.errors import ConflictError, UnavailableError
from ingest.routing import TopicRouter
from ingest.settings import IngestSettings
from ingest.validation import SchemaRegistry, check_batch, ensure_unique_ids

ACCEPTED, DUPLICATE, FAILED, IN_PROGRESS, UNKNOWN_STATUS = "accepted", "duplicate", "failed", "in_progress", "unknown"
NO_TIME_LEFT = "not produced: the invocation had no time left"
BROKER_FAILED = "not produced: the broker did not take the event in time"
OUTCOME_UNKNOWN = "the broker may have the event: it was in flight when the wait ended"
MAX_PARALLEL_CALLS = 8


@dataclass(frozen=True)
class EventResult:
    id: str
    source: str
    type: str
    status: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        producer: Callable[[], EventProducer],
        idempotency: Idempotency,
        schemas: SchemaRegistry,
    ) -> None:
        self.settings = settings
        self.router = TopicRouter(settings.routes, settings.default_topic)
        self._producer = producer
        self._idempotency = idempotency
        self._schemas = schemas

    def records_for(self, events: Sequence[BaseCloudEvent], topic: str | None = None) -> list[KafkaRecord]:
        return [
            to_kafka_record(event, topic or self.router.topic_for(event.get_type()), partition_key(event))
            for event in events
        ]

    def accept(
        self, events: Sequence[BaseCloudEvent], time_left_s: float, *, topic: str | None = None
    ) -> list[EventResult]:
        """Produce the events within `time_left_s`; one result per event when all were accepted (or duplicates).

        Raises UnavailableError (503) when any event was not produced, or its fate is unknown, in time;
        ConflictError (409) when another request is producing one of them; both carry the per-event results.
        """
        deadline = time.monotonic() + time_left_s
        ensure_unique_ids(events)
        records = self.records_for(events, topic)
        check_batch(events, records, self._schemas, self.settings.max_event_bytes)
        claims = self._claim_all(events, deadline)
        fresh = [index for index, claim in enumerate(claims) if claim.state is ClaimState.NEW]
        wait = min(deadline - time.monotonic(), self.settings.produce_timeout_s)
        deliveries = (
            self._producer().send([records[index] for index in fresh], timeout_s=max(0.0, wait)) if fresh else []
        )
        delivered = dict(zip(fresh, deliveries, strict=True))
        _each(self._settle, [(events[index], delivery) for index, delivery in delivered.items()])
        results = [
            self._result_of(event, record, claim, delivered.get(index))
            for index, (event, record, claim) in enumerate(zip(events, records, claims, strict=True))
        ]
        self._raise_unless_all_accepted(results, claims)
        return results

    def _claim_all(self, events: Sequence[BaseCloudEvent], deadline: float) -> list[Claim]:
        # an unknown outcome may still be acknowledged up to the producer's delivery timeout after the wait:
        # the claim outlives that, so a retry in between answers 409 instead of producing a second copy
        hold_ms = int((deadline - time.monotonic() + self.settings.produce_timeout_s) * 1000)

        def claim(event: BaseCloudEvent) -> Claim:
            if time.monotonic() >= deadline:
                return Claim(ClaimState.UNAVAILABLE, detail=NO_TIME_LEFT)
            return self._idempotency.claim(_key(event), hold_ms)

        return _each(claim, list(events))

    def _settle(self, item: tuple[BaseCloudEvent, Delivery]) -> None:
        event, delivery = item
        if delivery.outcome == DELIVERED:
            position = {"topic": delivery.record.topic, "partition": delivery.partition, "offset": delivery.offset}
            self._idempotency.complete(_key(event), position)
        elif delivery.outcome == NOT_SENT:
            self._idempotency.release(_key(event), delivery.error or "not sent")
        # UNKNOWN: the claim stays until it expires, so that a retry cannot produce a second copy meanwhile

    @staticmethod
    def _result_of(event: BaseCloudEvent, record: KafkaRecord, claim: Claim, delivery: Delivery | None) -> EventResult:
        if claim.state is ClaimState.DUPLICATE:
            previous = claim.previous or {}
            return _result(
                event,
                DUPLICATE,
                topic=previous.get("topic"),
                partition=previous.get("partition"),
                offset=previous.get("offset"),
            )
        if claim.state is ClaimState.IN_PROGRESS:
            return _result(event, IN_PROGRESS, detail=claim.detail)
        if claim.state is ClaimState.UNAVAILABLE or delivery is None:
            return _result(event, FAILED, detail=claim.detail or NO_TIME_LEFT)
        if delivery.outcome == DELIVERED:
            return _result(event, ACCEPTED, topic=record.topic, partition=delivery.partition, offset=delivery.offset)
        if delivery.outcome == UNKNOWN:
            return _result(event, UNKNOWN_STATUS, topic=record.topic, detail=OUTCOME_UNKNOWN)
        return _result(event, FAILED, topic=record.topic, detail=BROKER_FAILED)

    @staticmethod
    def _raise_unless_all_accepted(results: list[EventResult], claims: list[Claim]) -> None:
        failed = [result for result in results if result.status == FAILED]
        unknown = [result for result in results if result.status == UNKNOWN_STATUS]
        in_progress = [result for result in results if result.status == IN_PROGRESS]
        in_progress_claims = [claim for claim in claims if claim.state is ClaimState.IN_PROGRESS]
        payload = [result.as_dict() for result in results]
        if failed or unknown:
            parts = []
            if failed:
                parts.append(f"{len(failed)} not produced")
            if unknown:
                parts.append(f"{len(unknown)} possibly on the broker (retrying them with the same ids is safe)")
            raise UnavailableError(
                f"{len(failed) + len(unknown)} of {len(results)} events were not accepted in time "
                f"({'; '.join(parts)}); retry exactly those after Retry-After",
                retry_after_s=2,
                results=payload,
            )
        if in_progress:
            raise ConflictError(
                f"{len(in_progress)} of {len(results)} events are being produced by another request; "
                "retry them after Retry-After",
                retry_after_s=max((claim.retry_after_s or 1 for claim in in_progress_claims), default=1),
                errors=payload,
            )


def _result(
    event: BaseCloudEvent,
    status: str,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    detail: str | None = None,
) -> EventResult:
    return EventResult(
        id=event.get_id(),
        source=event.get_source(),
        type=event.get_type(),
        status=status,
        topic=topic,
        partition=partition,
        offset=offset,
        detail=detail,
    )


def _each[T, U](function: Callable[[T], U], items: list[T]) -> list[U]:
    """`function` over `items` in order; concurrently when there are several (DynamoDB round trips)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CALLS, len(items))) as pool:
        return list(pool.map(function, items))


def _key(event: BaseCloudEvent) -> dict[str, str]:
    return {"source": event.get_source(), "id": event.get_id()}
