"""Record spans: made of plain values where nothing can tell them from the SDK's spans, and the SDK's own
everywhere else. Both paths give the same span for the same record."""

from __future__ import annotations

import pytest
from lambda_event_bus.telemetry import TelemetrySettings
from lambda_event_bus.telemetry.tracing import Tracing
from lambda_event_bus.telemetry.tracing.otlp_encoding import OtlpSpanEncoder
from lambda_event_bus.telemetry.tracing.record_spans import _PlainRecordSpan, _SdkRecordSpan
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

ATTRIBUTES = {
    "cloudevents.event_type": "com.example.order.created",
    "messaging.destination.partition.id": "3",
    "messaging.kafka.offset": 42,
}


def tracing(**environ: str) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    built = Tracing(TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "otlp", **environ}), otlp_exporter=exporter)
    return built, exporter


def remote(flags: int = 0x01, state: TraceState | None = None) -> Context:
    parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(flags), state)
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def comparable(span: ReadableSpan) -> bytes:
    """The span as exported, ids and times aside."""
    context = span.get_span_context()
    assert context is not None
    same = ReadableSpan(
        name=span.name,
        context=SpanContext(context.trace_id, 1, False, context.trace_flags, context.trace_state),
        parent=span.parent,
        resource=span.resource,
        attributes=dict(span.attributes or {}),
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=1,
        end_time=2,
        instrumentation_scope=span.instrumentation_scope,
    )
    return OtlpSpanEncoder().encode([same])


def one_span(built: Tracing, exporter: InMemorySpanExporter, parent: Context, *, error: str | None = None):
    record = built.record_spans.start("process com.example.order.created", parent, SpanKind.CONSUMER, ATTRIBUTES)
    child = built.tracer.start_span("deliver hook", context=record.context)  # a delivery under the record
    child.end()
    if error:
        record.set_error(error)
    record.end()
    built.flush()
    spans = exporter.get_finished_spans()
    exporter.clear()
    return record, spans


@pytest.mark.parametrize("error", [None, "dead-lettered"])
@pytest.mark.parametrize("state", [None, TraceState([("vendor", "v1")])])
@pytest.mark.parametrize("flags", [0x01, 0x03])  # sampled; sampled with W3C level 2's random trace id flag
def test_a_plain_record_span_is_the_span_the_sdk_would_have_made(error, state, flags):
    built, exporter = tracing()
    plain, (child, made) = one_span(built, exporter, remote(flags, state), error=error)
    assert isinstance(plain, _PlainRecordSpan)

    sdk = Tracing(TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "none"}))
    sdk_exporter = InMemorySpanExporter()
    sdk.provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))  # not the layer's own: the SDK's spans
    sdk_span, (_, expected) = one_span(sdk, sdk_exporter, remote(flags, state), error=error)
    assert isinstance(sdk_span, _SdkRecordSpan)

    assert comparable(made) == comparable(expected)
    assert made.context.trace_flags == expected.context.trace_flags
    assert made.status.status_code is (StatusCode.ERROR if error else StatusCode.UNSET)
    assert made.end_time >= made.start_time > 0
    assert child.parent == made.context, "the record's deliveries are its children"
    assert child.context.trace_id == made.context.trace_id


@pytest.mark.parametrize(
    "parent",
    [
        remote(flags=0x00),  # not sampled: the SDK's non-recording span
        Context(),  # no parent: a root, which the sampler decides
        trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(1)))),  # local
    ],
)
def test_anything_but_a_sampled_remote_parent_gets_the_sdks_span(parent):
    built, _ = tracing()
    span = built.record_spans.start("process x", parent, SpanKind.CONSUMER, ATTRIBUTES)
    assert isinstance(span, _SdkRecordSpan)
    span.end()


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "8"},  # the SDK would cut the values
        {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2"},  # and drop attributes
        {"OTEL_SDK_DISABLED": "true"},
    ],
)
def test_settings_that_change_what_the_sdk_does_get_the_sdks_span(environ, monkeypatch):
    for name, value in environ.items():  # the SDK reads its span limits from the process environment
        monkeypatch.setenv(name, value)
    built, _ = tracing(**environ)
    span = built.record_spans.start("process x", remote(), SpanKind.CONSUMER, ATTRIBUTES)
    assert isinstance(span, _SdkRecordSpan)
    span.end()


def test_a_processor_added_by_someone_else_gets_the_sdks_spans():
    built, exporter = tracing()
    theirs = InMemorySpanExporter()
    built.provider.add_span_processor(SimpleSpanProcessor(theirs))  # e.g. third-party code on the global provider
    span, spans = one_span(built, exporter, remote())
    assert isinstance(span, _SdkRecordSpan)
    assert len(spans) == 2
    assert {s.name for s in theirs.get_finished_spans()} == {"deliver hook", "process com.example.order.created"}
