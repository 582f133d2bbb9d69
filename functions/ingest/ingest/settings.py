"""IngestFunction's settings from the environment (one-line errors naming the variable)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lambda_event_bus.base import ConfigError, EnvReader

FUNCTION_DIR = Path(__file__).resolve().parent.parent
SHIPPED_ROUTES = FUNCTION_DIR / "routes.json"
SCHEMAS_DIR = FUNCTION_DIR / "schemas"

# Kafka's default max.message.bytes is 1,048,588: leave room for headers and the batch envelope
DEFAULT_MAX_EVENT_BYTES = 1_000_000
# API Gateway and Lambda reject larger requests before the function sees them (Lambda: 6 MB event)
DEFAULT_MAX_REQUEST_BYTES = 5 * 1024 * 1024
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_PATTERN = re.compile(r"^[^*]+\*?$|^\*$")


@dataclass(frozen=True)
class IngestSettings:
    default_topic: str = "events"
    routes: tuple[tuple[str, str], ...] = ()
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    produce_timeout_s: float = 5.0
    health_timeout_s: float = 1.0
    idempotency_table: str | None = None
    idempotency_ttl_s: int = 3600
    schemas_dir: Path = SCHEMAS_DIR
    demo_routes: bool = False
    """The demo routes (/api/events, /api/kafka, /api/cdc, /api/error): DEMO_ROUTES=enabled; off unless asked for,
    since /api/kafka produces to any topic its caller names."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IngestSettings:
        env = EnvReader(environ)
        default_topic = env.text("DEFAULT_TOPIC", "events")
        if not _TOPIC.match(default_topic):
            raise ConfigError("DEFAULT_TOPIC", default_topic, "a Kafka topic name ([a-zA-Z0-9._-], 1-249 chars)")
        raw_routes = env.raw("TOPIC_ROUTES")
        return cls(
            default_topic=default_topic,
            routes=parse_routes(raw_routes, "TOPIC_ROUTES") if raw_routes else load_shipped_routes(),
            max_event_bytes=env.integer("MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES, 1024, 100 * 1024 * 1024),
            max_request_bytes=env.integer("MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, 1024, 100 * 1024 * 1024),
            produce_timeout_s=env.integer("PRODUCE_TIMEOUT_MS", 5000, 10, 900_000) / 1000,
            health_timeout_s=env.integer("HEALTH_TIMEOUT_MS", 1000, 10, 60_000) / 1000,
            idempotency_table=env.raw("IDEMPOTENCY_TABLE"),
            idempotency_ttl_s=env.integer("IDEMPOTENCY_TTL_SECONDS", 3600, 1, 30 * 24 * 3600),
            demo_routes=env.choice("DEMO_ROUTES", ("enabled", "disabled"), "disabled") == "enabled",
        )


def parse_routes(text: str, variable: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of event-type pattern (exact, or a prefix ending in `*`) -> topic."""
    expected = 'a JSON object of event-type pattern (exact or prefix*) -> topic, like {"com.example.*": "orders"}'
    try:
        routes = json.loads(text)
    except ValueError:
        routes = None
    if not isinstance(routes, dict) or not all(
        isinstance(pattern, str) and _PATTERN.match(pattern) and isinstance(topic, str) and _TOPIC.match(topic)
        for pattern, topic in routes.items()
    ):
        raise ConfigError(variable, text, expected)
    return tuple(routes.items())


def load_shipped_routes() -> tuple[tuple[str, str], ...]:
    if not SHIPPED_ROUTES.exists():
        return ()
    return parse_routes(SHIPPED_ROUTES.read_text(), str(SHIPPED_ROUTES.name))
