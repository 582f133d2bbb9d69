"""Kafka records read back from the local broker, and in the shape Lambda's Kafka event source mapping
delivers them (`aws:kafka` for MSK, `SelfManagedKafka` otherwise): records grouped by "<topic>-<partition>",
base64 key and value, headers as lists of byte values."""

from __future__ import annotations

import base64
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

MSK_ARN = "arn:aws:kafka:us-east-1:000000000000:cluster/event-bus/4a1d3b5e-0000-0000-0000-000000000000-1"


def lambda_record(message: Message) -> dict[str, Any]:
    timestamp_type, timestamp = message.timestamp()
    key, value = message.key(), message.value()
    record: dict[str, Any] = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": timestamp,
        "timestampType": "LOG_APPEND_TIME" if timestamp_type == 2 else "CREATE_TIME",
        "value": base64.b64encode(value).decode() if value is not None else None,
        "headers": [{name: list(value or b"")} for name, value in header_pairs(message.headers())],
    }
    if key is not None:
        record["key"] = base64.b64encode(key).decode()
    return record


def lambda_event(
    records: Iterable[dict[str, Any]], *, source: str = "aws:kafka", bootstrap: str = ""
) -> dict[str, Any]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[f"{record['topic']}-{record['partition']}"].append(record)
    event: dict[str, Any] = {"eventSource": source, "bootstrapServers": bootstrap, "records": dict(grouped)}
    if source == "aws:kafka":
        event["eventSourceArn"] = MSK_ARN
    return event


def header_pairs(headers: object) -> list[tuple[str, bytes | None]]:
    """confluent-kafka's headers (a list of pairs, or a dict) as (name, value) pairs."""
    if isinstance(headers, dict):
        return [(str(name), value) for name, value in headers.items()]
    return list(headers) if isinstance(headers, list) else []


def read_topic(
    bootstrap: str,
    topic: str | Sequence[str],
    count: int,
    timeout: float = 15.0,
    accept: Callable[[Message], bool] = lambda message: True,
) -> list[Message]:
    """Up to `count` records of the topic(s) (all partitions, from the beginning) that `accept` keeps."""
    topics = [topic] if isinstance(topic, str) else list(topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}"})
    messages: list[Message] = []
    try:
        deadline = time.monotonic() + timeout
        partitions = [
            TopicPartition(name, partition, OFFSET_BEGINNING)
            for name in topics
            for partition in consumer.list_topics(name, timeout=10).topics[name].partitions
        ]
        consumer.assign(partitions)
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error() and accept(message):
                messages.append(message)
    finally:
        consumer.close()
    return messages


def header(message: Message, name: str) -> bytes | None:
    return dict(header_pairs(message.headers())).get(name)
