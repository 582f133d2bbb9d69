"""CdcFunction's Lambda handler (`Handler: app.handler`): DynamoDB Streams, Kinesis (Debezium) or Kafka
(Debezium) batches in, CloudEvents on `CDC_TOPIC` out, keyed by primary key; a partial batch response back.

Built once per execution environment: telemetry, settings, the idempotent producer, the DLQ client.
"""

from __future__ import annotations

from typing import Any

from cdc.processor import CdcProcessor
from cdc.settings import CdcSettings
from lambda_event_bus.base import LambdaContext
from lambda_event_bus.bus import aws
from lambda_event_bus.bus.dead_letters import DeadLetterQueue
from lambda_event_bus.bus.kafka_settings import KafkaSettings
from lambda_event_bus.bus.producer import EventProducer
from lambda_event_bus.telemetry import get_telemetry
from opentelemetry.trace import SpanKind

telemetry = get_telemetry()
settings = CdcSettings.from_env()
processor = CdcProcessor(
    settings,
    telemetry,
    producer=EventProducer(KafkaSettings.from_env(), telemetry, delivery_timeout_s=settings.publish_timeout_s),
    dead_letters=DeadLetterQueue(
        settings.dlq_url,
        aws.client("sqs", aws.fast_config(connect_timeout=2, read_timeout=5)),
    ),
)


@telemetry.lambda_handler(name="cdc", kind=SpanKind.CONSUMER, trigger="datasource")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return processor.handle(event, context)
