"""Span exporters for OTEL_TRACES_EXPORTER, each built only when configured (gRPC is imported lazily; OTLP/HTTP is
the layer's own sender on the SDK's encoder, lambda_event_bus.telemetry.tracing.otlp_http)."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from lambda_event_bus.telemetry.config import TelemetrySettings

logger = logging.getLogger(__name__)


MAX_RETAINED_SPANS = 2048
MAX_RETAINED_BYTES = 2 * 1024 * 1024
MAX_EXPORT_ATTEMPTS = 20
MAX_EXPORT_REQUEST_SPANS = 512
"""Spans whose export failed wait for the next export, within these bounds (oldest dropped first, counted). A span
whose export failed this many times is dropped too, so a collector that refuses one batch for good cannot hold
the rest (after a failure the backend backs off, so 20 attempts span a long outage). Kept spans go out in
requests of at most MAX_EXPORT_REQUEST_SPANS, the batch size the processor itself uses."""


@dataclass
class _Kept:
    span: ReadableSpan
    size: int
    attempts: int


class ObservedSpanExporter(SpanExporter):
    """Delegates to an exporter, remembers its failures (the flush counts them per backend), and keeps the
    spans of a failed export for the next one.

    A failed export's spans are sent again, oldest first, ahead of the next export's; the next export is the
    next flush's (after the backend's back-off), or `export_kept()` when nothing new was queued, or shutdown.
    What is kept is bounded in spans and in (estimated) bytes, and each span in attempts; what falls out is
    counted by reason. An exception from the delegate is a failure like any other: it never reaches the
    processor. Nothing of this runs while exports succeed, beyond one look at an empty deque.
    """

    def __init__(
        self,
        delegate: SpanExporter,
        *,
        max_spans: int = MAX_RETAINED_SPANS,
        max_bytes: int = MAX_RETAINED_BYTES,
        max_attempts: int = MAX_EXPORT_ATTEMPTS,
    ) -> None:
        self._delegate = delegate
        self._max_spans = max_spans
        self._max_bytes = max_bytes
        self._max_attempts = max_attempts
        self._failures = 0
        self._exported = 0
        self._kept: deque[_Kept] = deque()
        self._kept_bytes = 0
        self._dropped: Counter[str] = Counter()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            earlier, self._kept, self._kept_bytes = list(self._kept), deque(), 0
        pending = [*earlier, *(_Kept(span, 0, 0) for span in spans)]  # sizes are estimated only when kept
        while pending:
            request, pending = pending[:MAX_EXPORT_REQUEST_SPANS], pending[MAX_EXPORT_REQUEST_SPANS:]
            try:
                result = self._delegate.export([kept.span for kept in request])
            except Exception:
                logger.debug("span export raised", exc_info=True)
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self._failures += 1
                self._keep([*request, *pending])
                return result
            self._exported += len(request)
        return SpanExportResult.SUCCESS

    def export_kept(self) -> bool:
        """Send what earlier failed exports kept (when there is nothing new to carry it); True when nothing
        is kept any more."""
        if not self._kept:
            return True
        return self.export(()) is SpanExportResult.SUCCESS

    def _keep(self, failed: list[_Kept]) -> None:
        with self._lock:
            for kept in failed:
                kept.attempts += 1
                kept.size = kept.size or _estimated_size(kept.span)
                if kept.attempts >= self._max_attempts:
                    self._dropped["attempts"] += 1
                    continue
                self._kept.append(kept)
                self._kept_bytes += kept.size
            # spans kept meanwhile by a concurrent export are older: they stay in front
            while self._kept and (len(self._kept) > self._max_spans or self._kept_bytes > self._max_bytes):
                self._kept_bytes -= self._kept.popleft().size
                self._dropped["retention_full"] += 1

    def discard_kept(self) -> int:
        """Forget the spans failed exports kept, uncounted (before a snapshot: every environment restored from it
        would send them again); returns how many."""
        with self._lock:
            count, self._kept, self._kept_bytes = len(self._kept), deque(), 0
        return count

    @property
    def delegate(self) -> SpanExporter:
        return self._delegate

    @property
    def kept(self) -> int:
        """Spans waiting for the collector to answer again."""
        return len(self._kept)

    def take_dropped(self) -> dict[str, int]:
        """Spans given up since the last call, by reason (reading resets the counts)."""
        with self._lock:
            dropped, self._dropped = dict(self._dropped), Counter()
        return dropped

    def take_failures(self) -> int:
        """Failures since the last call (reading resets the count)."""
        failures, self._failures = self._failures, 0
        return failures

    @property
    def exported(self) -> int:
        return self._exported

    def shutdown(self) -> None:
        if self._kept:  # the last flush could not send them: they end with the environment
            logger.warning("%d spans could not be exported before shutdown", len(self._kept))
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._delegate.force_flush(timeout_millis)


def _estimated_size(span: ReadableSpan) -> int:
    """Roughly what the span weighs in memory and on the wire: its texts and attribute values."""
    size = 128 + len(span.name)
    for key, value in (span.attributes or {}).items():
        size += len(key) + len(str(value))
    for event in span.events:
        size += 32 + len(event.name) + sum(len(k) + len(str(v)) for k, v in (event.attributes or {}).items())
    return size + 48 * len(span.links)


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
    from lambda_event_bus.telemetry.tracing.otlp_http import OtlpHttpSpanExporter, tls_context

    return OtlpHttpSpanExporter(
        settings.otlp_traces_endpoint,
        timeout_s=timeout,
        headers=settings.otlp_headers,
        compression=settings.otlp_compression,
        ssl_context=tls_context(settings.otlp_certificate, settings.otlp_client_certificate, settings.otlp_client_key),
    )


def create_console_exporter() -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(out=sys.stdout)
