"""Subscriptions: which events go where, with each subscription's own delivery promises (ordering, retry
policy, concurrency). Matching is plain logic on CloudEvent attributes."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from lambda_event_bus.base import ConfigError
from lambda_event_bus.bus.contract import TypePattern, canonical

TARGET_TYPES = {"sqs": "url", "sns": "arn", "webhook": "url", "kafka": "topic"}
ORDERINGS = ("key", "none")
MAX_EVENT_AGE_S = 24 * 3600  # EventBridge's default and ceiling: a day
MAX_RETRY_ATTEMPTS = 185  # EventBridge's default and ceiling
MAX_CONCURRENCY = 64


@dataclass(frozen=True)
class RetryPolicy:
    """How long a failing delivery is retried (EventBridge's names and defaults): until the event is
    `maximum_event_age_s` old or `maximum_retry_attempts` retries failed, whichever comes first."""

    maximum_event_age_s: int = MAX_EVENT_AGE_S
    maximum_retry_attempts: int = MAX_RETRY_ATTEMPTS


@dataclass(frozen=True)
class Target:
    type: str
    address: str  # the SQS queue URL, SNS topic ARN, webhook URL or Kafka topic
    secret_arn: str | None = None  # webhooks: a Secrets Manager secret to sign with (else WEBHOOK_SECRET)


@dataclass(frozen=True)
class Subscription:
    name: str
    event_type: str  # exact, or a prefix ending in `*`
    target: Target
    source: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    ordering: str = "key"
    """`key`: a later event of a key never reaches the target before an earlier one it has not had yet (the
    Kafka record key; records without one are ordered by partition). `none`: failures hold nothing back."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrency: int = 16
    """Webhooks: requests in flight at once (one key's events are still sent one after another)."""
    _pattern: TypePattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", TypePattern(self.event_type))

    def matches(self, event: BaseCloudEvent) -> bool:
        if not self._pattern.matches(event.get_type()):
            return False
        if self.source is not None and event.get_source() != self.source:
            return False
        attributes = event.get_attributes()
        return all(
            name in attributes and canonical(attributes[name]) == value for name, value in self.attributes.items()
        )


def parse_subscriptions(text: str, origin: str) -> tuple[Subscription, ...]:
    """The SUBSCRIPTIONS format of ARCHITECTURE.md; a bad entry fails start-up naming `origin` and the entry."""
    expected = (
        'a JSON list of {"name", "match": {"type", "source"?, "attributes"?}, '
        '"target": {"type": sqs|sns|webhook|kafka, "url"|"arn"|"topic"}, "ordering"?: key|none, '
        '"retry_policy"?: {"maximum_event_age_seconds"?, "maximum_retry_attempts"?}, "max_concurrency"?}'
    )
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list):
        raise ConfigError(origin, text, expected)
    subscriptions = [_subscription(item, index, origin, expected) for index, item in enumerate(items)]
    names = [subscription.name for subscription in subscriptions]
    if len(set(names)) != len(names):
        raise ConfigError(origin, text, "subscription names that are unique")
    return tuple(subscriptions)


def _subscription(item: Any, index: int, origin: str, expected: str) -> Subscription:  # noqa: ANN401 - JSON
    def fail(why: str) -> ConfigError:
        return ConfigError(origin, json.dumps(item)[:200], f"{expected} (item {index}: {why})")

    if not isinstance(item, Mapping):
        raise fail("not an object")
    name, match, target = item.get("name"), item.get("match"), item.get("target")
    if not isinstance(name, str) or not name:
        raise fail("name must be a non-empty string")
    if not isinstance(match, Mapping) or not isinstance(match.get("type"), str) or not match["type"]:
        raise fail("match.type must be a non-empty string")
    if "*" in match["type"][:-1]:
        raise fail("match.type may only end in *")
    source = match.get("source")
    if source is not None and not isinstance(source, str):
        raise fail("match.source must be a string")
    attributes = match.get("attributes", {})
    if not isinstance(attributes, Mapping) or not all(isinstance(v, (str, int, bool)) for v in attributes.values()):
        raise fail("match.attributes must map names to strings, integers or booleans")
    if not isinstance(target, Mapping) or target.get("type") not in TARGET_TYPES:
        raise fail("target.type must be one of " + ", ".join(TARGET_TYPES))
    address = target.get(TARGET_TYPES[target["type"]])
    if not isinstance(address, str) or not address:
        raise fail(f"a {target['type']} target needs {TARGET_TYPES[target['type']]!r}")
    ordering = item.get("ordering", "key")
    if ordering not in ORDERINGS:
        raise fail("ordering must be one of " + ", ".join(ORDERINGS))
    concurrency = item.get("max_concurrency", 16)
    if not _is_int(concurrency) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise fail(f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}")
    return Subscription(
        name=name,
        event_type=match["type"],
        source=source,
        attributes={key: canonical(value) for key, value in attributes.items()},
        target=Target(target["type"], address, target.get("secret_arn")),
        ordering=ordering,
        retry=_retry_policy(item.get("retry_policy", {}), fail),
        max_concurrency=concurrency,
    )


def _retry_policy(policy: object, fail: Callable[[str], ConfigError]) -> RetryPolicy:
    if not isinstance(policy, Mapping) or set(policy) - {"maximum_event_age_seconds", "maximum_retry_attempts"}:
        raise fail("retry_policy takes maximum_event_age_seconds and maximum_retry_attempts")
    age = policy.get("maximum_event_age_seconds", MAX_EVENT_AGE_S)
    attempts = policy.get("maximum_retry_attempts", MAX_RETRY_ATTEMPTS)
    if not _is_int(age) or not 60 <= age <= MAX_EVENT_AGE_S:
        raise fail(f"retry_policy.maximum_event_age_seconds must be an integer from 60 to {MAX_EVENT_AGE_S}")
    if not _is_int(attempts) or not 0 <= attempts <= MAX_RETRY_ATTEMPTS:
        raise fail(f"retry_policy.maximum_retry_attempts must be an integer from 0 to {MAX_RETRY_ATTEMPTS}")
    return RetryPolicy(maximum_event_age_s=age, maximum_retry_attempts=attempts)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def matching(subscriptions: Sequence[Subscription], event: BaseCloudEvent) -> list[Subscription]:
    return [subscription for subscription in subscriptions if subscription.matches(event)]
