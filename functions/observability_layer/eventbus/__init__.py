"""The bus's shared pieces, used by every function that talks to Kafka: client settings (plaintext, TLS,
SASL/SCRAM, MSK IAM), a producer that reports per-record delivery inside a deadline, and the CloudEvents
Kafka binding. Lives in the ObservabilityLayer's folder so that functions share one layer; it depends on
`observability`, never the other way round."""
