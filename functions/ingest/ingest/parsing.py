"""HTTP request -> CloudEvents, through the bus's event contract (`lambda_event_bus.bus.contract`).

The content mode is decided by Content-Type first (HTTP binding §3):
- structured mode: `Content-Type: application/cloudevents+json`, the event as a JSON object (`ce-` headers, if
  any, are ignored);
- batch mode: `Content-Type: application/cloudevents-batch+json`, a JSON array of structured events (`[]` is a
  valid batch of none);
- binary mode: any other Content-Type with `ce-*` headers for the attributes, the body as the data;
- plain JSON: `Content-Type: application/json` without `ce-*` headers, the body as the data of one event
  whose `type` and `source` come from the query string (`?type=...&source=...`, optional `subject` and
  `id`; a missing id becomes a UUID, and `time` is when ingest received it).
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

from lambda_event_bus.bus.contract import (
    BATCH,
    STRUCTURED,
    ContractError,
    Event,
    UnsupportedFormatError,
    http_mode,
    make_event,
    read_binary,
    read_structured,
    text_problem,
    timestamp,
)

from ingest.errors import MalformedRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

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


def parse_events(request: IncomingRequest) -> list[Event]:
    """The request's events; MalformedRequestError or UnsupportedMediaTypeError explain what is wrong."""
    try:
        mode = http_mode(request.headers)
    except UnsupportedFormatError as error:
        raise UnsupportedMediaTypeError(f"{error.reason}; send one of: {', '.join(SUPPORTED)}") from None
    if mode == "structured":
        return [_structured(_json(request.body), index=None, walk=_needs_walk(request.body))]
    if mode == "batch":
        items = _json(request.body)
        if not isinstance(items, list):
            raise MalformedRequestError("a batch must be a JSON array of CloudEvents")
        if len(items) > MAX_BATCH_EVENTS:
            raise PayloadTooLargeError(f"the batch has {len(items)} events; the limit is {MAX_BATCH_EVENTS}")
        return _batch(items, walk=_needs_walk(request.body))
    if mode == "binary":
        return [_binary(request)]
    if request.media_type == PLAIN_JSON:
        return [_plain(request)]
    shown = request.media_type or "no Content-Type"
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


def _structured(item: object, index: int | None, *, walk: bool = True) -> Event:
    where = "" if index is None else f"event {index}: "
    try:
        if walk and isinstance(item, dict):
            _check_json(item, "the event")
        return read_structured(item)
    except MalformedRequestError as error:
        raise MalformedRequestError(where + error.detail) from None
    except ContractError as error:
        raise MalformedRequestError(where + error.reason) from None


def _batch(items: list[Any], *, walk: bool) -> list[Event]:
    events: list[Event] = []
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


def _binary(request: IncomingRequest) -> Event:
    """Binary mode: the data is kept as the bytes that were sent (no JSON round trip on the way to Kafka)."""
    try:
        return read_binary(request.headers, request.body)
    except ContractError as error:
        raise MalformedRequestError(error.reason) from None


def _plain(request: IncomingRequest) -> Event:
    event_type, source = request.query.get("type"), request.query.get("source")
    if not event_type or not source:
        raise MalformedRequestError(
            "a plain application/json body needs the event's type and source in the query string "
            "(?type=...&source=...), or send a CloudEvent (application/cloudevents+json or ce-* headers)"
        )
    attributes: dict[str, object] = {
        "specversion": "1.0",
        "id": request.query.get("id") or str(uuid.uuid4()),
        "type": event_type,
        "source": source,
        "time": timestamp(datetime.now(UTC)),
        "datacontenttype": PLAIN_JSON,
    }
    if request.query.get("subject"):
        attributes["subject"] = request.query["subject"]
    data = _json(request.body) if request.body else None
    if _needs_walk(request.body):
        _check_json(data, "the body")
    try:
        return make_event(attributes, data)
    except ContractError as error:
        raise MalformedRequestError(error.reason) from None
