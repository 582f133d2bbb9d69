"""CloudEvents' JSON event format (`json-format.md`): one event as a JSON object, read and written.

The SDK's JSONFormat is the base: its bindings call `write_data`/`read_data` for binary modes. What it gets wrong
for this bus is overridden: its reader turns `time` into a datetime and its event class makes up `id` and `time`
when they are missing; it reads binary-mode data by trying UTF-8 (bytes that happen to decode become text, and
are then written as `data` rather than `data_base64`), and writes non-JSON data with Python's `str()`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.formats.json import JSONFormat

from lambda_event_bus.bus.contract.attributes import InvalidEventError, canonical
from lambda_event_bus.bus.contract.event import Event, bytes_kind, declares_json, make_event

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def read_structured(document: object) -> Event:
    """One event from its JSON object (already parsed); InvalidEventError says what is wrong."""
    if not isinstance(document, dict):
        raise InvalidEventError("a structured CloudEvent must be a JSON object")
    attributes = dict(document)
    data = attributes.pop("data", None)  # null: no data (the JSON format's null is "unset")
    data_base64 = attributes.pop("data_base64", None)
    if data is not None and data_base64 is not None:
        raise InvalidEventError("data and data_base64 are mutually exclusive (JSON format §3.1.1)")
    if data_base64 is not None:
        data = _base64(data_base64) or None  # empty data is no data, as a binary-mode body
    return make_event(attributes, data)


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidEventError("data_base64 must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEventError("data_base64 is not valid base64") from None


def structured_document(event: BaseCloudEvent) -> dict[str, Any]:
    """The event as a JSON object: its attributes as they are, and its data by its content type (JSON format
    §3.1.1): bytes declared JSON as the JSON value, declared text as a string, anything else as `data_base64`."""
    document: dict[str, Any] = dict(event.get_attributes())
    if "time" in document and not isinstance(document["time"], str):  # an SDK event's datetime
        document["time"] = canonical(document["time"])
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        kind = bytes_kind(event.get_datacontenttype())
        if kind == "json":
            document["data"] = json.loads(bytes(data).decode("utf-8"))
        elif kind == "text":
            document["data"] = bytes(data).decode("utf-8")
        else:
            document["data_base64"] = base64.b64encode(data).decode("ascii")
    elif data is not None:
        document["data"] = data
    return document


class EventFormat(JSONFormat):
    """The JSON format as the bus reads and writes it (the SDK's bindings call it for binary-mode data)."""

    def read(self, event_factory: EventFactory | None, data: str | bytes) -> BaseCloudEvent:
        return read_structured(json.loads(data))

    def write(self, event: BaseCloudEvent) -> bytes:
        return json.dumps(structured_document(event), separators=(",", ":")).encode()

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:  # noqa: ANN401 - any JSON value
        """A binary-mode body or Kafka value: bytes as they are; a JSON value as JSON when the content type
        declares JSON (or is absent); text as UTF-8."""
        if data is None:
            return b""
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        if isinstance(data, str) and not declares_json(datacontenttype):
            return data.encode("utf-8")
        return json.dumps(data, separators=(",", ":")).encode()

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes | None:
        """Binary-mode data stays the bytes that were sent; `data_value` reads them by their content type."""
        return body or None


EVENT_FORMAT = EventFormat()
