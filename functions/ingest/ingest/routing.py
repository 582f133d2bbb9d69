"""Event type -> topic, and the partition key that keeps one entity's events in order."""

from __future__ import annotations

from collections.abc import Iterable

from cloudevents.core.base import BaseCloudEvent


class TopicRouter:
    """Exact patterns win over prefixes (`com.example.*`); the longest prefix wins; else the default topic."""

    def __init__(self, routes: Iterable[tuple[str, str]], default_topic: str) -> None:
        routes = list(routes)
        self._exact = {pattern: topic for pattern, topic in routes if not pattern.endswith("*")}
        self._prefixes = sorted(
            ((pattern[:-1], topic) for pattern, topic in routes if pattern.endswith("*")),
            key=lambda route: len(route[0]),
            reverse=True,
        )
        self.default_topic = default_topic

    def topic_for(self, event_type: str) -> str:
        if event_type in self._exact:
            return self._exact[event_type]
        for prefix, topic in self._prefixes:
            if event_type.startswith(prefix):
                return topic
        return self.default_topic


def partition_key(event: BaseCloudEvent) -> str:
    """The `partitionkey` extension, else `subject`, else the event id."""
    key = event.get_extension("partitionkey")
    if key not in (None, ""):
        return str(key)
    return event.get_subject() or event.get_id()
