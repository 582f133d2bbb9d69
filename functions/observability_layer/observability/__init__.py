"""The ObservabilityLayer: OpenTelemetry tracing (OTLP), Prometheus metrics through a Pushgateway, and
error capture (JSON logs with trace ids; Sentry when SENTRY_DSN is set) for the bus's Lambda functions.

    from observability import get_telemetry

    telemetry = get_telemetry()          # at init: reads the environment once

    @telemetry.http_handler
    def handler(event, context): ...

Heavy or optional SDKs (gRPC exporter, X-Ray propagator, sentry-sdk) load only when configured.
"""

from observability.config import EnvReader, TelemetrySettings
from observability.exceptions import ConfigError, ObservabilityError
from observability.flush import FlushReport
from observability.provider import Telemetry, capture_error, get_telemetry, record_business_metric
from observability.types import LambdaContext
from observability.wrappers import HttpRequest, parse_api_gateway_event, problem

__all__ = [
    "ConfigError",
    "EnvReader",
    "FlushReport",
    "HttpRequest",
    "LambdaContext",
    "ObservabilityError",
    "Telemetry",
    "TelemetrySettings",
    "capture_error",
    "get_telemetry",
    "parse_api_gateway_event",
    "problem",
    "record_business_metric",
]
