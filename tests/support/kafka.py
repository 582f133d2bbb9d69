"""Read records back from the real broker (the local stack's reader, shared with the demo)."""

from samhost.kafka_events import header, read_topic

__all__ = ["header", "read_topic"]
