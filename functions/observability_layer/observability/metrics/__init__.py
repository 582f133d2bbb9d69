"""Metrics: prometheus_client on the project's own registry, pushed to a Pushgateway."""

from observability.metrics.cardinality import OVERFLOW_VALUE, CardinalityGuard
from observability.metrics.catalog import CATALOG, CATALOG_BY_NAME, MetricSpec
from observability.metrics.pushgateway import PushgatewayExporter, new_instance_id
from observability.metrics.registry import Metrics, Series

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
