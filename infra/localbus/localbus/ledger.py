"""A ground-truth ledger for runs against the deployed bus: every event id sent, what the front door answered, and
where each accepted event ended for each subscription it matches (delivered, dead-lettered with the reason).

The fault suite and load runs send order events (`com.example.order.created`), which the local deploy routes to two
subscriptions: `orders-to-fulfilment` (the SQS queue) and `orders-webhook` (the signed webhook). A client behaves
as a careful client of any HTTP API would: it retries a 503 or 409 after Retry-After, a bounded number of times,
with the same event id. Reconciling reads the webhook receiver's record, the queue and the DLQ (the queue and the
DLQ are drained: each message is counted once) and says, per event and subscription:

- delivered (exactly once is the promise; more is a duplicate),
- dead-lettered with its reason (a letter without one is `reasonless`: the Kafka trigger's on-failure letters,
  the mapping's last resort, name a condition such as RetryAttemptsExhausted but no reason),
- or missing (`lost` once the wait is over).

Events the bus never acknowledged are the client's to retry; they are `refused`, not lost, unless they arrive anyway
(`unacknowledged_delivered`: the broker had them when the answer was 503, which the API documents as possible).
"""

from __future__ import annotations

import base64
import json
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from localbus.client import HttpAnswer, LocalBus
from localbus.wiring import BRIEF_WINDOW, BRIEF_WINDOW_PATH

ORDER_TYPE = "com.example.order.created"
QUEUE, WEBHOOK = "orders-to-fulfilment", "orders-webhook"
SUBSCRIPTIONS = (QUEUE, WEBHOOK)
WEBHOOK_PATHS = {"/hooks/bus": WEBHOOK, f"/hooks/bus{BRIEF_WINDOW_PATH}": BRIEF_WINDOW}  # receiver path -> name
RETRYABLE = (409, 503)
MAX_RETRY_AFTER_S = 20.0  # a client honours Retry-After (a claim held by a request that timed out: its hold)


@dataclass
class Sent:
    """One event as its client saw it: every answer's status and how long it took."""

    id: str
    statuses: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return 202 in self.statuses


@dataclass
class Ending:
    """Where one event ended for one subscription."""

    delivered: int = 0
    dead_letters: list[str] = field(default_factory=list)  # their reasons ("" when a letter gave none)

    @property
    def ended(self) -> bool:
        return bool(self.delivered or self.dead_letters)


