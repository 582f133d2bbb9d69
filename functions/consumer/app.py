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
from botocore.config import Config
from consumer.dead_letters import DeadLetterQueue
from consumer.processor import Processor
from consumer.settings import ConsumerSettings
from consumer.targets import Deliverer
from eventbus.idempotency import DynamoDBIdempotency, Idempotency, LocalIdempotency
from eventbus.kafka_settings import KafkaSettings, read_secret
from eventbus.producer import EventProducer
from observability import get_telemetry
from observability.types import LambdaContext
from opentelemetry.trace import SpanKind

telemetry = get_telemetry()
settings = ConsumerSettings.from_env()
# botocore's defaults (60 s timeouts, retries) would outlast the invocation on a slow target
aws_config = Config(
    connect_timeout=2,
    read_timeout=max(2.0, settings.webhook_timeout_s),
    retries={"max_attempts": 2, "mode": "standard"},
)
sqs = boto3.client("sqs", config=aws_config)
for unsigned in settings.unsigned_webhooks():
    telemetry.logger.warning("subscription %s posts to a webhook without a signature: no secret is set", unsigned)


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
    else LocalIdempotency(settings.idempotency_ttl_s)  # redeliveries to this environment are still skipped
)
processor = Processor(
    settings,
    telemetry,
    deliverer=Deliverer(
        sqs=sqs,
        sns=boto3.client("sns", config=aws_config),
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
