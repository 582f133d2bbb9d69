"""KafkaConsumerFunction's Lambda handler (`Handler: app.handler`): batches from the MSK or self-managed Kafka
event source mapping in, deliveries to the subscriptions' targets out, a partial batch response back.

Built once per execution environment, at init: telemetry, settings and subscriptions (a bad value fails the
cold start with one line naming the variable), AWS clients, the Kafka producer for Kafka targets (made on
first use), and the idempotency store.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from consumer.dead_letters import DeadLetterQueue
from consumer.processor import Processor
from consumer.settings import ConsumerSettings
from consumer.targets import Deliverer
from eventbus.idempotency import DynamoDBIdempotency, Idempotency, NoIdempotency
from eventbus.kafka_settings import KafkaSettings, read_secret
from eventbus.producer import EventProducer
from observability import get_telemetry
from observability.types import LambdaContext
from opentelemetry.trace import SpanKind

telemetry = get_telemetry()
settings = ConsumerSettings.from_env()
sqs = boto3.client("sqs")


@functools.cache
def producer() -> EventProducer:
    """For subscriptions whose target is another Kafka topic; made on first use, then reused."""
    return EventProducer(KafkaSettings.from_env(), telemetry, delivery_timeout_s=settings.webhook_timeout_s)


idempotency: Idempotency = (
    DynamoDBIdempotency(
        settings.idempotency_table,
        settings.idempotency_ttl_s,
        function_name=telemetry.function_name,
        key_fields=("subscription", "source", "id"),
    )
    if settings.idempotency_table
    else NoIdempotency()
)
processor = Processor(
    settings,
    telemetry,
    deliverer=Deliverer(
        sqs=sqs,
        sns=boto3.client("sns"),
        producer=producer,
        webhook_timeout_s=settings.webhook_timeout_s,
        webhook_secret=settings.webhook_secret,
        read_secret=read_secret,
    ),
    dead_letters=DeadLetterQueue(settings.dlq_url, sqs),
    idempotency=idempotency,
)


@telemetry.lambda_handler(name="consume", kind=SpanKind.CONSUMER, trigger="pubsub")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return processor.handle(event, context)
