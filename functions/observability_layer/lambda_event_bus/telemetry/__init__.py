"""The telemetry: OpenTelemetry tracing (OTLP), Prometheus metrics through a Pushgateway, and
error capture (JSON logs with trace ids; Sentry when SENTRY_DSN is set) for the bus's Lambda functions.

    from lambda_event_bus.telemetry import get_telemetry

    telemetry = get_telemetry()          # at init: reads the environment once

    @telemetry.http_handler
    def handler(event, context): ...

Heavy or optional SDKs (gRPC exporter, X-Ray propagator, sentry-sdk) load only when configured.
"""

from lambda_event_bus.telemetry.config import TelemetrySettings
from lambda_event_bus.telemetry.exceptions import TelemetryError
from lambda_event_bus.telemetry.flush import FlushReport
from lambda_event_bus.telemetry.process import capture_error, get_telemetry, record_business_metric
from lambda_event_bus.telemetry.provider import Telemetry

__all__ = [
    "FlushReport",
    "Telemetry",
    "TelemetryError",
    "TelemetrySettings",
    "capture_error",
    "get_telemetry",
    "record_business_metric",
]
