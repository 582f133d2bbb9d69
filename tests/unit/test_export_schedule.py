"""The flush after the response holds spans and metrics back while invocations come closer together than
TELEMETRY_EXPORT_INTERVAL_MS, and exports after every invocation otherwise (and by default)."""

from __future__ import annotations

import pytest
from lambda_event_bus.telemetry import Telemetry, TelemetrySettings
from lambda_event_bus.telemetry.config import ConfigError
from lambda_event_bus.telemetry.flush import ExportSchedule
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.context import LambdaContext


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decisions(schedule: ExportSchedule, clock: Clock, times: list[float]) -> list[bool]:
    """`due()` at each of `times`, calling `exported()` when it says yes, as the flush does."""
    answers = []
    for at in times:
        clock.now = at
        due = schedule.due()
        if due:
            schedule.exported()
        answers.append(due)
    return answers


def test_a_burst_exports_once_per_interval_and_sparse_invocations_each_time():
    clock = Clock()
    schedule = ExportSchedule(1.0, clock)
    # the first one exports; a burst is held back until an interval has passed since the last export
    assert decisions(schedule, clock, [0.0, 0.2, 0.4, 0.9, 1.1, 1.3]) == [True, False, False, False, True, False]
    # an invocation after a pause exports at once: what the burst held waited for it
    assert decisions(schedule, clock, [5.0, 5.1, 30.0]) == [True, False, True]


def test_an_interval_of_zero_exports_after_every_invocation():
    clock = Clock()
    assert decisions(ExportSchedule(0.0, clock), clock, [0.0, 0.01, 0.02]) == [True, True, True]


def telemetry(**environ: str) -> tuple[Telemetry, InMemorySpanExporter, Clock]:
    exporter = InMemorySpanExporter()
    settings = TelemetrySettings.from_env({"OTEL_SERVICE_NAME": "batched", "OTEL_TRACES_EXPORTER": "otlp", **environ})
    layer = Telemetry(settings, otlp_exporter=exporter)
    clock = Clock()
    layer.export_schedule.clock = clock
    return layer, exporter, clock


def invoke(layer: Telemetry, name: str) -> None:
    with layer.span(name):
        pass
    layer.flush_after_response(None)  # what the extension runs once the handler returned


def test_held_spans_go_with_the_next_due_export_and_at_shutdown():
    layer, exporter, clock = telemetry(TELEMETRY_EXPORT_INTERVAL_MS="1000")
    invoke(layer, "first")
    assert [span.name for span in exporter.get_finished_spans()] == ["first"]
    for at, name in ((100.3, "second"), (100.6, "third")):
        clock.now = at
        invoke(layer, name)
    assert len(exporter.get_finished_spans()) == 1, "a burst is held back"
    clock.now = 101.2
    invoke(layer, "fourth")
    assert [span.name for span in exporter.get_finished_spans()] == ["first", "second", "third", "fourth"]
    clock.now = 101.3
    invoke(layer, "last")
    assert len(exporter.get_finished_spans()) == 4
    layer.shutdown()
    assert [span.name for span in exporter.get_finished_spans()][-1] == "last", "the shutdown flush sends it"


def test_by_default_and_inline_every_invocation_exports():
    layer, exporter, clock = telemetry()
    for at in (100.0, 100.1, 100.2):
        clock.now = at
        invoke(layer, "each")
    assert len(exporter.get_finished_spans()) == 3
    batched, exporter, clock = telemetry(TELEMETRY_EXPORT_INTERVAL_MS="1000")
    handler = batched.lambda_handler(lambda event, context: "ok")  # outside Lambda: no extension, inline flushes
    for at in (100.0, 100.1):
        clock.now = at
        assert handler({}, LambdaContext()) == "ok"
    assert len(exporter.get_finished_spans()) == 2


@pytest.mark.parametrize("value", ["-1", "60001", "soon"])
def test_a_bad_interval_fails_naming_the_variable(value: str):
    with pytest.raises(ConfigError, match="TELEMETRY_EXPORT_INTERVAL_MS"):
        TelemetrySettings.from_env({"TELEMETRY_EXPORT_INTERVAL_MS": value})
