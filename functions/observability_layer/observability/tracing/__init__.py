"""Tracing: OpenTelemetry SDK with OTLP (HTTP/protobuf or gRPC), console or no export, W3C propagation."""

from observability.tracing.propagation import (
    decode_kafka_header_value,
    kafka_headers_as_text,
    links_for,
    normalize_http_headers,
)
from observability.tracing.provider import Tracing, current_ids
from observability.tracing.record_spans import RecordSpan

__all__ = [
    "RecordSpan",
    "Tracing",
    "current_ids",
    "decode_kafka_header_value",
    "kafka_headers_as_text",
    "links_for",
    "normalize_http_headers",
]
