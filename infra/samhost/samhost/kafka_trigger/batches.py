"""The pure parts of the Kafka trigger: records as the event carries them, the partial batch response, which
offsets to commit and where to rewind, retry counts, and the on-failure destination's invocation record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from samhost.kafka_events import lambda_event, lambda_record

EVENT_SOURCE: Final = "SelfManagedKafka"
# Lambda's limit on a synchronous invocation's request payload; a batch stops growing before it
MAX_PAYLOAD_BYTES: Final = 6 * 1024 * 1024
RETRY_ATTEMPTS_EXHAUSTED: Final = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED: Final = "RecordAgeExceeded"


class Partition(NamedTuple):
    topic: str
    partition: int

    def __str__(self) -> str:  # the event's key for the partition's records
        return f"{self.topic}-{self.partition}"


class Position(NamedTuple):
    topic: str
    partition: int
    offset: int

    @property
    def of(self) -> Partition:
        return Partition(self.topic, self.partition)


@dataclass(frozen=True, eq=False)
class Record:
    """One Kafka record as the event carries it (samhost.kafka_events.lambda_record), and what the trigger needs
    to know about it."""

    position: Position
    timestamp_ms: int | None  # None when the broker gave no timestamp
    event_record: Mapping[str, Any]
    size: int  # bytes the record takes in the event's JSON

    @classmethod
    def from_message(cls, message: Message) -> Record:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("a Kafka message without topic, partition or offset")
        timestamp_type, timestamp = message.timestamp()
        event_record = lambda_record(message)
        return cls(
            position=Position(topic, partition, offset),
            timestamp_ms=None if timestamp_type == TIMESTAMP_NOT_AVAILABLE else timestamp,
            event_record=event_record,
            size=len(json.dumps(event_record, separators=(",", ":"))),
        )

    def age_s(self, now_ms: int) -> float | None:
        return None if self.timestamp_ms is None else (now_ms - self.timestamp_ms) / 1000


def event_for(records: Iterable[Record], bootstrap_servers: str) -> dict[str, Any]:
    """The invocation's event, as a self-managed Kafka event source mapping builds it."""
    return lambda_event(
        (dict(record.event_record) for record in records), source=EVENT_SOURCE, bootstrap=bootstrap_servers
    )


def spans(records: Iterable[Record]) -> str:
    """ "orders-0@4..7,orders-1@2" (each partition's first and last offset), for log lines."""
    ranges: dict[Partition, list[int]] = {}
    for record in records:
        ranges.setdefault(record.position.of, []).append(record.position.offset)
    return ",".join(
        f"{partition}@{min(offsets)}" + (f"..{max(offsets)}" if len(offsets) > 1 else "")
        for partition, offsets in sorted(ranges.items())
    )


# the partial batch response


@dataclass(frozen=True)
class ItemFailures:
    """The records a partial batch response names; `invalid` says why a response counts as a whole failure."""

    positions: frozenset[Position] = frozenset()
    invalid: str | None = None


def item_failures(response: object, records: Sequence[Record]) -> ItemFailures:
    """Read `{"batchItemFailures": [{"itemIdentifier": {"partition": "<topic>-<n>", "offset": n}}]}` (AWS's
    documented Kafka form, which Powertools' BatchProcessor writes). A response that is not an object, or without
    the key, or with an empty or null list, is a success. An identifier that is malformed or names a record not in
    the batch makes the whole batch fail, as Lambda treats it."""
    every = frozenset(record.position for record in records)
    if not isinstance(response, dict) or response.get("batchItemFailures") is None:
        return ItemFailures()
    failures = response["batchItemFailures"]
    if not isinstance(failures, list):
        return ItemFailures(every, f"batchItemFailures is not a list: {failures!r}")
    by_key = {(str(record.position.of), record.position.offset): record.position for record in records}
    found: set[Position] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        key = _identifier_key(identifier)
        if key is None or key not in by_key:
            return ItemFailures(every, f"itemIdentifier {identifier!r} names no record of the batch")
        found.add(by_key[key])
    return ItemFailures(frozenset(found))


def _identifier_key(identifier: object) -> tuple[str, int] | None:
    if not isinstance(identifier, dict):
        return None
    partition, offset = identifier.get("partition"), identifier.get("offset")
    if not isinstance(partition, str) or isinstance(offset, bool):
        return None
    try:
        return partition, int(offset)  # type: ignore[arg-type]  # int() refuses what is not a number
    except (TypeError, ValueError):
        return None


def split_at_failures(records: Sequence[Record], failed: frozenset[Position]) -> tuple[list[Record], list[Record]]:
    """(done, to redeliver): per partition, the records before its first failed one are done; the failed one and
    every later record of its partition are delivered again, so that a partition's order holds."""
    first_failed: dict[Partition, int] = {}
    for position in failed:
        first_failed[position.of] = min(position.offset, first_failed.get(position.of, position.offset))
    done: list[Record] = []
    again: list[Record] = []
    for record in records:
        limit = first_failed.get(record.position.of)
        (again if limit is not None and record.position.offset >= limit else done).append(record)
    return done, again


