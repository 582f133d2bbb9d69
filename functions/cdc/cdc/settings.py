"""CdcFunction's settings from the environment (one-line errors naming the variable)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lambda_event_bus.base import ConfigError, EnvReader

_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_PREFIX = re.compile(r"^[a-zA-Z0-9._-]{1,100}$")


@dataclass(frozen=True)
class CdcSettings:
    topic: str = "cdc-events"
    event_type_prefix: str = "cdc"
    dlq_url: str | None = None
    publish_timeout_s: float = 5.0
    dynamodb_connector: str = "dynamodb"
    traceparent_attribute: str = "traceparent"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CdcSettings:
        env = EnvReader(environ)
        topic = env.text("CDC_TOPIC", "cdc-events")
        if not _TOPIC.match(topic):
            raise ConfigError("CDC_TOPIC", topic, "a Kafka topic name ([a-zA-Z0-9._-], 1-249 chars)")
        prefix = env.text("CDC_EVENT_TYPE_PREFIX", "cdc")
        if not _PREFIX.match(prefix):
            raise ConfigError("CDC_EVENT_TYPE_PREFIX", prefix, "an event type prefix ([a-zA-Z0-9._-])")
        return cls(
            topic=topic,
            event_type_prefix=prefix,
            dlq_url=env.url("DLQ_URL"),
            publish_timeout_s=env.integer("PUBLISH_TIMEOUT_MS", 5000, 10, 900_000) / 1000,
            dynamodb_connector=env.text("CDC_DYNAMODB_CONNECTOR", "dynamodb"),
            traceparent_attribute=env.text("CDC_TRACEPARENT_COLUMN", "traceparent"),
        )
