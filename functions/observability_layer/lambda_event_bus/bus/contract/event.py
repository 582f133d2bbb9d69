"""The event every function passes around, and how its data is read according to its content type.

Data is held as it arrived: the bytes of a binary-mode body, a Kafka value or a JSON `data_base64` member are
kept as bytes (so Kafka carries exactly what the sender sent); a JSON `data` member is kept as its JSON value.
What the bytes mean is decided by `datacontenttype` (JSON format §3.1), never by whether they happen to decode.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from lambda_event_bus.bus.contract.attributes import InvalidEventError, Value, checked_attributes

DataKind = Literal["json", "text", "binary"]
# JSON format §3.1.1: a media type declares JSON when its subtype is `json` or ends in `+json`
_JSON = re.compile(r"[^/;\s]+/(?:[^/;\s]+\+)?json", re.ASCII | re.IGNORECASE)
_XML = re.compile(r"(?:application|text)/(?:[^/;\s]+\+)?xml", re.ASCII | re.IGNORECASE)
_UTF8 = re.compile(r";\s*charset\s*=\s*\"?(?:utf-8|us-ascii)\"?\s*(?:;|$)", re.ASCII | re.IGNORECASE)
_CHARSET = re.compile(r";\s*charset\s*=", re.ASCII | re.IGNORECASE)


class Event(CloudEvent):
    """A CloudEvent that holds exactly the attributes it was made with.

    The SDK's constructor invents what is missing (a new UUID for `id`, "now" for `time`) and keeps `time` as a
    datetime, whose text is not always what was sent (`...:24.000Z` comes back as `...:24Z`). Here `time` stays
    the RFC 3339 text it arrived as (`get_time()` still answers a datetime), and nothing is added. Build one
    with `make_event`, which checks the attributes first."""

    def __init__(self, attributes: dict[str, Value], data: Any = None) -> None:  # noqa: ANN401 - any JSON value
        # not the SDK's constructor: it would add `id` and `time` (the attributes are checked by make_event)
        self._attributes: dict[str, Any] = attributes
        self._data: Any = data

    def get_time(self) -> datetime | None:
        text = self._attributes.get("time")
        if not isinstance(text, str):
            return text
        try:
            return datetime.fromisoformat(text.upper())
        except ValueError:  # a leap second (:60), valid in RFC 3339, has no datetime
            return None


def make_event(attributes: dict[str, object], data: Any = None) -> Event:  # noqa: ANN401 - any JSON value
    """The event, once its attributes and its data pass the contract's rules (InvalidEventError otherwise)."""
    event = Event(checked_attributes(attributes), data)
    problem = data_problem(event)
    if problem:
        raise InvalidEventError(problem)
    return event


def bytes_kind(content_type: str | None) -> DataKind:
    """What data bytes of this content type are: `json` (`*/json`, `*/*+json`), `text` (`text/*` and XML, in
    UTF-8 or with no charset), or `binary`: anything else, and bytes without a content type (JSON format
    §3.1.2: no assumption is made)."""
    if not content_type:
        return "binary"
    media_type = content_type.split(";", 1)[0].strip()
    if _JSON.fullmatch(media_type):
        return "json"
    textual = media_type.lower().startswith("text/") or _XML.fullmatch(media_type) is not None
    if textual and (not _CHARSET.search(content_type) or _UTF8.search(content_type)):
        return "text"
    return "binary"


def declares_json(content_type: str | None) -> bool:
    """Whether a JSON `data` member holds a JSON value: with a JSON content type, or none (JSON format §3.1.2)."""
    return content_type is None or bytes_kind(content_type) == "json"


def is_json_data(event: BaseCloudEvent) -> bool:
    """Whether the event's data is JSON: bytes under a JSON content type, or a JSON `data` member under a JSON
    content type or none."""
    data, content_type = event.get_data(), event.get_datacontenttype()
    if isinstance(data, (bytes, bytearray)):
        return bytes_kind(content_type) == "json"
    return data is not None and declares_json(content_type)


def data_problem(event: BaseCloudEvent) -> str | None:
    """Why the event's data does not match its content type: bytes declared JSON that are not JSON, bytes
    declared text that are not UTF-8, a JSON `data` member that is not a string under a non-JSON type."""
    data, content_type = event.get_data(), event.get_datacontenttype()
    if isinstance(data, (bytes, bytearray)):
        kind = bytes_kind(content_type)
        try:
            if kind == "json":
                json.loads(bytes(data).decode("utf-8"))
            elif kind == "text":
                bytes(data).decode("utf-8")
        except (ValueError, RecursionError):
            what = "JSON" if kind == "json" else "UTF-8 text"
            return f"the data is not {what}, as datacontenttype {content_type!r} says"
        return None
    if data is not None and not declares_json(content_type) and not isinstance(data, str):
        return f"the data must be a string: datacontenttype {content_type!r} is not JSON (JSON format §3.1.2)"
    return None


def data_value(event: BaseCloudEvent) -> Any:  # noqa: ANN401 - any JSON value
    """The data as its content type says: bytes declared JSON as the JSON value, declared text as a string,
    binary as bytes; a JSON `data` member as it was."""
    data = event.get_data()
    if not isinstance(data, (bytes, bytearray)):
        return data
    kind = bytes_kind(event.get_datacontenttype())
    if kind == "json":
        return json.loads(bytes(data).decode("utf-8"))
    if kind == "text":
        return bytes(data).decode("utf-8")
    return bytes(data)
