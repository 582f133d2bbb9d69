"""Wrappers for the four kinds of work: Lambda/HTTP invocations, event processing, Kafka and CDC."""

from observability.wrappers.http import HttpRequest, parse_api_gateway_event, problem, response_status
from observability.wrappers.operations import CdcOperation, EventProcessing, KafkaOperation, Operation

__all__ = [
    "CdcOperation",
    "EventProcessing",
    "HttpRequest",
    "KafkaOperation",
    "Operation",
    "parse_api_gateway_event",
    "problem",
    "response_status",
]
