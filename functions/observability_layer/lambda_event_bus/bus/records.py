"""A Kafka record to produce, as plain values (the event contract's `to_kafka_record` makes them from events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["KafkaRecord"]


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
