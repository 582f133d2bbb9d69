"""Metrics reach a real Pushgateway: catalog names and labels under one grouping key per execution
environment, replaced whole at each flush, the last time at shutdown (the group stays)."""

from __future__ import annotations

import pytest
from lambda_event_bus.telemetry.metrics import CATALOG_BY_NAME
from support import pushgateway as gateway
from support.context import LambdaContext
from support.events import load_event

pytestmark = pytest.mark.servers

GROUPING = {"job", "function_name", "instance"}


def _mine(base_url: str, instance: str) -> list:
    return [sample for sample in gateway.samples(base_url) if sample.labels.get("instance") == instance]


def _value(samples: list, name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
            return float(sample.value)
    return None


def test_pushed_families_carry_catalog_names_labels_and_the_grouping_key(pushgateway, make_telemetry, service_name):
    telemetry = make_telemetry(PUSHGATEWAY_URL=pushgateway, AWS_LAMBDA_FUNCTION_NAME="ingest-fn")

    @telemetry.http_handler
    def handler(event, context):
        with telemetry.event_processing("order.created", "/orders"):
            with telemetry.kafka_operation("produce", "orders", 0) as produce:
                produce.record_message(512)
            telemetry.metrics.inc("events_produced_total", event_type="order.created", topic="orders", source="/orders")
        with telemetry.cdc_operation("orders-db", "orders", "update") as change:
            change.record_lag(1.5)
        telemetry.record_business_metric("orders_placed_total", 1, {"region": "eu"})
        return {"statusCode": 202, "body": "{}"}

    handler(load_event("apigw_rest_post_events"), LambdaContext(function_name="ingest-fn"))
    samples = _mine(pushgateway, telemetry.instance_id)
    key = {"job": service_name, "function_name": "ingest-fn", "instance": telemetry.instance_id}

    expected = {
        "http_requests_total": {"method": "POST", "endpoint": "/events", "status": "202"},
        "http_request_duration_seconds_count": {"method": "POST", "endpoint": "/events", "status": "202"},
        "event_processing_duration_seconds_count": {"event_type": "order.created", "source": "/orders"},
        "events_produced_total": {"event_type": "order.created", "topic": "orders", "source": "/orders"},
        "kafka_operations_total": {"operation": "produce", "topic": "orders", "status": "success"},
        "kafka_message_size_bytes_count": {"operation": "produce", "topic": "orders"},
        "cdc_events_total": {"connector": "orders-db", "table": "orders", "operation": "update"},
        "cdc_lag_seconds_count": {"connector": "orders-db", "table": "orders"},
        "lambda_cold_starts_total": {},
        "orders_placed_total": {"region": "eu"},
    }
    for name, labels in expected.items():
        assert _value(samples, name, **labels, **key) == 1, name
        sample = next(s for s in samples if s.name == name)
        catalog = CATALOG_BY_NAME.get(name.removesuffix("_count"))
        if catalog is not None:
            assert set(sample.labels) - GROUPING == set(catalog.labels), name
    assert _value(samples, "http_active_connections", **key) == 0
    assert _value(samples, "python_info", **key) == 1
    assert _value(samples, "process_resident_memory_bytes", **key) > 0
    assert _value(samples, "push_time_seconds", **key) > 0, "the Pushgateway stamps each push"


def test_each_flush_replaces_the_group_with_the_cumulative_registry(pushgateway, make_telemetry):
    telemetry = make_telemetry(PUSHGATEWAY_URL=pushgateway)
    handler = telemetry.lambda_handler(lambda event, context: None)
    for _ in range(3):
        handler({}, LambdaContext())
    samples = _mine(pushgateway, telemetry.instance_id)
    assert _value(samples, "lambda_invocations_total", outcome="success") == 3
    assert _value(samples, "lambda_cold_starts_total") == 1


def test_each_execution_environment_owns_its_group_and_pushes_its_final_values_at_shutdown(pushgateway, make_telemetry):
    first = make_telemetry(PUSHGATEWAY_URL=pushgateway, AWS_LAMBDA_FUNCTION_NAME="fn")
    second = make_telemetry(PUSHGATEWAY_URL=pushgateway, AWS_LAMBDA_FUNCTION_NAME="fn")
    assert first.instance_id != second.instance_id
    for telemetry in (first, second):
        telemetry.lambda_handler(lambda event, context: None)({}, LambdaContext())
    instances = {group["labels"].get("instance") for group in gateway.groups(pushgateway)}
    assert {first.instance_id, second.instance_id} <= instances

    first.record_business_metric("orders_after_the_last_flush", 2, kind="counter")
    first.shutdown()
    instances = {group["labels"].get("instance") for group in gateway.groups(pushgateway)}
    assert {first.instance_id, second.instance_id} <= instances, "no environment deletes its group"
    final = _mine(pushgateway, first.instance_id)
    assert any(sample.name == "orders_after_the_last_flush_total" and sample.value == 2 for sample in final)
