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
from cloudevents.core.bindings import kafka as kafka_binding
from cloudevents.core.v1.event import CloudEvent
from eventbus.checks import describe, identity_problem
from eventbus.records import EVENT_FORMAT

from consumer.errors import ConsumerError

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


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
    """The record's CloudEvent, None for a tombstone; PoisonRecordError otherwise.

    The mode follows the Kafka protocol binding: a CloudEvents content type means structured mode, else
    any `ce_*` header means binary mode."""
    if raw.size > max_bytes:
        raise PoisonRecordError(f"the record is {raw.size} bytes; the limit is {max_bytes}")
    content_type = (raw.header("content-type") or b"").decode("utf-8", errors="replace").split(";")[0].strip().lower()
    if content_type == BATCH_CONTENT_TYPE:
        raise PoisonRecordError("a CloudEvents batch is not a Kafka record format")
    has_ce_headers = any(name.lower().startswith("ce_") for name, _ in raw.headers)
    if has_ce_headers and content_type != STRUCTURED_CONTENT_TYPE:
        return _checked(_binary(raw))
    if raw.value is None:
        if content_type == STRUCTURED_CONTENT_TYPE:
            raise PoisonRecordError("a structured CloudEvent record has no value")
        return None
    try:
        document = json.loads(raw.value)
    except (ValueError, UnicodeDecodeError):
        reason = "the structured CloudEvent is not JSON" if content_type == STRUCTURED_CONTENT_TYPE else None
        raise PoisonRecordError(reason or "the record is neither a CloudEvent nor JSON") from None
    if content_type == STRUCTURED_CONTENT_TYPE or (isinstance(document, dict) and "specversion" in document):
        return _checked(_structured(document))
    return _checked(
        CloudEvent(
            {
                "specversion": "1.0",
                "id": f"{raw.topic}-{raw.partition}-{raw.offset}",
                "source": f"kafka://{raw.topic}",
                "type": plain_event_type,
                "datacontenttype": "application/json",
            },
            document,
        )
    )


def _binary(raw: RawRecord) -> BaseCloudEvent:
    headers = {name.lower(): value for name, value in raw.headers}
    try:
        headers_text = {name: value.decode("utf-8") for name, value in headers.items()}
    except UnicodeDecodeError:
        raise PoisonRecordError("a ce_* header is not UTF-8") from None
    if "ce_specversion" not in headers_text:
        raise PoisonRecordError("invalid CloudEvent: ce_* headers without ce_specversion")
    if headers_text.get("ce_specversion") != "1.0":
        raise PoisonRecordError(f"specversion must be 1.0, got {headers_text.get('ce_specversion')!r}")
    if "ce_id" not in headers_text:  # the SDK would make one up, and every redelivery would differ
        raise PoisonRecordError("invalid CloudEvent: the ce_id header is missing")
    try:
        message = kafka_binding.KafkaMessage(headers=headers, key=raw.key, value=raw.value or b"")
        parsed = kafka_binding.from_binary(message, EVENT_FORMAT, CloudEvent)
    except Exception as error:
        raise PoisonRecordError(f"invalid CloudEvent: {describe(error)}") from None
    return parsed


def _structured(document: object) -> BaseCloudEvent:
    if not isinstance(document, dict):
        raise PoisonRecordError("a structured CloudEvent must be a JSON object")
    if document.get("specversion") != "1.0":
        raise PoisonRecordError(f"specversion must be 1.0, got {document.get('specversion')!r}")
    if "id" not in document:
        raise PoisonRecordError("invalid CloudEvent: attribute 'id' is missing")
    try:
        return EVENT_FORMAT.read(CloudEvent, json.dumps(document))
    except Exception as error:
        raise PoisonRecordError(f"invalid CloudEvent: {describe(error)}") from None


def _checked(event: BaseCloudEvent) -> BaseCloudEvent:
    problem = identity_problem(event)
    if problem:
        raise PoisonRecordError(f"invalid CloudEvent: {problem}")
    return event
