"""KafkaConsumerFunction's settings from the environment (one-line errors naming the variable)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from observability import EnvReader

from consumer.subscriptions import Subscription, parse_subscriptions

SHIPPED_SUBSCRIPTIONS = Path(__file__).resolve().parent.parent / "subscriptions.json"


@dataclass(frozen=True)
class ConsumerSettings:
    subscriptions: tuple[Subscription, ...] = ()
    dlq_url: str | None = None
    idempotency_table: str | None = None
    idempotency_ttl_s: int = 24 * 3600
    max_delivery_attempts: int = 3
    mapping_retry_attempts: int | None = None
    """The event source mapping's MaximumRetryAttempts: on the invocation where a record has used them up, the
    consumer settles it itself (delivers, or dead-letters with the reason) rather than let the mapping's
    on-failure destination take it without one. None: the mapping retries without bound."""
    max_record_bytes: int = 1_000_000
    webhook_timeout_s: float = 2.0
    webhook_secret: str | None = None
    default_event_type: str = "kafka.record"

    def unsigned_webhooks(self) -> list[str]:
        """Webhook subscriptions that would be posted without a signature (no secret anywhere)."""
        return [
            subscription.name
            for subscription in self.subscriptions
            if subscription.target.type == "webhook" and not subscription.target.secret_arn and not self.webhook_secret
        ]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, read_parameter: Callable[[str], str] | None = None
    ) -> ConsumerSettings:
        env = EnvReader(environ)
        return cls(
            subscriptions=_subscriptions(env, read_parameter or read_ssm_parameter),
            dlq_url=env.url("DLQ_URL"),
            idempotency_table=env.raw("IDEMPOTENCY_TABLE"),
            idempotency_ttl_s=env.integer("IDEMPOTENCY_TTL_SECONDS", 24 * 3600, 1, 30 * 24 * 3600),
            max_delivery_attempts=env.integer("MAX_DELIVERY_ATTEMPTS", 3, 1, 100),
            mapping_retry_attempts=env.integer("EVENT_SOURCE_MAX_RETRY_ATTEMPTS", -1, -1, 10_000)
            if env.raw("EVENT_SOURCE_MAX_RETRY_ATTEMPTS") not in (None, "-1")
            else None,
            max_record_bytes=env.integer("MAX_RECORD_BYTES", 1_000_000, 1024, 100 * 1024 * 1024),
            webhook_timeout_s=env.integer("WEBHOOK_TIMEOUT_MS", 2000, 10, 60_000) / 1000,
            webhook_secret=env.raw("WEBHOOK_SECRET"),
            default_event_type=env.text("PLAIN_EVENT_TYPE", "kafka.record"),
        )


def _subscriptions(env: EnvReader, read_parameter: Callable[[str], str]) -> tuple[Subscription, ...]:
    """SUBSCRIPTIONS, else the SSM parameter named by SUBSCRIPTIONS_PARAMETER, else the shipped file."""
    inline = env.raw("SUBSCRIPTIONS")
    if inline:
        return parse_subscriptions(inline, "SUBSCRIPTIONS")
    parameter = env.raw("SUBSCRIPTIONS_PARAMETER")
    if parameter:
        return parse_subscriptions(read_parameter(parameter), "SUBSCRIPTIONS_PARAMETER")
    if SHIPPED_SUBSCRIPTIONS.exists():
        return parse_subscriptions(SHIPPED_SUBSCRIPTIONS.read_text(), SHIPPED_SUBSCRIPTIONS.name)
    return ()


def read_ssm_parameter(name: str) -> str:
    import boto3

    response = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)
    return str(response["Parameter"]["Value"])
