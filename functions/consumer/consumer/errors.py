"""The consumer's exceptions share one base (names end in Error)."""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of the errors KafkaConsumerFunction raises on purpose."""
