"""The bus's shared pieces, used by every function that talks to Kafka: client settings (plaintext, TLS,
SASL/SCRAM, MSK IAM), a producer that reports per-record delivery inside a deadline, and the CloudEvents
Kafka binding. Lives in the ObservabilityLayer's folder so that functions share one layer; it depends on
`lambda_event_bus.telemetry`, never the other way round."""

from lambda_event_bus.bus.exceptions import BusError

__all__ = ["BusError", "aws", "contract", "dead_letters", "idempotency", "kafka_settings", "producer", "records"]
