"""Tracing: OpenTelemetry SDK with OTLP (HTTP/protobuf or gRPC), console or no export, W3C propagation."""

from observability.tracing.propagation import (
    decode_kafka_header_value,
    kafka_headers_as_text,
    links_for,
    normalize_http_headers,
)
from observability.tracing.provider import Tracing, current_ids

__all__ = [
    "Tracing",
    "current_ids",
    "decode_kafka_header_value",
    "kafka_headers_as_text",
    "links_for",
    "normalize_http_headers",
]
