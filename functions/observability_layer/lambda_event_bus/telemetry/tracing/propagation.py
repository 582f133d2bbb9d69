"""Trace context in and out of carriers: HTTP headers, Kafka record headers, and links for batches.

Extraction is tolerant: a malformed or missing header yields an empty context, never an exception,
because a client's bad `traceparent` must not cost it its event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.util.types import Attributes

logger = logging.getLogger(__name__)

HeaderValue = str | bytes | bytearray | Sequence[int] | None
"""A Kafka header value as carriers give it: str, bytes (confluent-kafka) or a list of byte values (Lambda)."""


def build_propagator(names: Sequence[str]) -> TextMapPropagator:
    """The composite propagator for OTEL_PROPAGATORS (tracecontext, baggage, xray; none for none)."""
    propagators: list[TextMapPropagator] = []
    for name in names:
        if name == "tracecontext":
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            propagators.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            from opentelemetry.baggage.propagation import W3CBaggagePropagator

            propagators.append(W3CBaggagePropagator())
        elif name == "xray":
            # optional and imported only when asked for
            from opentelemetry.propagators.aws import AwsXRayPropagator

            propagators.append(AwsXRayPropagator())
    return CompositePropagator(propagators)


class _LowercaseGetter(Getter[Mapping[str, str]]):
    """Reads a carrier whose keys were lower-cased (HTTP header names are case-insensitive)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _LowercaseGetter()


def decode_kafka_header_value(value: HeaderValue) -> str | None:
    """A Kafka header value as text, or None when it is absent or not UTF-8."""
    try:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, bytearray):
            return bytes(value).decode("utf-8")
        return bytes(value).decode("utf-8")  # Lambda's list of byte values
    except (UnicodeDecodeError, ValueError, TypeError):
        return None


def kafka_headers_as_text(headers: object, only: Collection[str] | None = None) -> dict[str, str]:
    """Kafka record headers in any of the carriers' shapes as a lower-cased text mapping.

    Accepts Lambda's `[{"key": [byte, ...]}, ...]`, confluent-kafka's `[("key", b"value"), ...]`,
    and a plain mapping. Later duplicates win, as Kafka clients read the last header of a name.
    `only` (lower-cased names): decode just those, e.g. a propagator's fields: a record's other headers are
    the application's, and turning Lambda's lists of byte values into text is most of the cost.
    """
    pairs: list[tuple[object, HeaderValue]] = []
    if isinstance(headers, Mapping):
        pairs.extend(headers.items())
    elif isinstance(headers, Iterable) and not isinstance(headers, (str, bytes, bytearray)):
        for item in headers:
            if isinstance(item, tuple):  # first: the shape of decoded headers, and the cheaper check
                if len(item) == 2:
                    pairs.append((item[0], item[1]))
            elif isinstance(item, Mapping):
                pairs.extend(item.items())
    text: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            continue
        name = key.lower()
        if only is not None and name not in only:
            continue
        decoded = decode_kafka_header_value(value)
        if decoded is not None:
            text[name] = decoded
    return text


# W3C trace context, version 00, in its one canonical form (nothing around it, no extra fields)
_CANONICAL_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID, _ZERO_SPAN_ID = "0" * 32, "0" * 16


def canonical_unsampled(traceparent: str) -> bool:
    """True when `traceparent` is a valid version-00 W3C header whose sampled flag is clear: its parent would be
    extracted as a valid, remote, not-sampled span context. False for anything else, including the valid forms
    this does not try to read (other versions, surrounding blanks): a caller that gets False extracts."""
    match = _CANONICAL_TRACEPARENT.fullmatch(traceparent)
    return (
        match is not None
        and match[1] != _ZERO_TRACE_ID
        and match[2] != _ZERO_SPAN_ID
        and not int(match[3], 16) & trace.TraceFlags.SAMPLED
    )


def last_header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    """The value of the last header called `name` (lower-case) among decoded Kafka headers, None without one."""
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value
    return found


def extract(propagator: TextMapPropagator, carrier: Mapping[str, str]) -> Context:
    """A context from a lower-cased text carrier; an empty context when nothing valid is there."""
    try:
        return propagator.extract(carrier, getter=_GETTER)
    except Exception:  # a third-party propagator must not fail the caller
        logger.debug("trace context extraction failed", exc_info=True)
        return Context()


def inject(propagator: TextMapPropagator, context: Context | None = None) -> dict[str, str]:
    """The propagation headers for the given (default: current) context."""
    carrier: dict[str, str] = {}
    try:
        propagator.inject(carrier, context=context)
    except Exception:
        logger.debug("trace context injection failed", exc_info=True)
    return carrier


def kafka_headers(propagator: TextMapPropagator, context: Context | None = None) -> list[tuple[str, bytes]]:
    """Propagation headers in confluent-kafka's shape, for a record being produced."""
    return [(key, value.encode("utf-8")) for key, value in inject(propagator, context).items()]


def span_context_of(context: Context) -> trace.SpanContext | None:
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def links_for(contexts: Iterable[Context], attributes: Attributes = None) -> list[trace.Link]:
    """One span link per valid, sampled remote context: how a batch span points at each record's producer.

    A context its producer did not sample has no spans in any backend: a link to it would point at nothing,
    and in a 500-record batch whose records were sampled out, those links were most of the batch span's export
    (each is encoded: ~30 us a record)."""
    links: list[trace.Link] = []
    for context in contexts:
        span_context = span_context_of(context)
        if span_context is not None and span_context.trace_flags.sampled:
            links.append(trace.Link(span_context, attributes))
    return links
