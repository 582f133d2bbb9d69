"""The metric catalog on the project's own registry, runtime metrics and business metrics."""

from __future__ import annotations

from decimal import Decimal

import prometheus_client
import pytest
from lambda_event_bus.telemetry.metrics import CATALOG, Metrics
from prometheus_client.parser import text_string_to_metric_families

# The names and labels ARCHITECTURE.md fixes (dashboards, alerts and later checks rely on them).
REQUIRED = {
    "http_requests_total": ("counter", {"method", "endpoint", "status"}),
    "http_request_duration_seconds": ("histogram", {"method", "endpoint", "status"}),
    "http_active_connections": ("gauge", set()),
    "events_produced_total": ("counter", {"event_type", "topic", "source"}),
    "events_consumed_total": ("counter", {"event_type", "topic", "source"}),
    "event_processing_duration_seconds": ("histogram", {"event_type", "source"}),
    "event_processing_errors_total": ("counter", {"event_type", "source", "error_type"}),
    "kafka_operations_total": ("counter", {"operation", "topic", "status"}),
    "kafka_connection_status": ("gauge", {"broker"}),
    "kafka_message_size_bytes": ("histogram", {"operation", "topic"}),
    "kafka_consumer_lag_seconds": ("histogram", {"topic"}),
    "cdc_events_total": ("counter", {"connector", "table", "operation"}),
    "cdc_connector_status": ("gauge", {"connector"}),
    "cdc_lag_seconds": ("histogram", {"connector", "table"}),
}


def _record_one_of_each(metrics: Metrics) -> None:
    for spec in CATALOG:
        labels = dict.fromkeys(spec.labels, "x")
        if spec.kind == "counter":
            metrics.inc(spec.name, **labels)
        elif spec.kind == "gauge":
            metrics.set(spec.name, 1, **labels)
        else:
            metrics.observe(spec.name, 0.5, **labels)


def test_catalog_names_types_and_labels_are_exact():
    metrics = Metrics(label_value_limit=100)
    _record_one_of_each(metrics)
    families = {family.name: family for family in text_string_to_metric_families(metrics.exposition().decode())}
    for name, (kind, labels) in REQUIRED.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        family = families[family_name]
        assert family.type == kind, name
        sample_names = {sample.name for sample in family.samples}
        assert name in sample_names or f"{name}_count" in sample_names, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)


def test_runtime_metrics_are_on_the_projects_registry_not_the_global_one():
    metrics = Metrics(label_value_limit=100)
    names = {family.name for family in text_string_to_metric_families(metrics.exposition().decode())}
    assert {"python_info", "python_gc_objects_collected", "process_resident_memory_bytes"} <= names
    default_names = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert "http_requests" not in default_names


def test_no_created_samples_are_exposed():
    metrics = Metrics(label_value_limit=100, runtime_collectors=False)
    metrics.inc("kafka_operations_total", operation="produce", topic="t", status="success")
    assert b"_created" not in metrics.exposition()


def test_wrong_names_or_labels_are_programming_errors():
    metrics = Metrics(label_value_limit=100, runtime_collectors=False)
    with pytest.raises(KeyError):
        metrics.inc("no_such_metric_total")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.inc("kafka_operations_total", operation="produce")


def test_empty_label_values_become_unknown():
    metrics = Metrics(label_value_limit=100, runtime_collectors=False)
    metrics.inc("events_consumed_total", event_type="", topic=None, source="s")
    assert metrics.value("events_consumed_total", event_type="unknown", topic="unknown", source="s") == 1


class TestBusinessMetrics:
    def test_kind_follows_the_name_and_values_accumulate_or_replace(self):
        metrics = Metrics(label_value_limit=100, runtime_collectors=False)
        assert metrics.record_business_metric("orders_placed_total", 2, {"region": "eu"})
        assert metrics.record_business_metric("orders_placed_total", 3, {"region": "eu"})
        assert metrics.record_business_metric("cart_value_eur", 10.5)
        assert metrics.record_business_metric("cart_value_eur", 7.25)
        assert metrics.record_business_metric("checkout_seconds", 1.2, kind="histogram")
        assert metrics.value("orders_placed_total", region="eu") == 5
        assert metrics.registry.get_sample_value("cart_value_eur") == 7.25
        assert metrics.value("checkout_seconds") == 1

    def test_misuse_is_refused_without_raising(self):
        metrics = Metrics(label_value_limit=100, runtime_collectors=False)
        assert not metrics.record_business_metric("http_requests_total", 1, {"method": "GET"})
        assert not metrics.record_business_metric("bad name", 1)
        assert not metrics.record_business_metric("ok_total", 1, {"__reserved": "x"})
        assert not Metrics(label_value_limit=100).record_business_metric("python_info", 1), "a runtime metric"
        assert metrics.record_business_metric("signups_total", 1, {"plan": "pro"})
        assert not metrics.record_business_metric("signups_total", 1, {"tier": "pro"})
        assert not metrics.record_business_metric("signups_total", 1, {"plan": "pro"}, kind="gauge")
        assert not metrics.record_business_metric("signups_total", -1, {"plan": "pro"})
        assert metrics.value("signups_total", plan="pro") == 1

    def test_values_of_other_numeric_types_are_accepted_and_non_numbers_refused(self):
        metrics = Metrics(label_value_limit=100, runtime_collectors=False)
        assert metrics.record_business_metric("revenue_total", Decimal("9.99"))  # what boto3 reads from DynamoDB
        assert metrics.record_business_metric("basket_size", "3")
        assert not metrics.record_business_metric("basket_size", None)  # type: ignore[arg-type]
        assert not metrics.record_business_metric("basket_size", "many")
        assert metrics.registry.get_sample_value("revenue_total") == pytest.approx(9.99)
        assert metrics.registry.get_sample_value("basket_size") == 3

    def test_business_label_values_are_guarded(self):
        metrics = Metrics(label_value_limit=2, runtime_collectors=False)
        for user in ("a", "b", "c", "d"):
            metrics.record_business_metric("logins_total", 1, {"user": user})
        assert metrics.value("logins_total", user="__overflow__") == 2
