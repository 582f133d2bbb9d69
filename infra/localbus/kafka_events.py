"""Kafka records in the shape Lambda's Kafka event source mapping delivers them (`aws:kafka` for MSK,
`SelfManagedKafka` otherwise): records grouped by "<topic>-<partition>", base64 key and value, headers as
lists of byte values."""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Message

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
        "headers": [{name: list(value or b"")} for name, value in _pairs(message.headers())],
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


def _pairs(headers: object) -> list[tuple[str, bytes | None]]:
    if isinstance(headers, dict):
        return [(str(name), value) for name, value in headers.items()]
    return list(headers) if isinstance(headers, list) else []
