"""Event type -> topic: exact patterns win over prefixes (`com.example.*`), the longest prefix wins, else the
default topic. The patterns and the partition key are the event contract's (`lambda_event_bus.bus.contract`)."""

from __future__ import annotations

from collections.abc import Iterable

from lambda_event_bus.bus.contract import TypePattern, partition_key

__all__ = ["TopicRouter", "partition_key"]


class TopicRouter:
    def __init__(self, routes: Iterable[tuple[str, str]], default_topic: str) -> None:
        patterns = [(TypePattern(pattern), topic) for pattern, topic in routes]
        self._routes = sorted(patterns, key=lambda route: route[0].rank, reverse=True)
        self.default_topic = default_topic

    def topic_for(self, event_type: str) -> str:
        for pattern, topic in self._routes:
            if pattern.matches(event_type):
                return topic
        return self.default_topic
