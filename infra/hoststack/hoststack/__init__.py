"""The local stack on the host, no Docker: the real servers (a Kafka-compatible broker and its object store, an
OTLP receiver, the Pushgateway, Prometheus, LocalStack with the host executor) under one supervisor that restarts
them where their clients look for them, with its state on disk for the commands (hoststack.commands)."""
