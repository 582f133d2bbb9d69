"""The layer's OTLP span encoder writes, byte for byte, what the SDK's encoder serialises, for any span the SDK can
make: every attribute value type, events, links, statuses, parents local and remote, trace state, dropped counts,
several resources and instrumentation scopes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from lambda_event_bus.telemetry.tracing.otlp_encoding import MAX_CACHED_ATTRIBUTES, OtlpSpanEncoder
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=30)
VALUES = st.one_of(
    TEXT,
    st.booleans(),
    INT64,
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.tuples(TEXT, TEXT),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(INT64, max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=False), max_size=3).map(tuple),
    st.none(),
)
ATTRIBUTES = st.dictionaries(TEXT, VALUES, max_size=5)
CONTEXTS = st.builds(
    SpanContext,
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=st.integers(min_value=1, max_value=2**64 - 1),
    is_remote=st.booleans(),
    trace_flags=st.sampled_from([TraceFlags(0), TraceFlags(1)]),
    trace_state=st.sampled_from([None, TraceState([("vendor", "v1")]), TraceState([("a", "1"), ("b", "two")])]),
)
STATUSES = st.one_of(
    st.just(Status(StatusCode.UNSET)),
    st.just(Status(StatusCode.OK)),
    TEXT.map(lambda text: Status(StatusCode.ERROR, text or None)),
)
RESOURCES = st.sampled_from(
    [
        Resource({"service.name": "a", "faas.max_memory": 134217728, "aws.log.group.names": ("/aws/lambda/a",)}),
        Resource({"service.name": "b"}, schema_url="https://opentelemetry.io/schemas/1.27.0"),
        Resource({}),
    ]
)
SCOPES = st.sampled_from(
    [
        None,
        InstrumentationScope("observability"),
        InstrumentationScope("other", "1.2.3", "https://opentelemetry.io/schemas/1.27.0", {"scope.attr": "x"}),
    ]
)
TIMES = st.integers(min_value=0, max_value=2**63)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    context = draw(CONTEXTS)
    return ReadableSpan(
        name=draw(TEXT),
        context=SpanContext(context.trace_id, context.span_id, False, context.trace_flags, context.trace_state),
        parent=draw(st.one_of(st.none(), CONTEXTS)),
        resource=draw(RESOURCES),
        attributes=draw(ATTRIBUTES),
        events=draw(st.lists(st.builds(Event, TEXT, ATTRIBUTES, TIMES), max_size=2)),
        links=draw(st.lists(st.builds(Link, CONTEXTS, ATTRIBUTES), max_size=2)),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=draw(STATUSES),
        start_time=draw(TIMES),
        end_time=draw(TIMES),
        instrumentation_scope=draw(SCOPES),
    )


def sdk_bytes(batch: list[ReadableSpan]) -> bytes:
    return encode_spans(batch).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.lists(spans(), max_size=6))
def test_any_batch_is_encoded_as_the_sdk_encodes_it(batch: list[ReadableSpan]):
    encoder = OtlpSpanEncoder()
    assert encoder.encode(batch) == sdk_bytes(batch)
    assert encoder.encode(batch) == sdk_bytes(batch), "the second time, from what the encoder remembered"


def test_spans_of_the_sdk_itself_with_dropped_counts_and_exceptions():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "limits"}),
        span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1, max_event_attributes=1),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test", "0.1")
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span(
        "outer", kind=SpanKind.SERVER, attributes={"a": 1, "b": "two", "c": 3.5}, links=[Link(remote), Link(remote)]
    ) as outer:
        outer.add_event("first", {"x": 1, "y": 2})
        outer.add_event("second")
        outer.record_exception(ValueError("boom"))
        with tracer.start_as_current_span("inner") as inner:
            inner.set_status(Status(StatusCode.ERROR, "failed"))
    batch = list(exporter.get_finished_spans())
    assert any(span.dropped_attributes and span.dropped_events and span.dropped_links for span in batch)
    encoded = OtlpSpanEncoder().encode(batch)
    assert encoded == sdk_bytes(batch)
    request = ExportTraceServiceRequest.FromString(encoded)  # and protobuf reads it back
    assert [span.name for span in request.resource_spans[0].scope_spans[0].spans] == ["inner", "outer"]


def test_what_the_encoder_remembers_is_bounded_and_stays_correct():
    encoder = OtlpSpanEncoder()
    context = SpanContext(1, 2, False, TraceFlags(1))
    for n in range(MAX_CACHED_ATTRIBUTES + 10):
        span = ReadableSpan("s", context, resource=Resource({}), attributes={"id": f"e-{n}", "type": "t"})
        assert encoder.encode([span]) == sdk_bytes([span])
    assert len(encoder._attributes) <= MAX_CACHED_ATTRIBUTES
