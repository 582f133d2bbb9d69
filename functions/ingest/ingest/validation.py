"""Checks an event must pass before it is produced: its size on Kafka, and its data's JSON Schema when one
ships for its type (`schemas/<event type>.json`, compiled once at init)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from lambda_event_bus.bus.contract import data_value, is_json_data
from lambda_event_bus.bus.records import KafkaRecord

from ingest.errors import MalformedRequestError, PayloadTooLargeError, SchemaViolationError

Validator = Callable[[Any], Any]


class SchemaRegistry:
    """JSON Schemas by event type. fastjsonschema turns each into Python code at init (fast per event)."""

    def __init__(self, directory: Path) -> None:
        self._validators: dict[str, Validator] = {}
        files = sorted(directory.glob("*.json")) if directory.is_dir() else []
        if files:
            import fastjsonschema

            for path in files:
                self._validators[path.name.removesuffix(".json")] = fastjsonschema.compile(json.loads(path.read_text()))

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self._validators)

    def check(self, event: BaseCloudEvent) -> None:
        validator = self._validators.get(event.get_type())
        if validator is None:
            return
        from fastjsonschema import JsonSchemaValueException

        if not is_json_data(event):
            raise SchemaViolationError(
                f"the data of {event.get_type()} must be JSON (datacontenttype application/json)"
            )
        try:
            validator(data_value(event))
        except JsonSchemaValueException as error:
            where = error.name or "data"
            raise SchemaViolationError(f"{where}: {error.message}") from None


def check_batch(
    events: Sequence[BaseCloudEvent], records: Sequence[KafkaRecord], schemas: SchemaRegistry, max_event_bytes: int
) -> None:
    """Every event's problems at once (a batch is accepted whole or not at all); raise the most telling."""
    by_status: dict[type, list[dict[str, Any]]] = {}
    for index, (event, record) in enumerate(zip(events, records, strict=True)):
        try:
            _check_one(event, record, schemas, max_event_bytes)
        except (PayloadTooLargeError, SchemaViolationError) as error:
            by_status.setdefault(type(error), []).append({"index": index, "id": event.get_id(), "detail": error.detail})
    for error_type in (PayloadTooLargeError, SchemaViolationError):
        errors = by_status.get(error_type)
        if errors:
            detail = (
                errors[0]["detail"]
                if len(events) == 1
                else f"{len(errors)} of {len(events)} events are invalid; none was accepted"
            )
            raise error_type(detail, errors=errors if len(events) > 1 else None)


def _check_one(event: BaseCloudEvent, record: KafkaRecord, schemas: SchemaRegistry, max_event_bytes: int) -> None:
    if record.size > max_event_bytes:
        raise PayloadTooLargeError(f"the event is {record.size} bytes on Kafka; the limit is {max_event_bytes}")
    schemas.check(event)


def ensure_unique_ids(events: Sequence[BaseCloudEvent]) -> None:
    seen: set[tuple[str, str]] = set()
    for index, event in enumerate(events):
        key = (event.get_source(), event.get_id())
        if key in seen:
            raise MalformedRequestError(
                f"event {index} repeats source {key[0]!r} and id {key[1]!r} within the batch",
                errors=[{"index": index, "id": key[1], "detail": "duplicate source and id in the batch"}],
            )
        seen.add(key)
