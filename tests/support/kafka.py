"""Read records back from the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


def read_topic(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float = 15.0,
    accept: Callable[[Message], bool] = lambda message: True,
) -> list[Message]:
    """Up to `count` records of `topic` (all partitions, from the beginning) that `accept` keeps."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}"})
    messages: list[Message] = []
    try:
        deadline = time.monotonic() + timeout
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in metadata.partitions])
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error() and accept(message):
                messages.append(message)
    finally:
        consumer.close()
    return messages


def header(message: Message, name: str) -> bytes | None:
    return dict(message.headers() or []).get(name)
