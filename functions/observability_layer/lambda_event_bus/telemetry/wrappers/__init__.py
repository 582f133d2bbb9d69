"""Wrappers for the four kinds of work: Lambda/HTTP invocations, event processing, Kafka and CDC."""

from lambda_event_bus.telemetry.wrappers.http import response_status
from lambda_event_bus.telemetry.wrappers.operations import CdcOperation, EventProcessing, KafkaOperation, Operation

__all__ = [
    "CdcOperation",
    "EventProcessing",
    "KafkaOperation",
    "Operation",
    "response_status",
]
