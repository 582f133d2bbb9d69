"""Tracing for one execution environment: provider, processors, exporter, propagator and a small span API."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from lambda_event_bus.base.http import normalize_http_headers
from lambda_event_bus.telemetry.config import TelemetrySettings
from lambda_event_bus.telemetry.tracing import propagation
from lambda_event_bus.telemetry.tracing.exporters import (
    ObservedSpanExporter,
    create_console_exporter,
    create_otlp_exporter,
)
from lambda_event_bus.telemetry.tracing.record_spans import RecordSpans
from lambda_event_bus.telemetry.tracing.resource import build_resource
from lambda_event_bus.telemetry.tracing.sampling import build_sampler

INSTRUMENTATION_NAME = "lambda_event_bus"

# Spans wait in memory until the end-of-invocation flush exports them in one request; the background
# thread only exports early when a batch fills up. The queue bound caps memory when the backend is down.
MAX_QUEUED_SPANS = 2048
MAX_EXPORT_BATCH = 512
BACKGROUND_EXPORT_DELAY_MS = 60_000


class Tracing:
    """Owns the TracerProvider of this execution environment. Exports only when `flush()` is called."""

    def __init__(self, settings: TelemetrySettings, *, otlp_exporter: SpanExporter | None = None) -> None:
        self.resource = build_resource(settings)
        self.provider = TracerProvider(
            resource=self.resource, sampler=build_sampler(settings.sampler, settings.sampler_ratio)
        )
        self.propagator = propagation.build_propagator(settings.propagators)
        # the header names the propagators read: a Kafka record's other headers are never decoded for them
        self._fields = frozenset(field.lower() for field in self.propagator.fields)
        # a remote parent that is not sampled decides alone (ParentBased: no span records), and only W3C
        # traceparent can carry it (baggage never sets a span context; X-Ray could override it)
        self._follows_unsampled = (
            not settings.disabled
            and settings.sampler.startswith("parentbased_")
            and "tracecontext" in settings.propagators
            and set(settings.propagators) <= {"tracecontext", "baggage"}
        )
        self._observed: ObservedSpanExporter | None = None
        self._batch: BatchSpanProcessor | None = None
        self._processors: tuple[SpanProcessor, ...] = ()
        self.tracer: trace.Tracer
        self.record_spans: RecordSpans
        if settings.disabled:  # OTEL_SDK_DISABLED: spans are non-recording, nothing is queued or exported
            self.tracer = _PassThroughTracer()
            self.record_spans = self._record_spans(plain=False)
            return
        if "console" in settings.traces_exporters:
            self._add_processor(SimpleSpanProcessor(create_console_exporter()))
        if "otlp" in settings.traces_exporters:
            self._observed = ObservedSpanExporter(otlp_exporter or create_otlp_exporter(settings))
            self._batch = BatchSpanProcessor(
                self._observed,
                max_queue_size=MAX_QUEUED_SPANS,
                schedule_delay_millis=BACKGROUND_EXPORT_DELAY_MS,
                max_export_batch_size=MAX_EXPORT_BATCH,
                export_timeout_millis=settings.flush_timeout_s * 1000,
            )
            self._add_processor(self._batch)
        self.tracer = self.provider.get_tracer(INSTRUMENTATION_NAME)
        self.record_spans = self._record_spans(plain=settings.sampler.startswith("parentbased_"))

    def _record_spans(self, *, plain: bool) -> RecordSpans:
        return RecordSpans(
            self.tracer,
            plain=plain,
            own_processor=self._own_processor,
            resource=self.resource,
            scope=InstrumentationScope(INSTRUMENTATION_NAME),
            limits=SpanLimits(),  # what the provider read from the environment too
            new_span_id=self.provider.id_generator.generate_span_id,
        )

    def _add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)
        self._processors += (processor,)

    def _own_processor(self) -> SpanProcessor | None:
        """The provider's span processor while it holds the layer's processors alone (whose `on_start` does
        nothing), else None: a processor someone else added may expect the SDK's own spans."""
        active = self.provider._active_span_processor  # what the SDK's own spans end on
        return active if getattr(active, "_span_processors", None) == self._processors else None

    @property
    def exports(self) -> bool:
        """True when spans go to a backend that needs flushing (OTLP)."""
        return self._batch is not None

    def flush(self) -> bool:
        """Export every queued span now; True when every export request succeeded.

        The SDK's force_flush exports synchronously and each request is bounded by the exporter's
        timeout; the caller bounds the whole call (see lambda_event_bus.telemetry.flush).
        """
        if self._batch is None or self._observed is None:
            return True
        self._observed.take_failures()
        self._batch.force_flush()
        if self._observed.take_failures():
            return False
        return self._observed.export_kept()  # spans of earlier failed exports, when nothing new carried them

    @property
    def otlp_exporter(self) -> SpanExporter | None:
        """The exporter that sends to the collector (None without OTLP)."""
        return self._observed.delegate if self._observed is not None else None

    @property
    def kept_spans(self) -> int:
        """Spans whose export failed, waiting for the collector to answer again."""
        return self._observed.kept if self._observed is not None else 0

    def take_dropped_spans(self) -> dict[str, int]:
        """Spans given up since the last call (retention full, too many attempts), by reason."""
        return self._observed.take_dropped() if self._observed is not None else {}

    def discard_kept(self) -> int:
        """Forget the spans kept from failed exports (see ObservedSpanExporter.discard_kept)."""
        return self._observed.discard_kept() if self._observed is not None else 0

    def disconnect(self) -> None:
        """Close the exporter's connection to the collector (before a snapshot); the next export reconnects."""
        disconnect = getattr(self.otlp_exporter, "disconnect", None)
        if callable(disconnect):
            disconnect()

    def shutdown(self) -> None:
        """Shut the provider down (Telemetry.shutdown flushes first: that export carries the kept spans too)."""
        self.provider.shutdown()

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[trace.Link] | None = None,
        context: Context | None = None,
        record_exception: bool = True,
    ) -> Iterator[Span]:
        """A span that is current inside the block; exceptions are recorded on it and re-raised."""
        with self.tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=record_exception,
            set_status_on_exception=record_exception,
        ) as current:
            yield current

    # carriers

    def context_from_http_headers(
        self, headers: Mapping[str, object] | None, multi_value_headers: Mapping[str, object] | None = None
    ) -> Context:
        carrier = normalize_http_headers(headers, multi_value_headers)
        return propagation.extract(self.propagator, carrier)

    def extract(self, carrier: Mapping[str, str]) -> Context:
        """A context from a carrier whose keys are already lower-cased (e.g. HttpRequest.headers)."""
        return propagation.extract(self.propagator, carrier)

    def context_from_kafka_headers(self, headers: object) -> Context:
        return propagation.extract(self.propagator, propagation.kafka_headers_as_text(headers, self._fields))

    def sampled_out(self, headers: Iterable[tuple[str, bytes]]) -> bool:
        """True when a Kafka record (its decoded `(name, value)` headers) comes from a producer that did not sample
        its trace and this function's sampler follows that decision: a span for the record would record nothing.

        A consumer starts no span for such a record and extracts its context only when something carries the trace
        on (a delivery). It costs a header look-up and a match, where extraction and a non-recording span cost
        ~10 us. Any doubt (no or a non-canonical traceparent, a sampler or propagator that could decide otherwise)
        answers False."""
        if not self._follows_unsampled:
            return False
        value = propagation.last_header(headers, "traceparent")
        if value is None:
            return False
        try:
            return propagation.canonical_unsampled(value.decode("ascii"))
        except UnicodeDecodeError:
            return False

    def http_headers(self, context: Context | None = None) -> dict[str, str]:
        return propagation.inject(self.propagator, context)

    def kafka_headers(self, context: Context | None = None) -> list[tuple[str, bytes]]:
        return propagation.kafka_headers(self.propagator, context)


class _PassThroughTracer(trace.NoOpTracer):
    """Telemetry off: spans record nothing, but a span started under a parent carries the parent's context, so a
    trace that reaches this function goes on downstream (the traceparent of Kafka records and webhook calls)."""

    def start_span(self, name: str, context: Context | None = None, *args: object, **kwargs: object) -> Span:
        return trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Context | None = None, *args: object, **kwargs: object
    ) -> Iterator[Span]:
        with trace.use_span(self.start_span(name, context), end_on_exit=True) as span:
            yield span


def current_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the current span as W3C hex, or (None, None) outside any valid span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)
