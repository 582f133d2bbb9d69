"""Tracing: OpenTelemetry SDK with OTLP (HTTP/protobuf or gRPC), console or no export, W3C propagation."""

from lambda_event_bus.telemetry.tracing.propagation import (
    decode_kafka_header_value,
    kafka_headers_as_text,
    links_for,
    span_context_of,
)
from lambda_event_bus.telemetry.tracing.provider import Tracing, current_ids
from lambda_event_bus.telemetry.tracing.record_spans import RecordSpan

__all__ = [
    "RecordSpan",
    "Tracing",
    "current_ids",
    "decode_kafka_header_value",
    "kafka_headers_as_text",
    "links_for",
    "span_context_of",
]
