"""KafkaConsumerFunction's settings from the environment (one-line errors naming the variable)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lambda_event_bus.base import EnvReader

from consumer.subscriptions import Subscription, parse_subscriptions

SHIPPED_SUBSCRIPTIONS = Path(__file__).resolve().parent.parent / "subscriptions.json"


@dataclass(frozen=True)
class ConsumerSettings:
    subscriptions: tuple[Subscription, ...] = ()
    dlq_url: str | None = None
    idempotency_table: str | None = None
    idempotency_ttl_s: int = 2 * 24 * 3600
    retry_queue_url: str | None = None
    """The SQS queue where failed deliveries wait for their retry (drained by the same function's SQS event);
    unset: a delivery that fails is dead-lettered at once, with the reason."""
    retry_base_delay_s: float = 1.0
    retry_max_delay_s: int = 900
    max_record_bytes: int = 1_000_000
    webhook_timeout_s: float = 2.0
    webhook_secret: str | None = None
    default_event_type: str = "kafka.record"

    def targets(self, target_type: str) -> bool:
        """Whether any subscription delivers to a target of this type (its client is made only then)."""
        return any(subscription.target.type == target_type for subscription in self.subscriptions)

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
            # a delivery record outlives every retry of it: the retry window is a day at most
            idempotency_ttl_s=env.integer("IDEMPOTENCY_TTL_SECONDS", 2 * 24 * 3600, 1, 30 * 24 * 3600),
            retry_queue_url=env.url("RETRY_QUEUE_URL"),
            retry_base_delay_s=env.number("RETRY_BASE_DELAY_SECONDS", 1.0, 0.0, 900.0),
            retry_max_delay_s=env.integer("RETRY_MAX_DELAY_SECONDS", 900, 1, 900),
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
    from lambda_event_bus.bus import aws

    response = aws.client("ssm").get_parameter(Name=name, WithDecryption=True)
    return str(response["Parameter"]["Value"])
