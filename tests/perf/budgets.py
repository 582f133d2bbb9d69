"""The layer's cost budgets: what `make bench` reports each measured figure against.

Each is a ratio to what a team would use instead, measured side by side in the same run (fresh processes, cases
alternated, medians), or a figure over the same code with telemetry off: absolute times move by 20-30% with the
machine's load, ratios do not.
"""

from __future__ import annotations

LAYER_COLD_START_VS_OTEL = 0.7
"""A trivial handler wrapped by the layer (OTLP and Pushgateway configured, Sentry off), import + init + first
response, against the OpenTelemetry SDK + OTLP/HTTP exporter + AwsLambdaInstrumentor doing the same."""

LAYER_COLD_START_VS_COMBINED = 0.5
"""The same against the stack a team would assemble: OpenTelemetry (as above) + prometheus_client pushing to a
Pushgateway + Powertools Logger + sentry-sdk with its Lambda integration."""

FUNCTION_INIT_VS_COMBINED = 0.6
"""IngestFunction, KafkaConsumerFunction and CdcFunction in their deployed configuration: init (import and module
set-up) against the combined stack's init."""

FUNCTION_PEAK_RSS_OVER_BARE_MIB = 25.0
"""A function's peak memory after its first two requests, above a bare `python -c pass`."""

HTTP_INVOCATION_VS_OTEL = 1.2
"""One warm HTTP invocation through `@http_handler` against the OpenTelemetry instrumentor's, in-process."""

RECORD_SAMPLED_US = 30.0
RECORD_UNSAMPLED_US = 5.0
"""What the layer adds per record of a 500-record Kafka batch over the same consumer with telemetry off."""

OTLP_BYTES_PER_SPAN = 400.0
"""OTLP request bytes per span exported, single HTTP invocations included."""
