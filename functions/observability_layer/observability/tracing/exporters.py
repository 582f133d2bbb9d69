"""Span exporters for OTEL_TRACES_EXPORTER, each built only when configured (gRPC is imported lazily)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from observability.config import TelemetrySettings

logger = logging.getLogger(__name__)


class ObservedSpanExporter(SpanExporter):
    """Delegates to an exporter and remembers its failures, so the flush can count them per backend.

    An exception from the delegate is a failure like any other: it never reaches the processor.
    """

    def __init__(self, delegate: SpanExporter) -> None:
        self._delegate = delegate
        self._failures = 0
        self._exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._delegate.export(spans)
        except Exception:
            logger.debug("span export raised", exc_info=True)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._exported += len(spans)
        else:
            self._failures += 1
        return result

    def take_failures(self) -> int:
        """Failures since the last call (reading resets the count)."""
        failures, self._failures = self._failures, 0
        return failures

    @property
    def exported(self) -> int:
        return self._exported

    def shutdown(self) -> None:
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._delegate.force_flush(timeout_millis)


def create_otlp_exporter(settings: TelemetrySettings) -> SpanExporter:
    """The OTLP span exporter for the configured protocol, with the flush budget as its request timeout."""
    timeout = settings.flush_timeout_s
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=settings.otlp_traces_endpoint,
            insecure=settings.otlp_traces_endpoint.startswith("http://"),
            headers=settings.otlp_headers or None,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=settings.otlp_traces_endpoint,
        headers=settings.otlp_headers or None,
        timeout=timeout,
    )


def create_console_exporter() -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(out=sys.stdout)