def halves(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    middle = (len(records) + 1) // 2
    return list(records[:middle]), list(records[middle:])


# offsets


@dataclass(frozen=True)
class Settlement:
    """After a batch: the offsets to commit (the next record to read, per partition) and where to rewind the
    partitions whose records were not all done, so that they are read again from their first undone record."""

    commits: Mapping[Partition, int]
    rewinds: Mapping[Partition, int]


def settle(records: Iterable[Record], done: Iterable[Position]) -> Settlement:
    finished = set(done)
    by_partition: dict[Partition, list[int]] = {}
    for record in records:
        by_partition.setdefault(record.position.of, []).append(record.position.offset)
    commits: dict[Partition, int] = {}
    rewinds: dict[Partition, int] = {}
    for partition, offsets in by_partition.items():
        next_offset: int | None = None
        for offset in sorted(offsets):
            if Position(*partition, offset) not in finished:
                rewinds[partition] = offset
                break
            next_offset = offset + 1
        if next_offset is not None:
            commits[partition] = next_offset
    return Settlement(commits, rewinds)


# retries


@dataclass(frozen=True)
class ResponseContext:
    """What the last failed invocation answered (the invocation record's responseContext)."""

    status_code: int | None = None
    executed_version: str | None = None
    function_error: str | None = None
    request_id: str | None = None


@dataclass
class Attempts:
    """Failed invocations per record, kept until the record is committed; the last answer is kept for the
    invocation record."""

    counts: dict[Position, int] = field(default_factory=dict)
    last: dict[Position, ResponseContext] = field(default_factory=dict)

    def failed(self, records: Iterable[Record], response: ResponseContext) -> None:
        for record in records:
            self.counts[record.position] = self.counts.get(record.position, 0) + 1
            self.last[record.position] = response

    def count(self, record: Record) -> int:
        return self.counts.get(record.position, 0)

    def forget(self, positions: Iterable[Position]) -> None:
        for position in positions:
            self.counts.pop(position, None)
            self.last.pop(position, None)

    def forget_committed(self, commits: Mapping[Partition, int]) -> None:
        self.forget(
            [position for position in self.counts if position.offset < commits.get(position.of, position.offset)]
        )


# the on-failure destination


def invocation_record(
    records: Sequence[Record],
    *,
    condition: str,
    function_arn: str,
    bootstrap_servers: str,
    invoke_count: int,
    response: ResponseContext,
    now: float | None = None,
) -> dict[str, Any]:
    """The on-failure destination's message, modelled on AWS's for Kafka mappings (requestContext,
    responseContext, version, timestamp, KafkaBatchInfo) plus `payload`: the event with the records themselves."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    by_partition: dict[str, list[Record]] = {}
    for record in records:
        by_partition.setdefault(str(record.position.of), []).append(record)
    records_info = {
        key: {
            "firstRecordOffset": str(group[0].position.offset),
            "lastRecordOffset": str(group[-1].position.offset),
            "firstRecordTimestamp": _iso(group[0].timestamp_ms),
            "lastRecordTimestamp": _iso(group[-1].timestamp_ms),
        }
        for key, group in by_partition.items()
    }
    return {
        "requestContext": {
            "requestId": response.request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": {
            "statusCode": response.status_code,
            "executedVersion": response.executed_version,
            "functionError": response.function_error,
        },
        "version": "1.0",
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "KafkaBatchInfo": {
            "batchSize": len(records),
            "eventSource": EVENT_SOURCE,
            "bootstrapServers": bootstrap_servers,
            "payloadSize": sum(record.size for record in records),
            "recordsInfo": records_info,
        },
        "payload": event_for(records, bootstrap_servers),
    }


@dataclass(frozen=True)
class DeadLetter:
    """Records the trigger gives up on, with what the invocation record says about them."""

    records: tuple[Record, ...]
    condition: str  # RetryAttemptsExhausted or RecordAgeExceeded
    function_arn: str
    bootstrap_servers: str
    invoke_count: int
    response: ResponseContext
    timestamp: float = field(default_factory=time.time)

    def invocation_record(self, records: Sequence[Record] | None = None) -> dict[str, Any]:
        return invocation_record(
            self.records if records is None else records,
            condition=self.condition,
            function_arn=self.function_arn,
            bootstrap_servers=self.bootstrap_servers,
            invoke_count=self.invoke_count,
            response=self.response,
            now=self.timestamp,
        )

    def bodies(self, max_bytes: int) -> list[str]:
        """The invocation record as messages of at most `max_bytes` (see message_bodies)."""
        return message_bodies(self.records, max_bytes, self.invocation_record)


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_bodies(
    records: Sequence[Record], max_bytes: int, build: Callable[[Sequence[Record]], Mapping[str, Any]]
) -> list[str]:
    """The invocation record as queue messages of at most `max_bytes`: one when it fits, else one per record; a
    record too large even alone keeps its position and headers but not its key and value (`truncated: true`; the
    record stays in Kafka until retention)."""
    whole = _json(build(records))
    if len(whole.encode()) <= max_bytes:
        return [whole]
    bodies = []
    for record in records:
        body = _json(build([record]))
        if len(body.encode()) > max_bytes:
            stripped = {key: value for key, value in record.event_record.items() if key not in ("key", "value")}
            lean = Record(record.position, record.timestamp_ms, {**stripped, "truncated": True}, record.size)
            body = _json(build([lean]))
        bodies.append(body)
    return bodies


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
