"""The bounds of span retention: what a failed export keeps, in which order it goes out again, what it gives up."""

from __future__ import annotations

from collections.abc import Sequence

from lambda_event_bus.telemetry.tracing.exporters import ObservedSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class Collector(SpanExporter):
    """An in-memory collector that can be switched down."""

    def __init__(self) -> None:
        self.up = True
        self.received: list[list[str]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.up:
            return SpanExportResult.FAILURE
        self.received.append([span.name for span in spans])
        return SpanExportResult.SUCCESS


def spans(*names: str) -> list[ReadableSpan]:
    return [ReadableSpan(name=name) for name in names]


def test_a_failed_exports_spans_go_out_first_with_the_next_export():
    collector = Collector()
    exporter = ObservedSpanExporter(collector)
    collector.up = False
    assert exporter.export(spans("a", "b")) is SpanExportResult.FAILURE
    assert exporter.kept == 2
    collector.up = True
    assert exporter.export(spans("c")) is SpanExportResult.SUCCESS
    assert collector.received == [["a", "b", "c"]]
    assert exporter.kept == 0
    assert exporter.take_dropped() == {}


def test_kept_spans_go_out_on_their_own_when_nothing_new_comes():
    collector = Collector()
    exporter = ObservedSpanExporter(collector)
    collector.up = False
    exporter.export(spans("a"))
    assert exporter.export_kept() is False
    collector.up = True
    assert exporter.export_kept() is True
    assert collector.received == [["a"]]
    assert exporter.export_kept() is True, "nothing kept: nothing sent"
    assert collector.received == [["a"]]


def test_the_oldest_spans_fall_out_first_when_the_bound_is_full_and_are_counted():
    collector = Collector()
    exporter = ObservedSpanExporter(collector, max_spans=3)
    collector.up = False
    exporter.export(spans("a", "b"))
    exporter.export(spans("c", "d", "e"))
    assert exporter.kept == 3
    assert exporter.take_dropped() == {"retention_full": 2}
    collector.up = True
    exporter.export_kept()
    assert collector.received == [["c", "d", "e"]]


def test_the_byte_bound_holds_too():
    collector = Collector()
    exporter = ObservedSpanExporter(collector, max_bytes=400)
    collector.up = False
    exporter.export(spans(*(f"span-{n}" for n in range(10))))
    assert 1 <= exporter.kept < 10
    assert exporter.take_dropped()["retention_full"] == 10 - exporter.kept


def test_a_span_refused_again_and_again_is_given_up():
    collector = Collector()
    exporter = ObservedSpanExporter(collector, max_attempts=3)
    collector.up = False
    exporter.export(spans("poison"))
    exporter.export_kept()
    assert exporter.kept == 1
    exporter.export_kept()
    assert exporter.kept == 0
    assert exporter.take_dropped() == {"attempts": 1}


def test_kept_spans_go_out_in_requests_of_the_processors_batch_size():
    collector = Collector()
    exporter = ObservedSpanExporter(collector)
    collector.up = False
    exporter.export(spans(*(f"s{n}" for n in range(600))))
    exporter.export(spans("new"))
    collector.up = True
    assert exporter.export_kept() is True
    assert [len(request) for request in collector.received] == [512, 89]
    assert collector.received[0][0] == "s0"
    assert collector.received[-1][-1] == "new"
