"""HTTP request -> CloudEvents, with the CloudEvents SDK's HTTP binding.

Accepted:
- structured mode: `Content-Type: application/cloudevents+json`, the event as a JSON object;
- binary mode: `ce-*` headers for the attributes, the body as the data (any content type);
- batch mode: `Content-Type: application/cloudevents-batch+json`, a JSON array of structured events;
- plain JSON: `Content-Type: application/json` without `ce-*` headers, the body as the data of one event
  whose `type` and `source` come from the query string (`?type=...&source=...`, optional `subject` and
  `id`; a missing id becomes a UUID).
Only CloudEvents 1.0 is accepted. An event may nest at most MAX_JSON_DEPTH levels (the event object is level
1, or the body itself for plain JSON; a batch's array is not counted), and its text must be Unicode (no lone
surrogates, even inside `data`).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.v1.event import CloudEvent
from eventbus.checks import describe, identity_problem, text_problem, time_problem
from eventbus.records import EVENT_FORMAT

from ingest.errors import MalformedRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PLAIN_JSON = "application/json"
SUPPORTED = (STRUCTURED, BATCH, "binary mode (ce-* headers)", f"{PLAIN_JSON} with ?type=&source=")
MAX_BATCH_EVENTS = 500
MAX_JSON_DEPTH = 64
"""Deeper JSON is refused before anything walks it recursively (the SDK, the schema check, json.dumps)."""


@dataclass(frozen=True)
class IncomingRequest:
    """The parts of an API Gateway request the ingest reads, as plain values."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    query: dict[str, str] = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def read_request(event: Mapping[str, Any], headers: dict[str, str], max_bytes: int) -> IncomingRequest:
    raw = event.get("body")
    if raw is None:
        body = b""
    elif not isinstance(raw, str):
        raise MalformedRequestError("the request body is not text")
    elif event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as error:
            raise MalformedRequestError(f"the base64 request body does not decode: {error}") from None
    else:
        body = raw.encode("utf-8", errors="surrogatepass")
    if len(body) > max_bytes:
        raise PayloadTooLargeError(f"the request body has {len(body)} bytes; the limit is {max_bytes}")
    query = event.get("queryStringParameters")
    return IncomingRequest(
        body=body,
        headers=headers,
        query={k: v for k, v in query.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(query, Mapping)
        else {},
    )


def parse_events(request: IncomingRequest) -> list[BaseCloudEvent]:
    """The request's events; MalformedRequestError or UnsupportedMediaTypeError explain what is wrong."""
    if any(name.startswith("ce-") for name in request.headers):
        return [_binary(request)]
    media_type = request.media_type
    if media_type == STRUCTURED:
        return [_structured(_json(request.body), index=None, walk=_needs_walk(request.body))]
    if media_type == BATCH:
        items = _json(request.body)
        if not isinstance(items, list):
            raise MalformedRequestError("a batch must be a JSON array of CloudEvents")
        if not items:
            raise MalformedRequestError("the batch is empty")
        if len(items) > MAX_BATCH_EVENTS:
            raise PayloadTooLargeError(f"the batch has {len(items)} events; the limit is {MAX_BATCH_EVENTS}")
        return _batch(items, walk=_needs_walk(request.body))
    if media_type == PLAIN_JSON:
        return [_plain(request)]
    shown = media_type or "no Content-Type"
    raise UnsupportedMediaTypeError(f"{shown} is not accepted; send one of: {', '.join(SUPPORTED)}")


def _json(body: bytes) -> Any:  # noqa: ANN401 - any JSON value
    try:
        return json.loads(body)
    except RecursionError:  # the decoder recurses once per level: this body is far deeper than the limit
        raise MalformedRequestError(f"the body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedRequestError(f"the body is not valid JSON: {error}") from None


def _needs_walk(body: bytes) -> bool:
    """Whether a parsed body could break the JSON rules at all, decided on the bytes at C speed: nesting deeper than
    the limit needs more brackets than that, and a lone surrogate comes from a `\\u` escape or a raw surrogate
    (`\\xed` leads them, and some valid characters too). Most events need no walk; a walk costs ~15 us each."""
    return b"\\u" in body or b"\xed" in body or body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH


def _check_json(value: object, what: str) -> None:
    problem = json_problem(value, MAX_JSON_DEPTH)
    if problem:
        raise MalformedRequestError(f"{what} {problem}")


def json_problem(value: object, max_depth: int) -> str | None:
    """Why a parsed JSON value cannot be taken: nested deeper than `max_depth`, or a string (or object key)
    that is not Unicode. Walked without recursion, so the walk itself has no depth limit."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if text_problem(item, "text"):
                return "holds text that is not valid Unicode (a lone surrogate)"
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            return f"is nested more than {max_depth} levels deep"
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        else:
            pending.extend((child, depth + 1) for child in item)
    return None


def _check_present(attributes: Mapping[str, Any], name: str) -> None:
    """The SDK would make up a missing id; a client's retry would then be a different event."""
    if name not in attributes:
        raise MalformedRequestError(f"attribute {name!r} is required")


def _check_specversion(value: object) -> None:
    if value != "1.0":
        raise MalformedRequestError(f"specversion must be '1.0', got {value!r}")


def _structured(item: object, index: int | None, *, walk: bool = True) -> BaseCloudEvent:
    where = "" if index is None else f"event {index}: "
    if not isinstance(item, dict):
        raise MalformedRequestError(f"{where}a structured CloudEvent must be a JSON object")
    try:
        if walk:
            _check_json(item, "the event")
        _check_structured(item)
        return _checked(EVENT_FORMAT.read(CloudEvent, json.dumps(item)))
    except MalformedRequestError as error:
        raise MalformedRequestError(where + error.detail) from None
    except Exception as error:  # the SDK's validation errors, bad time strings, bad base64 ...
        raise MalformedRequestError(f"{where}{describe(error)}") from None


def _check_structured(item: dict[str, Any]) -> None:
    _check_specversion(item.get("specversion"))
    _check_present(item, "id")
    problem = time_problem(item.get("time"))
    if problem:
        raise MalformedRequestError(problem)
    if "data" in item and "data_base64" in item:
        raise MalformedRequestError("data and data_base64 are mutually exclusive")


def _batch(items: list[Any], *, walk: bool) -> list[BaseCloudEvent]:
    events: list[BaseCloudEvent] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            events.append(_structured(item, index, walk=walk))
        except MalformedRequestError as error:
            event_id = item.get("id") if isinstance(item, dict) else None
            errors.append({"index": index, "id": event_id, "detail": error.detail})
    if errors:
        # all or nothing: a batch with an invalid event is rejected whole, so no event is half-accepted
        raise MalformedRequestError(
            f"{len(errors)} of {len(items)} events are invalid; none was accepted", errors=errors
        )
    return events


def _binary(request: IncomingRequest) -> BaseCloudEvent:
    _check_specversion(request.headers.get("ce-specversion"))
    _check_present({name.removeprefix("ce-"): value for name, value in request.headers.items()}, "id")
    problem = time_problem(request.headers.get("ce-time"))
    if problem:
        raise MalformedRequestError(problem)
    try:
        parsed = from_binary(HTTPMessage(headers=request.headers, body=request.body), EVENT_FORMAT, CloudEvent)
        # binary mode carries the data as opaque bytes: keep them exactly as sent (no JSON round trip)
        event = CloudEvent(parsed.get_attributes(), request.body or None)
    except Exception as error:
        raise MalformedRequestError(describe(error)) from None
    return _checked(event)


def _plain(request: IncomingRequest) -> BaseCloudEvent:
    event_type, source = request.query.get("type"), request.query.get("source")
    if not event_type or not source:
        raise MalformedRequestError(
            "a plain application/json body needs the event's type and source in the query string "
            "(?type=...&source=...), or send a CloudEvent (application/cloudevents+json or ce-* headers)"
        )
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": request.query.get("id") or str(uuid.uuid4()),
        "type": event_type,
        "source": source,
        "time": datetime.now(UTC),
        "datacontenttype": PLAIN_JSON,
    }
    if request.query.get("subject"):
        attributes["subject"] = request.query["subject"]
    data = _json(request.body) if request.body else None
    if _needs_walk(request.body):
        _check_json(data, "the body")
    try:
        return _checked(CloudEvent(attributes, data))
    except MalformedRequestError:
        raise
    except Exception as error:
        raise MalformedRequestError(describe(error)) from None


CORE_ATTRIBUTES = frozenset({"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"})
INT32 = range(-(2**31), 2**31)


def _checked(event: BaseCloudEvent) -> BaseCloudEvent:
    """Checks the SDK leaves to us: the identifying attributes are non-empty strings, every attribute's text
    is valid Unicode (no lone surrogates, which Kafka headers could not carry) without control characters,
    and extension values have a CloudEvents type (string, 32-bit integer, boolean; not objects, arrays or
    floats)."""
    problem = identity_problem(event)
    if problem:
        raise MalformedRequestError(problem)
    for name, value in event.get_attributes().items():
        if name not in CORE_ATTRIBUTES and value is not None and not isinstance(value, str):
            valid = isinstance(value, bool) or (isinstance(value, int) and value in INT32)
            if not valid:
                raise MalformedRequestError(
                    f"extension {name!r} must be a string, a 32-bit integer or a boolean, got {type(value).__name__}"
                )
    return event
