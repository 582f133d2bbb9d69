"""lambda_event_bus: the event bus's Lambda layer.

- `lambda_event_bus.telemetry`: OpenTelemetry traces (OTLP), Prometheus metrics (a Pushgateway, or OTLP metrics),
  error capture (JSON logs with trace ids; Sentry when SENTRY_DSN is set), flushed inside a budget.
- `lambda_event_bus.bus`: the event contract (CloudEvents over HTTP and Kafka), the Kafka producer and client
  settings, idempotency claims, dead letters, AWS clients.
- `lambda_event_bus.base`: configuration from the environment, the exception base, Lambda's and API Gateway's
  shapes.

Each package's `__all__` is what users may import. Importing this package imports none of them.
"""

__version__ = "0.1.0"
