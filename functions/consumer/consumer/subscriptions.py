"""Subscriptions: which events go where. Matching is plain logic on CloudEvent attributes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from observability import ConfigError

TARGET_TYPES = {"sqs": "url", "sns": "arn", "webhook": "url", "kafka": "topic"}


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

    def matches(self, event: BaseCloudEvent) -> bool:
        event_type = event.get_type()
        if self.event_type.endswith("*"):
            if not event_type.startswith(self.event_type[:-1]):
                return False
        elif event_type != self.event_type:
            return False
        if self.source is not None and event.get_source() != self.source:
            return False
        attributes = event.get_attributes()
        return all(
            name in attributes and _canonical(attributes[name]) == value for name, value in self.attributes.items()
        )


def parse_subscriptions(text: str, origin: str) -> tuple[Subscription, ...]:
    """The SUBSCRIPTIONS format of ARCHITECTURE.md; a bad entry fails start-up naming `origin` and the entry."""
    expected = (
        'a JSON list of {"name", "match": {"type", "source"?, "attributes"?}, '
        '"target": {"type": sqs|sns|webhook|kafka, "url"|"arn"|"topic"}}'
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
    return Subscription(
        name=name,
        event_type=match["type"],
        source=source,
        attributes={key: _canonical(value) for key, value in attributes.items()},
        target=Target(target["type"], address, target.get("secret_arn")),
    )


def _canonical(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matching(subscriptions: Sequence[Subscription], event: BaseCloudEvent) -> list[Subscription]:
    return [subscription for subscription in subscriptions if subscription.matches(event)]