@dataclass
class Reconciliation:
    scenario: str
    sent: list[Sent]
    endings: dict[tuple[str, str], Ending]  # (event id, subscription) -> where it ended
    stray_letters: int  # dead letters for events of this ledger the consumer could not attribute to a subscription
    waited_s: float
    missing_spans: int = 0  # (event, function) pairs whose spans never reached the collector, when checked
    broken: list[str] = field(default_factory=list)  # a scenario's own promises that did not hold

    @property
    def accepted(self) -> list[Sent]:
        return [sent for sent in self.sent if sent.accepted]

    def delivered(self, subscription: str) -> int:
        return sum(1 for (_, name), ending in self.endings.items() if name == subscription and ending.delivered)

    def dead_lettered(self, subscription: str) -> int:
        return sum(
            1
            for (_, name), ending in self.endings.items()
            if name == subscription and ending.dead_letters and not ending.delivered
        )

    @property
    def lost(self) -> list[tuple[str, str]]:
        accepted = {sent.id for sent in self.accepted}
        return [
            (event_id, name)
            for (event_id, name), ending in self.endings.items()
            if event_id in accepted and not ending.ended
        ]

    @property
    def duplicated(self) -> list[tuple[str, str]]:
        return [key for key, ending in self.endings.items() if ending.delivered + len(ending.dead_letters) > 1]

    @property
    def reasonless(self) -> list[tuple[str, str]]:
        return [key for key, ending in self.endings.items() if any(not reason for reason in ending.dead_letters)]

    @property
    def server_errors(self) -> int:
        return sum(1 for sent in self.sent for status in sent.statuses if status >= 500 and status != 503)

    @property
    def unacknowledged_delivered(self) -> int:
        refused = {sent.id for sent in self.sent if not sent.accepted}
        arrived = {event_id for (event_id, _), ending in self.endings.items() if ending.delivered}
        return len(refused & arrived)

    @property
    def p99_answer_s(self) -> float:
        times = sorted(second for sent in self.sent for second in sent.seconds)
        if not times:
            return 0.0
        return times[min(len(times) - 1, int(len(times) * 0.99))]

    def problems(self) -> list[str]:
        """What breaks the promise: empty when every accepted event ended, once, with a reason if dead-lettered."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} lost (event, subscription), e.g. {self.lost[:3]}")
        if self.duplicated:
            found.append(f"{len(self.duplicated)} duplicated, e.g. {self.duplicated[:3]}")
        if self.reasonless:
            found.append(f"{len(self.reasonless)} dead-lettered without a reason, e.g. {self.reasonless[:3]}")
        if self.stray_letters:
            found.append(f"{self.stray_letters} dead letters not attributed to a subscription")
        if self.server_errors:
            found.append(f"{self.server_errors} answers were 5xx other than 503")
        if self.missing_spans:
            found.append(f"{self.missing_spans} (event, function) spans never reached the collector")
        return found + self.broken

    HEADER = (
        "| scenario | sent | accepted | delivered (queue / webhook) | dead-lettered (queue / webhook) "
        "| lost | duplicated | reasonless | 5xx | p99 answer |"
    )

    def row(self) -> str:
        return (
            f"| {self.scenario} | {len(self.sent)} | {len(self.accepted)} "
            f"| {self.delivered(QUEUE)} / {self.delivered(WEBHOOK)} "
            f"| {self.dead_lettered(QUEUE)} / {self.dead_lettered(WEBHOOK)} "
            f"| {len(self.lost)} | {len(self.duplicated)} | {len(self.reasonless) + self.stray_letters} "
            f"| {self.server_errors} | {self.p99_answer_s:.2f} s |"
        )

    @property
    def median_answer_s(self) -> float:
        times = [second for sent in self.sent for second in sent.seconds]
        return statistics.median(times) if times else 0.0


class Ledger:
    def __init__(self, bus: LocalBus, scenario: str, subscriptions: tuple[str, ...] = SUBSCRIPTIONS) -> None:
        self.bus = bus
        self.scenario = scenario
        self.subscriptions = subscriptions  # the ones its events match (the queue's and the webhook's paths')
        self.sent: dict[str, Sent] = {}
        self._lock = threading.Lock()
        self._queue_ids: Counter[str] = Counter()
        self._letters: list[dict[str, Any]] = []
        self.other_letters: list[dict[str, Any]] = []  # drained from the DLQ, about no event of this ledger

    def new_ids(self, count: int) -> list[str]:
        return [f"{self.scenario}-{uuid.uuid4()}" for _ in range(count)]

    def send(self, count: int, *, clients: int = 8, retries: int = 3, pace_s: float = 0.0) -> list[Sent]:
        """POST `count` order events through API Gateway from `clients` concurrent clients."""
        ids = self.new_ids(count)
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(lambda event_id: self.send_one(event_id, retries=retries, pace_s=pace_s), ids))

    def send_keyed(self, keys: int, per_key: int, *, clients: int = 8) -> dict[str, list[str]]:
        """`per_key` events for each of `keys` partition keys, each key's one after another (the next is sent
        once the last was accepted, so the broker has them in that order), keys from `clients` concurrent
        clients. Returns each key's event ids in the order they were sent."""
        names = [f"{self.scenario}-key-{index}" for index in range(keys)]
        order = {key: self.new_ids(per_key) for key in names}

        def one_key(key: str) -> None:
            for event_id in order[key]:
                self.send_one(event_id, partition_key=key)

        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(one_key, names))
        return order

    def send_one(self, event_id: str, *, retries: int = 3, pace_s: float = 0.0, partition_key: str = "") -> Sent:
        sent = Sent(event_id)
        with self._lock:
            self.sent[event_id] = sent
        event = {
            "specversion": "1.0",
            "id": event_id,
            "type": ORDER_TYPE,
            "source": f"/ledger/{self.scenario}",
            "data": {"order_id": event_id[-12:], "amount": 1, "currency": "EUR"},
        }
        if partition_key:
            event["partitionkey"] = partition_key
        for attempt in range(retries + 1):
            started = time.monotonic()
            answer = self._post(event)
            sent.statuses.append(answer.status)
            sent.seconds.append(time.monotonic() - started)
            if answer.status not in RETRYABLE or attempt == retries:
                break
            time.sleep(min(MAX_RETRY_AFTER_S, _retry_after(answer)))
        if pace_s:
            time.sleep(pace_s)
        return sent

    def _post(self, event: Mapping[str, Any]) -> HttpAnswer:
        try:
            return self.bus.http("POST", "/events", event)
        except OSError:  # the gateway itself did not answer: as a client sees a 503
            return HttpAnswer(503, {}, None)

    def reconcile(self, *, timeout_s: float = 90.0, quiet_s: float = 3.0) -> Reconciliation:
        """Wait until every accepted event ended for both subscriptions (or `timeout_s`), then say where each is.
        After everything is accounted for, it keeps reading for `quiet_s` more, so late duplicates show."""
        started = time.monotonic()
        settled_at: float | None = None
        while True:
            endings = self._read()
            done = all(
                endings[(sent.id, name)].ended
                for sent in self.sent.values()
                if sent.accepted
                for name in self.subscriptions
            )
            now = time.monotonic()
            if done and settled_at is None:
                settled_at = now
            if (settled_at is not None and now - settled_at >= quiet_s) or now - started > timeout_s:
                break
            time.sleep(0.5)
        stray = sum(1 for letter in self._letters if not _letter_subscription(letter))
        return Reconciliation(self.scenario, list(self.sent.values()), endings, stray, time.monotonic() - started)

    def ended(self, subscription: str) -> int:
        """How many accepted events have ended (delivered or dead-lettered) for `subscription` so far."""
        endings = self._read()
        return sum(1 for sent in self.sent.values() if sent.accepted and endings[(sent.id, subscription)].ended)

    def webhook_order(self, subscription: str = WEBHOOK) -> list[str]:
        """This ledger's event ids as `subscription`'s webhook path took them (2xx), in the order they came."""
        return [
            delivery["event"]["id"]
            for delivery in self.bus.webhook_deliveries()
            if delivery["event"].get("id") in self.sent
            and WEBHOOK_PATHS.get(delivery.get("path", "/hooks/bus"), WEBHOOK) == subscription
            and 200 <= int(delivery.get("status", 0)) < 300
        ]

    def _read(self) -> dict[tuple[str, str], Ending]:
        mine = set(self.sent)
        endings = {(event_id, name): Ending() for event_id in mine for name in self.subscriptions}
        for delivery in self.bus.webhook_deliveries():
            event_id = delivery["event"].get("id")
            name = WEBHOOK_PATHS.get(delivery.get("path", "/hooks/bus"), WEBHOOK)
            if event_id in mine and 200 <= int(delivery.get("status", 0)) < 300:
                endings.setdefault((event_id, name), Ending()).delivered += 1  # an unexpected one shows too
        for message in self.bus.queue_messages(self.bus.fulfilment_queue, wait_s=0):
            event_id = json.loads(message["Body"]).get("id")
            if event_id in mine:
                self._queue_ids[event_id] += 1
        for event_id, count in self._queue_ids.items():
            endings[(event_id, QUEUE)].delivered = count
        for message in self.bus.queue_messages(self.bus.dead_letter_queue, wait_s=0):
            letter = json.loads(message["Body"])
            (self._letters if _letter_event_ids(letter) & mine else self.other_letters).append(letter)
        for letter in self._letters:
            subscription = _letter_subscription(letter)
            for event_id in _letter_event_ids(letter) & mine:
                names = [subscription] if subscription in self.subscriptions else list(self.subscriptions)
                for name in names:
                    endings[(event_id, name)].dead_letters.append(str(letter.get("reason") or ""))
        return endings


