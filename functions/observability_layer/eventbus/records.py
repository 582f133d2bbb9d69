"""CloudEvents on Kafka: the Kafka protocol binding in binary mode (`ce_*` headers, data as the value)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as kafka_binding
from cloudevents.core.formats.json import JSONFormat


class EventFormat(JSONFormat):
    """The SDK's JSON format, writing every JSON value as JSON when the content type is JSON (or absent, which
    means JSON in structured mode): arrays, numbers, booleans and strings too, which the SDK would write as
    Python's repr or as bare text."""

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:  # noqa: ANN401 - any JSON value
        if data is None:
            return b""
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        is_json = self.JSON_CONTENT_TYPE_PATTERN.match(datacontenttype or self.DEFAULT_CONTENT_TYPE) is not None
        if is_json or not isinstance(data, str):
            return json.dumps(data, separators=(",", ":")).encode()
        return data.encode("utf-8")


EVENT_FORMAT = EventFormat()


@dataclass(frozen=True)
class KafkaRecord:
    """One record to produce, as plain values (`event_type` and `source` label its metrics)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    event_id: str = ""
    event_type: str = "unknown"
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        """What the record weighs on the wire: value, key and headers."""
        return len(self.value) + len(self.key or b"") + sum(len(name) + len(value) for name, value in self.headers)


def to_kafka_record(event: BaseCloudEvent, topic: str, key: str) -> KafkaRecord:
    message = kafka_binding.to_binary(event, EVENT_FORMAT, key_mapper=lambda _event: key)
    headers = dict(message.headers)
    for name, value in event.get_attributes().items():
        if isinstance(value, bool):  # the binding's canonical boolean is true/false, not Python's True
            headers[f"ce_{name}"] = b"true" if value else b"false"
    return KafkaRecord(
        topic=topic,
        value=message.value,
        key=key.encode(),
        headers=tuple(headers.items()),
        event_id=event.get_id(),
        event_type=event.get_type(),
        source=event.get_source(),
    )
