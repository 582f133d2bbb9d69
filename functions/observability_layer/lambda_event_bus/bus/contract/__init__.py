"""The event contract every function follows: CloudEvents read from HTTP and Kafka, checked by one set of rules,
and written to Kafka, SQS, SNS and webhooks; the partition key and event-type patterns.

Functions map the contract's errors to their own outcomes (ingest: 400/415 problem documents; the consumer and
CDC: dead letters with the reason).
"""

from lambda_event_bus.bus.contract.attributes import (
    ContractError,
    InvalidEventError,
    UnsupportedFormatError,
    canonical,
    describe,
    text_problem,
    timestamp,
)
from lambda_event_bus.bus.contract.event import Event, data_value, is_json_data, make_event
from lambda_event_bus.bus.contract.http import http_mode, read_binary
from lambda_event_bus.bus.contract.json_format import (
    BATCH,
    EVENT_FORMAT,
    STRUCTURED,
    read_structured,
    structured_document,
)
from lambda_event_bus.bus.contract.kafka import read_kafka, to_kafka_record
from lambda_event_bus.bus.contract.routing import TypePattern, partition_key

__all__ = [
    "BATCH",
    "EVENT_FORMAT",
    "STRUCTURED",
    "ContractError",
    "Event",
    "InvalidEventError",
    "TypePattern",
    "UnsupportedFormatError",
    "canonical",
    "data_value",
    "describe",
    "http_mode",
    "is_json_data",
    "make_event",
    "partition_key",
    "read_binary",
    "read_kafka",
    "read_structured",
    "structured_document",
    "text_problem",
    "timestamp",
    "to_kafka_record",
]
