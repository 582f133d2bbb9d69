"""CloudEvents on Kafka (`kafka-protocol-binding.md`): a record read into an event, an event written as a record.

The bus writes binary mode (`ce_` headers, `content-type`, the data as the value) and reads both modes. The
record key is never read into an attribute: a key mapper must not modify the event (§3.1), and the SDK's
reader would add a `partitionkey` the producer never sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as kafka_binding

from lambda_event_bus.bus.contract.attributes import InvalidEventError, UnsupportedFormatError, canonical
from lambda_event_bus.bus.contract.event import Event, make_event
from lambda_event_bus.bus.contract.http import media_type
from lambda_event_bus.bus.contract.json_format import BATCH, EVENT_FORMAT, STRUCTURED, read_structured
from lambda_event_bus.bus.contract.routing import partition_key
from lambda_event_bus.bus.records import KafkaRecord

Headers = Sequence[tuple[str, bytes]]
IMPLIED_CONTENT_TYPE = "application/json"


def read_kafka(headers: Headers, value: bytes | None) -> Event | None:
    """The record's CloudEvent, or None when the record is not one (no CloudEvents content type, no `ce_`
    header, and a value that is not a JSON object with `specversion`). The mode is decided by `content-type`
    first (§3): `application/cloudevents...` is structured mode, else any `ce_` header binary mode; a structured
    record may also come without the header (§3.3.1 makes it optional)."""
    content_type = _last(headers, "content-type")
    kind = media_type(_text(content_type, "content-type")) if content_type is not None else ""
    if kind.startswith("application/cloudevents"):
        if kind.startswith("application/cloudevents-batch"):
            raise UnsupportedFormatError(f"{BATCH} is not a Kafka record format (a record carries one event)")
        if kind != STRUCTURED:
            raise UnsupportedFormatError(f"{kind} is not an event format this bus reads; send {STRUCTURED}")
        if value is None:
            raise InvalidEventError("a structured CloudEvent record has no value")
        return read_structured(_json(value))
    if any(name.lower().startswith("ce_") for name, _ in headers):
        return _binary(headers, value)
    if value is not None and value.lstrip()[:1] == b"{":
        try:
            document = _json(value)
        except InvalidEventError:
            return None  # not JSON, so not a structured event either
        if isinstance(document, dict) and "specversion" in document:
            return read_structured(document)
    return None


def _binary(headers: Headers, value: bytes | None) -> Event:
    """Binary mode (§3.2): `ce_` headers are the attributes (UTF-8), `content-type` is `datacontenttype`, the
    value is the data, kept as the bytes that were sent (no value: an event without data, §3.2.2)."""
    attributes: dict[str, object] = {}
    content_type: str | None = None
    for name, raw in headers:  # a repeated header: the last one counts
        lowered = name.lower()
        if lowered == "ce_datacontenttype":
            raise InvalidEventError("binary mode carries datacontenttype in content-type, not ce_datacontenttype")
        if lowered.startswith("ce_"):
            attributes[lowered[3:]] = _text(raw, name)
        elif lowered == "content-type":
            content_type = _text(raw, name)
    if content_type:
        attributes["datacontenttype"] = content_type
    return make_event(attributes, value or None)


def to_kafka_record(event: BaseCloudEvent, topic: str, key: str | None = None) -> KafkaRecord:
    """The event as a binary-mode record keyed by `key` (by default `partition_key(event)`), its attributes as
    headers; the key is not added to them (§3.1). One header may be added: JSON data that came without a
    `datacontenttype` (JSON format §3.1.2 reads it as JSON) is written with `content-type: application/json`, as
    §3.1.2 asks of an event re-serialised in another binding; without it a reader could not tell the value
    is JSON."""
    key = partition_key(event) if key is None else key
    message = kafka_binding.to_binary(event, EVENT_FORMAT, key_mapper=lambda _event: key)
    headers = dict(message.headers)
    data = event.get_data()
    if data is not None and not isinstance(data, (bytes, bytearray)) and event.get_datacontenttype() is None:
        headers["content-type"] = IMPLIED_CONTENT_TYPE.encode()
    for name, attribute in event.get_attributes().items():
        if isinstance(attribute, bool):  # the canonical boolean is true/false, not Python's True
            headers[f"ce_{name}"] = canonical(attribute).encode()
    return KafkaRecord(
        topic=topic,
        value=message.value,
        key=key.encode(),
        headers=tuple(headers.items()),
        event_id=event.get_id(),
        event_type=event.get_type(),
        source=event.get_source(),
    )


def _last(headers: Headers, name: str) -> bytes | None:
    found = None
    for header_name, raw in headers:
        if header_name.lower() == name:
            found = raw
    return found


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError(f"header {name} is not UTF-8 (Kafka binding §3.2.3)") from None


def _json(value: bytes) -> object:
    try:
        return json.loads(value.decode("utf-8"))
    except (ValueError, RecursionError):
        raise InvalidEventError("the structured CloudEvent is not JSON") from None
