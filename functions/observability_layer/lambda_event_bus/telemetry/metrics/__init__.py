"""Metrics: prometheus_client on the project's own registry, pushed to a Pushgateway."""

from lambda_event_bus.telemetry.metrics.cardinality import OVERFLOW_VALUE, CardinalityGuard
from lambda_event_bus.telemetry.metrics.catalog import CATALOG, CATALOG_BY_NAME, MetricSpec
from lambda_event_bus.telemetry.metrics.pushgateway import PushgatewayExporter, new_instance_id
from lambda_event_bus.telemetry.metrics.registry import Metrics, Series

__all__ = [
    "CATALOG",
    "CATALOG_BY_NAME",
    "OVERFLOW_VALUE",
    "CardinalityGuard",
    "MetricSpec",
    "Metrics",
    "PushgatewayExporter",
    "Series",
    "new_instance_id",
]
