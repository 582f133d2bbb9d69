"""Plain values in the middle of the consumer: one event for one subscription (a `Delivery`), what became of
an attempt at it (an `Attempt`), and its lane: the events of one subscription that must keep their order."""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloudevents.core.base import BaseCloudEvent
from opentelemetry.context import Context

from consumer.decoding import RawRecord
from consumer.subscriptions import Subscription
from consumer.targets import DeliveryError


class Status(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # delivered before (its idempotency record says so)
    FAILED = "failed"  # attempted, and the target (or the idempotency store) said no
    HELD = "held"  # not attempted: behind an earlier failure of its lane, or out of time


@dataclass(frozen=True, eq=False)
class Delivery:
    """One event for one subscription: the unit that is delivered, parked for a retry or dead-lettered."""

    subscription: Subscription
    raw: RawRecord
    event: BaseCloudEvent
    parent: Context = field(default_factory=Context)  # the record's processing span: deliveries are its children

    @functools.cached_property  # looked up many times per delivery: grouping, sorting, holding
    def lane(self) -> str:
        """What the subscription's ordering promise is kept over: the record key (else its partition) for
        `ordering: key`; the event alone for `ordering: none`."""
        if self.subscription.ordering == "none":
            return f"event:{self.seq}"
        if self.raw.key is not None:  # a key's order is its topic's: the same key on two topics is two lanes
            return f"key:{self.raw.topic}:" + hashlib.sha256(self.raw.key).hexdigest()[:32]
        return f"partition:{self.raw.partition_id}"

    @functools.cached_property
    def seq(self) -> str:
        """The event's place in its lane (a key stays on its partition, so the offset orders it)."""
        return f"{self.raw.topic}/{self.raw.partition:05d}/{self.raw.offset:020d}"

    @functools.cached_property
    def idempotency_key(self) -> dict[str, str]:
        return {"subscription": self.subscription.name, "source": self.event.get_source(), "id": self.event.get_id()}


@dataclass
class Attempt:
    delivery: Delivery
    status: Status
    error: DeliveryError | None = None  # FAILED: why; HELD: why it was not attempted
    seconds: float = 0.0
    claimed: bool = False  # this invocation holds the delivery's idempotency claim (settle or release it)
    held_elsewhere: bool = False  # FAILED because another invocation holds its claim (not the target's doing)

    @property
    def done(self) -> bool:
        """Delivered now or before: nothing more to do but complete its claim."""
        return self.status in (Status.DELIVERED, Status.DUPLICATE)


def lanes(deliveries: Iterable[Delivery]) -> dict[str, list[Delivery]]:
    """The deliveries of one subscription by lane, each lane in offset order."""
    by_lane: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_lane.setdefault(delivery.lane, []).append(delivery)
    for items in by_lane.values():
        items.sort(key=lambda delivery: delivery.seq)
    return by_lane
