"""The keys and patterns the bus routes events by: the Kafka key of an event, and event-type patterns (ingest's
topic routes and the consumer's subscriptions read them the same way)."""

from __future__ import annotations

from dataclasses import dataclass

from cloudevents.core.base import BaseCloudEvent

from lambda_event_bus.bus.contract.attributes import canonical


def partition_key(event: BaseCloudEvent) -> str:
    """The Kafka key the bus writes an event with: the Partitioning extension's `partitionkey`, else `subject`,
    else `id`. The key is read from the event and never added to it (Kafka binding §3.1)."""
    key = event.get_extension("partitionkey")
    if key not in (None, ""):
        return canonical(key)
    return event.get_subject() or event.get_id()


@dataclass(frozen=True)
class TypePattern:
    """An event type (`com.example.order.created`) or a prefix ending in `*` (`com.example.*`; `*` alone
    matches every type). Exact patterns rank above prefixes, and longer prefixes above shorter ones."""

    text: str

    def __post_init__(self) -> None:
        if not self.text or "*" in self.text[:-1]:
            raise ValueError(f"event type pattern {self.text!r} must be a type, or a prefix ending in '*'")

    @property
    def is_prefix(self) -> bool:
        return self.text.endswith("*")

    def matches(self, event_type: str) -> bool:
        return event_type.startswith(self.text[:-1]) if self.is_prefix else event_type == self.text

    @property
    def rank(self) -> tuple[bool, int]:
        return (not self.is_prefix, len(self.text))