def _retry_after(answer: HttpAnswer) -> float:
    try:
        return float(answer.headers.get("retry-after", "1"))
    except ValueError:
        return 1.0


def _letter_subscription(letter: Mapping[str, Any]) -> str | None:
    subscription = letter.get("subscription")
    return subscription if isinstance(subscription, str) else None


def _letter_event_ids(letter: Mapping[str, Any]) -> set[str]:
    """The event ids a dead letter is about: the consumer's (`event.id`, or a record's `ce_id` header) or the
    Kafka trigger's on-failure letters (records with their headers)."""
    ids: set[str] = set()
    event = letter.get("event")
    if isinstance(event, Mapping) and isinstance(event.get("id"), str):
        ids.add(event["id"])
    for headers in _header_lists(letter):
        for name, value in headers:
            if name == "ce_id":
                ids.add(value)
    return ids


def _header_lists(letter: Mapping[str, Any]) -> Iterable[list[tuple[str, str]]]:
    headers = letter.get("headers")
    if isinstance(headers, list):
        yield [(str(pair[0]), _b64(pair[1])) for pair in headers if isinstance(pair, list) and len(pair) == 2]
    payload = letter.get("payload")  # the Kafka trigger's on-failure letter carries the mapping's event
    batches = payload.get("records") if isinstance(payload, Mapping) else None
    if isinstance(batches, Mapping):
        for records in batches.values():
            for record in records if isinstance(records, list) else []:
                found = []
                for header in record.get("headers", []) if isinstance(record, Mapping) else []:
                    for name, value in header.items():
                        found.append((name, bytes(value).decode(errors="replace") if isinstance(value, list) else ""))
                yield found


def _b64(value: object) -> str:
    try:
        return base64.b64decode(str(value)).decode(errors="replace")
    except ValueError:
        return ""
