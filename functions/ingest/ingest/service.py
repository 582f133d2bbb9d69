"""Accepting events: route, check, claim (idempotency), produce, and say per event what happened.

No event is reported accepted that the broker did not acknowledge. A batch is checked whole before
anything is produced; once produced, each event's outcome is its own, so a client can retry exactly the
events that were not accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from eventbus.producer import EventProducer
from eventbus.records import KafkaRecord, to_kafka_record

from ingest.errors import ConflictError, UnavailableError
from ingest.idempotency import ClaimState, Idempotency
from ingest.routing import TopicRouter, partition_key
from ingest.settings import IngestSettings
from ingest.validation import SchemaRegistry, check_batch, ensure_unique_ids

ACCEPTED, DUPLICATE, FAILED, IN_PROGRESS = "accepted", "duplicate", "failed", "in_progress"


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
        """Produce the events; returns one result per event when all were accepted (or duplicates).

        Raises UnavailableError (503) when any event could not be produced or claimed in time, and
        ConflictError (409) when another request is producing one of them; both carry the results.
        """
        ensure_unique_ids(events)
        records = self.records_for(events, topic)
        check_batch(events, records, self._schemas, self.settings.max_event_bytes)
        remaining_ms = max(0, int(time_left_s * 1000))
        claims = [self._idempotency.claim(event.get_source(), event.get_id(), remaining_ms) for event in events]
        fresh = [index for index, claim in enumerate(claims) if claim.state is ClaimState.NEW]
        deliveries = (
            self._producer().send(
                [records[index] for index in fresh], timeout_s=min(time_left_s, self.settings.produce_timeout_s)
            )
            if fresh
            else []
        )
        delivered = dict(zip(fresh, deliveries, strict=True))

        results: list[EventResult] = []
        for index, (event, record, claim) in enumerate(zip(events, records, claims, strict=True)):
            if claim.state is ClaimState.DUPLICATE:
                previous = claim.previous or {}
                results.append(
                    _result(
                        event,
                        DUPLICATE,
                        topic=previous.get("topic"),
                        partition=previous.get("partition"),
                        offset=previous.get("offset"),
                    )
                )
            elif claim.state is ClaimState.IN_PROGRESS:
                results.append(_result(event, IN_PROGRESS, detail=claim.detail))
            elif claim.state is ClaimState.UNAVAILABLE:
                results.append(_result(event, FAILED, detail=claim.detail))
            elif (delivery := delivered[index]).ok:
                position = {"topic": record.topic, "partition": delivery.partition, "offset": delivery.offset}
                self._idempotency.complete(event.get_source(), event.get_id(), position)
                results.append(
                    _result(event, ACCEPTED, topic=record.topic, partition=delivery.partition, offset=delivery.offset)
                )
            else:
                self._idempotency.release(event.get_source(), event.get_id(), delivery.error or "not delivered")
                results.append(_result(event, FAILED, topic=record.topic, detail=delivery.error))
        self._raise_unless_all_accepted(results)
        return results

    @staticmethod
    def _raise_unless_all_accepted(results: list[EventResult]) -> None:
        failed = [result for result in results if result.status == FAILED]
        in_progress = [result for result in results if result.status == IN_PROGRESS]
        payload = [result.as_dict() for result in results]
        if failed:
            raise UnavailableError(
                f"{len(failed)} of {len(results)} events were not accepted (the broker did not acknowledge them "
                "in time); retry exactly those",
                retry_after_s=2,
                results=payload,
            )
        if in_progress:
            error = ConflictError(
                f"{len(in_progress)} of {len(results)} events are being produced by another request; retry them later"
            )
            error.errors = payload
            raise error


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
