"""Trace context extraction from HTTP and Kafka carriers, injection, and links for batches."""

from __future__ import annotations

import pytest
from lambda_event_bus.base import normalize_http_headers
from lambda_event_bus.telemetry import TelemetrySettings
from lambda_event_bus.telemetry.tracing import Tracing, kafka_headers_as_text, links_for
from lambda_event_bus.telemetry.tracing.propagation import build_propagator, extract, span_context_of
from opentelemetry import baggage, trace

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture(scope="module")
def tracing() -> Tracing:
    return Tracing(TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "none"}))


def _ids(context) -> tuple[str, str]:
    span_context = span_context_of(context)
    assert span_context is not None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def test_http_headers_are_case_insensitive_and_multi_value_aware(tracing: Tracing):
    assert _ids(tracing.context_from_http_headers({"TraceParent": TRACEPARENT})) == (TRACE_ID, SPAN_ID)
    context = tracing.context_from_http_headers(None, {"traceparent": [TRACEPARENT], "baggage": ["tenant=t1"]})
    assert _ids(context) == (TRACE_ID, SPAN_ID)
    assert baggage.get_baggage("tenant", context) == "t1"


@pytest.mark.parametrize(
    "headers",
    [
        [{"traceparent": list(TRACEPARENT.encode())}],  # Lambda's aws:kafka shape
        [("traceparent", TRACEPARENT.encode())],  # confluent-kafka's shape
        {"traceparent": TRACEPARENT},
        [{"ce_id": list(b"1")}, {"TRACEPARENT": list(TRACEPARENT.encode())}],
    ],
)
def test_kafka_headers_in_every_carrier_shape(tracing: Tracing, headers):
    assert _ids(tracing.context_from_kafka_headers(headers)) == (TRACE_ID, SPAN_ID)


@pytest.mark.parametrize(
    "headers",
    [None, 42, "traceparent", [{"traceparent": [255, 254]}], [("traceparent", None)], [{"traceparent": "00-bad"}]],
)
def test_bad_carriers_give_an_empty_context(tracing: Tracing, headers):
    assert span_context_of(tracing.context_from_kafka_headers(headers)) is None


def test_bad_http_traceparent_gives_an_empty_context(tracing: Tracing):
    assert span_context_of(tracing.context_from_http_headers({"traceparent": "00-zz-yy-01"})) is None
    single = {"a": 1, 2: "x", "C": "y"}
    assert normalize_http_headers(single, {"B": ["1", None, "2"], "c": ["z"]}) == {"c": "y", "b": "1,2"}


def test_injection_round_trips_through_kafka_headers(tracing: Tracing):
    with tracing.span("produce"):
        headers = tracing.kafka_headers()
        current = trace.get_current_span().get_span_context()
    assert all(isinstance(value, bytes) for _, value in headers)
    context = tracing.context_from_kafka_headers(headers)
    assert span_context_of(context) is not None
    assert span_context_of(context).span_id == current.span_id  # type: ignore[union-attr]


def test_links_are_made_for_valid_sampled_contexts_only(tracing: Tracing):
    good = tracing.context_from_kafka_headers({"traceparent": TRACEPARENT})
    bad = tracing.context_from_kafka_headers({"traceparent": "garbage"})
    unsampled = tracing.context_from_kafka_headers({"traceparent": TRACEPARENT[:-2] + "00"})
    links = links_for([good, bad, unsampled, good], {"messaging.batch.index": 1})
    assert len(links) == 2
    assert trace.format_trace_id(links[0].context.trace_id) == TRACE_ID


def test_xray_propagator_is_available_when_configured():
    propagator = build_propagator(["xray"])
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    context = extract(propagator, {"x-amzn-trace-id": header})
    assert _ids(context) == ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8")


def test_none_propagates_nothing():
    context = extract(build_propagator(["none"]), {"traceparent": TRACEPARENT})
    assert span_context_of(context) is None


def test_text_view_of_kafka_headers_keeps_the_last_duplicate():
    assert kafka_headers_as_text([("a", b"1"), ("A", b"2")]) == {"a": "2"}


def test_only_the_propagators_headers_are_decoded_for_extraction(tracing: Tracing):
    headers = [{"ce_id": list(b"e-1")}, {"Traceparent": list(TRACEPARENT.encode())}, {"payload-hint": [255, 254]}]
    assert kafka_headers_as_text(headers, frozenset({"traceparent"})) == {"traceparent": TRACEPARENT}
    assert _ids(tracing.context_from_kafka_headers(headers)) == (TRACE_ID, SPAN_ID)


UNSAMPLED = TRACEPARENT[:-2] + "00"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("traceparent", UNSAMPLED.encode())], True),
        ([("ce_id", b"1"), ("TraceParent", UNSAMPLED.encode())], True),
        ([("traceparent", TRACEPARENT.encode())], False),  # sampled: the record gets its span
        ([("traceparent", TRACEPARENT.encode()), ("traceparent", UNSAMPLED.encode())], True),  # the last one counts
        ([("traceparent", UNSAMPLED.encode()), ("traceparent", TRACEPARENT.encode())], False),
        ([], False),  # no parent: a root span, which the sampler decides
        ([("traceparent", f"00-{'0' * 32}-{SPAN_ID}-00".encode())], False),  # invalid: a root span
        ([("traceparent", f"00-{TRACE_ID}-{'0' * 16}-00".encode())], False),
        ([("traceparent", UNSAMPLED.upper().encode())], False),
        ([("traceparent", f"01-{TRACE_ID}-{SPAN_ID}-00-extra".encode())], False),  # not read here: extracted
        ([("traceparent", f" {UNSAMPLED}".encode())], False),
        ([("traceparent", b"\xff" * 55)], False),
        ([("traceparent", f"00-{TRACE_ID}-{SPAN_ID}-02".encode())], True),  # other flags, sampled bit clear
    ],
)
def test_a_record_is_sampled_out_only_when_its_canonical_traceparent_says_so(tracing: Tracing, headers, expected):
    assert tracing.sampled_out(headers) is expected
    if expected:  # what extraction would have given: a valid remote parent that is not sampled
        span_context = span_context_of(tracing.context_from_kafka_headers(headers))
        assert span_context is not None
        assert span_context.is_remote
        assert not span_context.trace_flags.sampled


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_SAMPLER": "always_on"},  # does not follow the parent: the record's span is sampled
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
        {"OTEL_PROPAGATORS": "tracecontext,xray"},  # an X-Ray header could carry another parent
        {"OTEL_PROPAGATORS": "none"},
        {"OTEL_SDK_DISABLED": "true"},
    ],
)
def test_nothing_is_sampled_out_when_the_sampler_or_propagators_could_decide_otherwise(environ):
    tracing = Tracing(TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "none", **environ}))
    assert tracing.sampled_out([("traceparent", UNSAMPLED.encode())]) is False
