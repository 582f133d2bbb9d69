"""Kafka record (as the event source mapping delivers it) -> CloudEvent, or a poison verdict with its reason.

A record is a CloudEvent in Kafka binary mode (`ce_*` headers, the value as data), in structured mode (a JSON
value with `specversion`, or `content-type: application/cloudevents+json`), or plain JSON, which is wrapped in
a CloudEvent (type PLAIN_EVENT_TYPE, source `kafka://<topic>`, id `<topic>-<partition>-<offset>`). A tombstone
(no value, no `ce_*` headers) carries no event. `application/cloudevents-batch+json` is not a Kafka record
format. Anything else is poison: it will never decode, so retrying it
would only block its partition.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from lambda_event_bus.bus.contract import ContractError, UnsupportedFormatError, make_event, read_kafka

from consumer.errors import ConsumerError


class PoisonRecordError(ConsumerError):
    """The record cannot become a CloudEvent; `reason` says why (it goes to the DLQ with the record)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RawRecord:
    """A record's bytes, decoded from the event source mapping's JSON (base64 key and value, headers as lists
    of byte values)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def partition_id(self) -> str:
        """How the partial batch response names the partition: `<topic>-<partition>`."""
        return f"{self.topic}-{self.partition}"

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"") + sum(len(n) + len(v) for n, v in self.headers)

    def header(self, name: str) -> bytes | None:
        matches = [value for header_name, value in self.headers if header_name.lower() == name]
        return matches[-1] if matches else None


def read_record(record: Mapping[str, Any]) -> RawRecord:
    """The raw record; PoisonRecordError when its key, value or headers are not what the mapping sends."""
    topic, partition, offset = record.get("topic"), record.get("partition"), record.get("offset")
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(offset, int):
        raise PoisonRecordError("the record has no topic, partition or offset")
    timestamp = record.get("timestamp")
    return RawRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp if isinstance(timestamp, int) else None,
        key=_base64(record.get("key"), "key"),
        value=_base64(record.get("value"), "value"),
        headers=_headers(record.get("headers")),
    )


def _base64(value: object, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PoisonRecordError(f"the record's {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PoisonRecordError(f"the record's {what} is not valid base64") from None


def _headers(headers: object) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if not isinstance(headers, list):
        raise PoisonRecordError("the record's headers are not a list")
    pairs: list[tuple[str, bytes]] = []
    for item in headers:
        if not isinstance(item, Mapping):
            raise PoisonRecordError("a record header is not an object")
        for name, values in item.items():
            if not isinstance(name, str) or not isinstance(values, list) or not all(_is_byte(v) for v in values):
                raise PoisonRecordError(f"record header {name!r} is not a list of byte values")
            pairs.append((name, bytes(v & 0xFF for v in values)))  # Java's bytes are signed
    return pairs


def _is_byte(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -128 <= value <= 255


def to_cloud_event(raw: RawRecord, *, max_bytes: int, plain_event_type: str) -> BaseCloudEvent | None:
    """The record's CloudEvent as the event contract reads it (`lambda_event_bus.bus.contract.read_kafka`), a plain JSON
    value wrapped in one, None for a tombstone; PoisonRecordError otherwise."""
    if raw.size > max_bytes:
        raise PoisonRecordError(f"the record is {raw.size} bytes; the limit is {max_bytes}")
    try:
        event = read_kafka(raw.headers, raw.value)
    except UnsupportedFormatError as error:
        raise PoisonRecordError(error.reason) from None
    except ContractError as error:
        raise PoisonRecordError(f"invalid CloudEvent: {error.reason}") from None
    if event is not None:
        return event
    if raw.value is None:
        return None
    try:
        document = json.loads(raw.value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PoisonRecordError("the record is neither a CloudEvent nor JSON") from None
    try:
        return make_event(
            {
                "specversion": "1.0",
                "id": f"{raw.topic}-{raw.partition}-{raw.offset}",
                "source": f"kafka://{raw.topic}",
                "type": plain_event_type,
                "datacontenttype": "application/json",
            },
            document,
        )
    except ContractError as error:
        raise PoisonRecordError(f"the plain JSON record cannot be wrapped in a CloudEvent: {error.reason}") from None
