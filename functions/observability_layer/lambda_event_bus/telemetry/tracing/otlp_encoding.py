"""Spans as an OTLP ExportTraceServiceRequest in protobuf's wire format, written directly.

The SDK's `encode_spans` builds a protobuf object per span, per attribute and per attribute value, then serialises
them: ~20 us a span of seven attributes here, the largest part of what a sampled Kafka record costs. This writes the
same bytes (tests compare them with `encode_spans(...).SerializeToString()` for every kind of value, event, link and
status) from the spans' plain values, and remembers the encoding of repeated text attributes (a consumer's event type,
topic and source are the same for most records of a batch), and of each resource and instrumentation scope.

The layout follows opentelemetry-proto's trace.proto and common.proto: fields in number order, proto3 defaults
left out, as protobuf's own serialiser does.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind

_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_SMALL = [bytes((value,)) for value in range(0x80)]

_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# SpanFlags: the span says whether its parent is remote (CONTEXT_HAS_IS_REMOTE), and if it is (CONTEXT_IS_REMOTE)
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200

MAX_CACHED_ATTRIBUTES = 4096
MAX_CACHED_TEXT = 256
"""Encoded `key: text` attributes are remembered up to this many (then forgotten all at once), for texts this
short: a message id is new in every record, an event type is not."""


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= 0xFFFF_FFFF_FFFF_FFFF  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, text: str) -> bytes:
    """A string field, left out when empty (proto3)."""
    return _delimited(tag, text.encode()) if text else b""


# AnyValue
_STRING, _BOOL, _INT, _DOUBLE_VALUE = _tag(1, 2), _tag(2, 0), _tag(3, 0), _tag(4, 1)
_ARRAY, _KVLIST, _BYTES = _tag(5, 2), _tag(6, 2), _tag(7, 2)
# KeyValue, ArrayValue and KeyValueList
_KEY, _VALUE, _VALUES = _tag(1, 2), _tag(2, 2), _tag(1, 2)
# Span
_TRACE_ID, _SPAN_ID, _TRACE_STATE, _PARENT_SPAN_ID = _tag(1, 2), _tag(2, 2), _tag(3, 2), _tag(4, 2)
_NAME, _KIND, _START, _END = _tag(5, 2), _tag(6, 0), _tag(7, 1), _tag(8, 1)
_ATTRIBUTES, _DROPPED_ATTRIBUTES, _EVENTS, _DROPPED_EVENTS = _tag(9, 2), _tag(10, 0), _tag(11, 2), _tag(12, 0)
_LINKS, _DROPPED_LINKS, _STATUS, _FLAGS = _tag(13, 2), _tag(14, 0), _tag(15, 2), _tag(16, 5)
# Span.Event
_EVENT_TIME, _EVENT_NAME, _EVENT_ATTRIBUTES, _EVENT_DROPPED = _tag(1, 1), _tag(2, 2), _tag(3, 2), _tag(4, 0)
# Span.Link
_LINK_TRACE_ID, _LINK_SPAN_ID, _LINK_ATTRIBUTES, _LINK_DROPPED, _LINK_FLAGS = (
    _tag(1, 2),
    _tag(2, 2),
    _tag(4, 2),
    _tag(5, 0),
    _tag(6, 5),
)
# Status
_STATUS_MESSAGE, _STATUS_CODE = _tag(2, 2), _tag(3, 0)
# InstrumentationScope, Resource, ScopeSpans, ResourceSpans, ExportTraceServiceRequest
_SCOPE_NAME, _SCOPE_VERSION, _SCOPE_ATTRIBUTES = _tag(1, 2), _tag(2, 2), _tag(3, 2)
_RESOURCE_ATTRIBUTES = _tag(1, 2)
_SCOPE, _SPANS, _SCHEMA_URL = _tag(1, 2), _tag(2, 2), _tag(3, 2)
_RESOURCE, _SCOPE_SPANS = _tag(1, 2), _tag(2, 2)
_RESOURCE_SPANS = _tag(1, 2)


def _any_value(value: object) -> bytes:  # noqa: PLR0911 - one return per value type reads best
    """An AnyValue's payload; the SDK's order of checks (a bool is an int, a str a Sequence)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _BOOL + _SMALL[int(value)]
    if isinstance(value, str):
        return _delimited(_STRING, value.encode())
    if isinstance(value, int):
        return _INT + _varint(value)
    if isinstance(value, float):
        return _DOUBLE_VALUE + _DOUBLE(value)
    if isinstance(value, bytes):
        return _delimited(_BYTES, value)
    if isinstance(value, Sequence):
        return _delimited(_ARRAY, b"".join(_delimited(_VALUES, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _delimited(_KVLIST, b"".join(_VALUES + _key_value(str(key), item) for key, item in value.items()))
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def _key_value(key: str, value: object) -> bytes:
    """A KeyValue, length-prefixed: what follows the tag of the field that holds it."""
    payload = _text(_KEY, key) + _delimited(_VALUE, _any_value(value))
    return _varint(len(payload)) + payload


class OtlpSpanEncoder:
    """Encodes export requests; one per exporter (its memory of repeated attributes is its own)."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[str, str], bytes] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialised ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope, each
        group in the order its first span came."""
        groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        for span in spans:
            scope = span.instrumentation_scope or None
            groups.setdefault(span.resource, {}).setdefault(scope, []).append(self._span(span))
        out = []
        for resource, scopes in groups.items():
            body = [self._resource(resource)]
            for scope, encoded in scopes.items():
                scope_spans = self._scope(scope) + b"".join(_delimited(_SPANS, span) for span in encoded)
                if scope is not None and scope.schema_url:
                    scope_spans += _text(_SCHEMA_URL, scope.schema_url)
                body.append(_delimited(_SCOPE_SPANS, scope_spans))
            if resource.schema_url:
                body.append(_text(_SCHEMA_URL, resource.schema_url))
            out.append(_delimited(_RESOURCE_SPANS, b"".join(body)))
        return b"".join(out)

    def _attributes_of(self, tag: bytes, attributes: Mapping[str, object] | None) -> bytes:
        """The attributes as repeated KeyValue fields under `tag` (each message holds them in a field of its own)."""
        if not attributes:
            return b""
        cache = self._attributes
        parts: list[bytes] = []
        for key, value in attributes.items():
            if type(value) is str and len(value) <= MAX_CACHED_TEXT:
                encoded = cache.get((key, value))
                if encoded is None:
                    if len(cache) >= MAX_CACHED_ATTRIBUTES:
                        cache.clear()
                    encoded = cache[key, value] = _key_value(key, value)
            else:
                encoded = _key_value(key, value)
            parts += (tag, encoded)
        return b"".join(parts)

    def _resource(self, resource: Resource) -> bytes:
        known = self._resources.get(id(resource))
        if known is None or known[0] is not resource:
            known = (resource, _delimited(_RESOURCE, self._attributes_of(_RESOURCE_ATTRIBUTES, resource.attributes)))
            self._resources[id(resource)] = known
        return known[1]

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        known = self._scopes.get(id(scope))
        if known is None or known[0] is not scope:
            payload = b""
            if scope is not None:
                payload = (
                    _text(_SCOPE_NAME, scope.name)
                    + _text(_SCOPE_VERSION, scope.version or "")
                    + self._attributes_of(_SCOPE_ATTRIBUTES, scope.attributes)
                )
            known = (scope, _delimited(_SCOPE, payload))
            self._scopes[id(scope)] = known
        return known[1]

    def _span(self, span: ReadableSpan) -> bytes:
        context = span.get_span_context()
        if context is None:
            raise ValueError(f"span {span.name!r} has no span context")
        parent = span.parent
        parts = [
            _TRACE_ID,
            b"\x10",
            context.trace_id.to_bytes(16, "big"),
            _SPAN_ID,
            b"\x08",
            context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            parts.append(_text(_TRACE_STATE, ",".join(f"{key}={value}" for key, value in context.trace_state.items())))
        if parent:
            parts += (_PARENT_SPAN_ID, b"\x08", parent.span_id.to_bytes(8, "big"))
        parts.append(_text(_NAME, span.name))
        parts += (_KIND, _SMALL[_KINDS[span.kind]])
        if span.start_time:
            parts += (_START, _FIXED64(span.start_time))
        if span.end_time:
            parts += (_END, _FIXED64(span.end_time))
        parts.append(self._attributes_of(_ATTRIBUTES, span.attributes))
        if span.dropped_attributes:
            parts += (_DROPPED_ATTRIBUTES, _varint(span.dropped_attributes))
        for event in span.events:
            parts.append(_delimited(_EVENTS, self._event(event)))
        if span.dropped_events:
            parts += (_DROPPED_EVENTS, _varint(span.dropped_events))
        for link in span.links:
            parts.append(_delimited(_LINKS, self._link(link)))
        if span.dropped_links:
            parts += (_DROPPED_LINKS, _varint(span.dropped_links))
        status = span.status
        code = status.status_code.value
        parts.append(
            _delimited(
                _STATUS,
                _text(_STATUS_MESSAGE, status.description or "") + (_STATUS_CODE + _SMALL[code] if code else b""),
            )
        )
        parts += (_FLAGS, _FIXED32(_flags(parent)))
        return b"".join(parts)

    def _event(self, event: Event) -> bytes:
        return (
            (_EVENT_TIME + _FIXED64(event.timestamp) if event.timestamp else b"")
            + _text(_EVENT_NAME, event.name)
            + self._attributes_of(_EVENT_ATTRIBUTES, event.attributes)
            + (_EVENT_DROPPED + _varint(event.dropped_attributes) if event.dropped_attributes else b"")
        )

    def _link(self, link: Link) -> bytes:
        context = link.context
        return (
            _LINK_TRACE_ID
            + b"\x10"
            + context.trace_id.to_bytes(16, "big")
            + _LINK_SPAN_ID
            + b"\x08"
            + context.span_id.to_bytes(8, "big")
            + self._attributes_of(_LINK_ATTRIBUTES, link.attributes)
            + (_LINK_DROPPED + _varint(link.dropped_attributes) if link.dropped_attributes else b"")
            + _LINK_FLAGS
            + _FIXED32(_flags(context))
        )


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE
