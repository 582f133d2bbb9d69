"""IngestFunction's Lambda handler (`Handler: app.handler`): CloudEvents over HTTP in, Kafka records out.

Everything is built once per execution environment, at init: the telemetry, the settings (a bad value
fails the cold start with one line naming the variable), the idempotent producer and its connection.
"""

from __future__ import annotations

from typing import Any

from ingest.api import Api
from ingest.service import IngestService
from ingest.settings import IngestSettings
from ingest.validation import SchemaRegistry
from lambda_event_bus.base import LambdaContext
from lambda_event_bus.bus.idempotency import DynamoDBIdempotency, Idempotency, NoIdempotency
from lambda_event_bus.bus.kafka_settings import KafkaSettings
from lambda_event_bus.bus.producer import EventProducer
from lambda_event_bus.telemetry import get_telemetry

telemetry = get_telemetry()
settings = IngestSettings.from_env()
producer = EventProducer(
    KafkaSettings.from_env(),
    telemetry,
    delivery_timeout_s=settings.produce_timeout_s,
    # the client's own size cap sits above MAX_EVENT_BYTES, leaving room for the trace headers it adds
    extra_config={"message.max.bytes": settings.max_event_bytes + 64 * 1024},
)
idempotency: Idempotency = (
    DynamoDBIdempotency(settings.idempotency_table, settings.idempotency_ttl_s, function_name=telemetry.function_name)
    if settings.idempotency_table
    else NoIdempotency()
)
api = Api(
    IngestService(
        settings, producer=lambda: producer, idempotency=idempotency, schemas=SchemaRegistry(settings.schemas_dir)
    ),
    telemetry,
    ping=producer.ping,
)


@telemetry.http_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.dispatch(event, context)
