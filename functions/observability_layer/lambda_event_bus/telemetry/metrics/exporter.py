"""Where this environment's metrics go: a Pushgateway group of its own (OTEL_METRICS_EXPORTER=prometheus with
PUSHGATEWAY_URL), OTLP/HTTP metrics to a collector (`otlp`), or nowhere (`none`, telemetry disabled, or no URL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from lambda_event_bus.telemetry.metrics.pushgateway import PushgatewayExporter

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue
    from prometheus_client import CollectorRegistry

    from lambda_event_bus.telemetry.config import TelemetrySettings


class MetricsExporter(Protocol):
    """Sends the whole registry of this environment (a Pushgateway PUT, an OTLP metrics POST)."""

    def push(self, timeout: float) -> None: ...

    def rename(self, instance: str) -> None: ...

    def close(self) -> None: ...


def metrics_exporter_for(
    settings: TelemetrySettings,
    registry: CollectorRegistry,
    *,
    function_name: str,
    instance_id: str,
    resource_attributes: Mapping[str, AttributeValue],
) -> tuple[MetricsExporter | None, str]:
    """(the exporter or None, the backend's name in the flush and its metrics: `pushgateway` or `otlp_metrics`).
    The OTLP exporter's modules are imported only when it is chosen."""
    if settings.disabled or settings.metrics_exporter == "none":
        return None, "pushgateway"
    if settings.metrics_exporter == "otlp":
        from lambda_event_bus.telemetry.metrics.otlp import OtlpMetricsExporter, resource_for_metrics
        from lambda_event_bus.telemetry.tracing.otlp_http import tls_context

        exporter = OtlpMetricsExporter(
            settings.otlp_metrics_endpoint,
            registry=registry,
            resource_attributes=resource_for_metrics(resource_attributes, instance_id),
            headers=settings.otlp_metrics_headers,
            compression=settings.otlp_metrics_compression,
            ssl_context=tls_context(
                settings.otlp_certificate, settings.otlp_client_certificate, settings.otlp_client_key
            ),
        )
        return exporter, "otlp_metrics"
    if not settings.pushgateway_url:
        return None, "pushgateway"
    pushgateway = PushgatewayExporter(
        settings.pushgateway_url,
        job=settings.service_name,
        function_name=function_name,
        instance=instance_id,
        registry=registry,
    )
    return pushgateway, "pushgateway"
