"""CloudEvents on Kafka: the Kafka protocol binding in binary mode (`ce_*` headers, data as the value)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as kafka_binding
from cloudevents.core.formats.json import JSONFormat


class EventFormat(JSONFormat):
    """The SDK's JSON format, also writing JSON data that is not an object (arrays, numbers, booleans),
    which the SDK would otherwise turn into Python's repr."""

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:  # noqa: ANN401 - any JSON value
        if isinstance(data, (list, int, float, bool)):
            return json.dumps(data, separators=(",", ":")).encode()
        return super().write_data(data, datacontenttype)


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
    return KafkaRecord(
        topic=topic,
        value=message.value,
        key=key.encode(),
        headers=tuple(message.headers.items()),
        event_id=event.get_id(),
        event_type=event.get_type(),
        source=event.get_source(),
    )
