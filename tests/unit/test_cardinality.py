"""The cardinality guard folds label values past the limit into one and counts the folding."""

from __future__ import annotations

from lambda_event_bus.telemetry.metrics import OVERFLOW_VALUE, CardinalityGuard, Metrics


def test_values_past_the_limit_fold_and_are_counted():
    folded: list[tuple[str, str]] = []
    guard = CardinalityGuard(2, lambda metric, label: folded.append((metric, label)))
    assert [guard.value("m", "event_type", value) for value in ("a", "b", "a", "c", "d")] == [
        "a",
        "b",
        "a",
        OVERFLOW_VALUE,
        OVERFLOW_VALUE,
    ]
    assert folded == [("m", "event_type"), ("m", "event_type")]
    assert guard.value("m", "topic", "c") == "c", "each label has its own budget"


def test_metrics_fold_input_labels_and_report_it():
    metrics = Metrics(label_value_limit=3, runtime_collectors=False)
    for index in range(10):
        metrics.inc("events_produced_total", event_type=f"type-{index}", topic="events", source="/s")
    assert metrics.value("events_produced_total", event_type="type-0", topic="events", source="/s") == 1
    assert metrics.value("events_produced_total", event_type=OVERFLOW_VALUE, topic="events", source="/s") == 7
    assert metrics.value("metric_label_overflow_total", metric="events_produced_total", label="event_type") == 7
    exposition = metrics.exposition().decode()
    assert exposition.count('events_produced_total{event_type="type-') == 3
