"""KafkaConsumerFunction's Lambda handler (`Handler: app.handler`), for its two event sources:

- batches from the MSK or self-managed Kafka event source mapping: deliveries to the subscriptions' targets,
  failed ones parked in the retry queue, a partial batch response back (`consume`);
- batches from the retry queue (SQS): each parked delivery tried again when its delay ends (`retry`).

Built once per execution environment, at init: telemetry, settings and subscriptions (a bad value fails the
cold start with one line naming the variable), AWS clients (SNS's only when a subscription targets SNS), the Kafka
producer for Kafka targets (made on first use), the idempotency store and the lane store (both in
IDEMPOTENCY_TABLE).
"""

from __future__ import annotations

import functools
from typing import Any

from consumer.dead_letters import DeadLetterQueue
from consumer.engine import DeliveryEngine
from consumer.lanes import DynamoDBLanes, Lanes, NoLanes
from consumer.parking import RetryQueue
from consumer.processor import Processor
from consumer.retrier import Retrier
from consumer.settings import ConsumerSettings
from consumer.targets import Deliverer
from lambda_event_bus.base import LambdaContext
from lambda_event_bus.bus import aws
from lambda_event_bus.bus.idempotency import DynamoDBIdempotency, Idempotency, LocalIdempotency
from lambda_event_bus.bus.kafka_settings import KafkaSettings, read_secret
from lambda_event_bus.bus.producer import EventProducer
from lambda_event_bus.telemetry import get_telemetry
from opentelemetry.trace import SpanKind

telemetry = get_telemetry()
settings = ConsumerSettings.from_env()
# botocore's defaults (60 s timeouts, retries) would outlast the invocation on a slow target
aws_config = aws.fast_config(connect_timeout=2, read_timeout=max(2.0, settings.webhook_timeout_s))
sqs = aws.client("sqs", aws_config)
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
        # one namespace for both functions: a delivery done by either is done
        function_name="delivery",
        key_fields=("subscription", "source", "id"),
    )
    if settings.idempotency_table
    else LocalIdempotency(settings.idempotency_ttl_s)  # redeliveries to this environment are still skipped
)
lanes: Lanes = (
    DynamoDBLanes(settings.idempotency_table, settings.idempotency_ttl_s) if settings.idempotency_table else NoLanes()
)
deliverer = Deliverer(
    sqs=sqs,
    sns=aws.client("sns", aws_config) if settings.targets("sns") else None,  # ~10 ms and ~1 MiB when unused
    producer=producer,
    webhook_timeout_s=settings.webhook_timeout_s,
    webhook_secret=settings.webhook_secret,
    read_secret=read_secret,
)
engine = DeliveryEngine(deliverer, idempotency, telemetry)
retry_queue = RetryQueue(settings.retry_queue_url, sqs)
dead_letters = DeadLetterQueue(settings.dlq_url, sqs)
processor = Processor(
    settings,
    telemetry,
    deliverer=deliverer,
    dead_letters=dead_letters,
    idempotency=idempotency,
    retry_queue=retry_queue,
    lanes=lanes,
    engine=engine,
)
retrier = Retrier(settings, telemetry, engine=engine, settler=processor.settler)
if not settings.retry_queue_url:
    telemetry.logger.warning("no RETRY_QUEUE_URL: a delivery that fails is dead-lettered at once")


@telemetry.lambda_handler(name="consume", kind=SpanKind.CONSUMER, trigger="pubsub")
def consume(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return processor.handle(event, context)


@telemetry.lambda_handler(name="retry", kind=SpanKind.CONSUMER, trigger="pubsub")
def retry(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return retrier.handle(event, context)


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A retry queue batch (SQS records) or a Kafka batch."""
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        return retry(event, context)
    return consume(event, context)
