"""The delivery engine's promises, in-process against real servers (a webhook receiver that fails on command,
moto's SQS and DynamoDB, the broker for Kafka targets), each test keeping a ledger: every event sent ends
delivered to each subscription it matches, or dead-lettered with a reason, exactly once.

- A failing subscription delays and dead-letters nobody else's deliveries.
- `ordering: key` never lets a later event of a key overtake an earlier one, across batches and retries,
  while other keys flow; `ordering: none` holds nothing back.
- Retries back off through the retry queue (the retry function is the same handler, fed SQS batches, in a
  fresh execution environment: the state that matters is in SQS and DynamoDB) and end, when the policy is used
  up, in one dead letter per subscription with the reason, the attempts and the last error.
- SQS targets get SendMessageBatch calls; webhooks keep their connections alive.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from localbus.webhook import WebhookReceiver
from samhost.kafka_events import lambda_event
from support.consumer import Aws, consumer_env, load_consumer, raw_record
from support.context import LambdaContext
from support.sqs import drain

pytestmark = pytest.mark.servers


def cloud_event(event_id: str, event_type: str = "com.example.order.created") -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "type": event_type, "source": "/shop", "data": {"n": event_id}}


def batch(events: list[tuple[str, str]], first_offset: int = 0, topic: str = "orders") -> dict[str, Any]:
    """(event id, key) pairs as one partition's records, in order."""
    return lambda_event(
        [
            raw_record(topic, first_offset + n, json.dumps(cloud_event(event_id)).encode(), key=key.encode())
            for n, (event_id, key) in enumerate(events)
        ]
    )


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "hook", "match": {"type": "*"}, "target": {"type": "webhook", "url": url}, **extra}


def queue(aws: Aws) -> dict[str, Any]:
    return {"name": "queue", "match": {"type": "*"}, "target": {"type": "sqs", "url": aws.target_queue}}


def letters(aws: Aws) -> list[dict[str, Any]]:
    return [json.loads(message["Body"]) for message in aws.messages(aws.dlq)]


def queued_ids(aws: Aws) -> list[str]:
    return [json.loads(message["Body"])["id"] for message in aws.messages(aws.target_queue)]


def check_ledger(
    sent: list[str],
    delivered: dict[str, list[str]],
    dead: list[dict[str, Any]],
    subscriptions: list[str],
) -> None:
    """Every event reaches every subscription once, or is dead-lettered for it once with a reason."""
    problems = []
    letters_by = Counter((letter["event"]["id"], letter["subscription"]) for letter in dead)
    for name in subscriptions:
        got = Counter(delivered.get(name, []))
        for event_id in sent:
            ended = got[event_id] + letters_by[(event_id, name)]
            if ended != 1:
                problems.append(
                    f"{event_id} -> {name}: delivered {got[event_id]}, dead-lettered {ended - got[event_id]}"
                )
    problems += [f"dead letter without a reason: {letter}" for letter in dead if not letter.get("reason")]
    assert not problems, problems


def fail_once(event_id: str) -> Callable[[dict[str, Any]], int | None]:
    """A webhook's answer for one event: 503 the first time, then what it answers everyone."""
    refused: list[str] = []

    def refuse(event: dict[str, Any]) -> int | None:
        if event.get("id") == event_id and not refused:
            refused.append(event_id)
            return 503
        return None

    return refuse


def minute_window_consumer(kafka_bootstrap: str, aws: Aws, webhook: WebhookReceiver, monkeypatch: Any) -> Any:
    """The consumer with one webhook subscription whose retry window is 60 s, the webhook down for an hour."""
    webhook.go_down(3600)
    policy = {"maximum_event_age_seconds": 60}
    return load_consumer(
        monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([hook(webhook.start(), retry_policy=policy)]))
    )


def record_with_window_left(event_id: str, seconds: float) -> dict[str, Any]:
    """A record written long enough ago that a 60 s retry window has `seconds` left."""
    written = int((time.time() - 60 + seconds) * 1000)
    return raw_record("orders", 1, json.dumps(cloud_event(event_id)).encode(), timestamp_ms=written)


class SlowCalls:
    """A botocore `provide-client-params` hook: the calls it picks take 20 ms more, as real round trips do,
    and it counts them and the most in flight at once."""

    def __init__(self, picks: Callable[[dict[str, Any]], bool]) -> None:
        self.picks = picks
        self.calls = self.in_flight = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        if not self.picks(params):
            return
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(0.02)
        with self._lock:
            self.in_flight -= 1


def per_key_order(events: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for event in events:
        by_key.setdefault(keys[event["id"]], []).append(event["id"])
    return by_key


class TestIsolation:
    def test_a_failing_webhook_delays_no_other_subscription(self, kafka_bootstrap, aws, webhook, monkeypatch):
        """The defect: one webhook answering 503 stopped the partition for every subscription."""
        webhook.go_down(3600)
        events = [(f"iso-{n}", f"order-{n % 4}") for n in range(30)]
        env = consumer_env(kafka_bootstrap, aws, json.dumps([queue(aws), hook(webhook.start())]))
        consumer = load_consumer(monkeypatch, env)

        response = consumer.handler(batch(events), LambdaContext(function_name="consumer"))

        assert response == {"batchItemFailures": []}
        assert sorted(queued_ids(aws)) == sorted(event_id for event_id, _ in events), "all of them, at once"
        assert letters(aws) == []
        attempted = [d["event"]["id"] for d in webhook.received]
        assert sorted(attempted) == sorted(f"iso-{n}" for n in range(4)), "one attempt per key; the rest wait"

    def test_ordering_key_holds_a_failed_keys_later_events_and_lets_other_keys_flow_across_batches_and_retries(
        self, kafka_bootstrap, aws, webhook, monkeypatch
    ):
        keys = {"a1": "A", "b1": "B", "a2": "A", "b2": "B", "a3": "A", "b3": "B"}
        webhook.refuse = fail_once("a1")
        env = consumer_env(kafka_bootstrap, aws, json.dumps([hook(webhook.start())]), IDEMPOTENCY_TABLE="idempotency")
        consumer = load_consumer(monkeypatch, env)

        first = consumer.handler(batch([("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B")]), LambdaContext())
        second = consumer.handler(batch([("a3", "A"), ("b3", "B")], first_offset=4), LambdaContext())
        assert first == second == {"batchItemFailures": []}
        assert [e["id"] for e in webhook.delivered] == ["b1", "b2", "b3"], "key B flows; a2 and a3 wait behind a1"

        retrier = load_consumer(monkeypatch, env)  # another execution environment drains the retries
        drain(aws.sqs, aws.retries, retrier.handler, LambdaContext())

        order = per_key_order(webhook.delivered, keys)
        assert order == {"A": ["a1", "a2", "a3"], "B": ["b1", "b2", "b3"]}
        check_ledger(list(keys), {"hook": [e["id"] for e in webhook.delivered]}, letters(aws), ["hook"])

    def test_ordering_none_holds_nothing_back(self, kafka_bootstrap, aws, webhook, monkeypatch):
        webhook.refuse = fail_once("a1")
        env = consumer_env(kafka_bootstrap, aws, json.dumps([hook(webhook.start(), ordering="none")]))
        consumer = load_consumer(monkeypatch, env)

        consumer.handler(batch([("a1", "A"), ("a2", "A"), ("a3", "A")]), LambdaContext())
        assert sorted(e["id"] for e in webhook.delivered) == ["a2", "a3"]

        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext())
        assert sorted(e["id"] for e in webhook.delivered) == ["a1", "a2", "a3"]


class TestRetries:
    def test_retries_back_off_then_dead_letter_once_with_the_attempts_and_the_last_error(
        self, kafka_bootstrap, aws, webhook, monkeypatch
    ):
        webhook.go_down(3600)
        subscriptions = [queue(aws), hook(webhook.start(), retry_policy={"maximum_retry_attempts": 2})]
        env = consumer_env(kafka_bootstrap, aws, json.dumps(subscriptions), IDEMPOTENCY_TABLE="idempotency")
        consumer = load_consumer(monkeypatch, env)
        sent = ["r1", "r2", "r3"]

        consumer.handler(batch([("r1", "X"), ("r2", "X"), ("r3", "Y")]), LambdaContext())
        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext())

        dead = letters(aws)
        check_ledger(sent, {"queue": queued_ids(aws)}, dead, ["queue", "hook"])
        by_id = {letter["event"]["id"]: letter for letter in dead}
        assert sorted(by_id) == sent, "each once, for the failing subscription only"
        for event_id in ("r1", "r3"):  # the heads of their keys: tried 1 + 2 times
            letter = by_id[event_id]
            assert letter["attempts"] == 3
            assert "failed 3 times" in letter["reason"]
            assert "allows 2 retries" in letter["reason"]
            assert letter["last_error"] == "webhook 127.0.0.1 answered HTTP 503"
            assert letter["value_base64"], "the record's bytes travel along for a replay"
        attempts = Counter(d["event"]["id"] for d in webhook.received)
        assert attempts["r1"] == attempts["r3"] == 3
        assert attempts["r2"] == 3, "behind r1 until r1 was dead-lettered, then its own three tries"

    def test_retries_stop_at_the_end_of_the_retry_window(self, kafka_bootstrap, aws, webhook, monkeypatch):
        consumer = minute_window_consumer(kafka_bootstrap, aws, webhook, monkeypatch)

        consumer.handler(lambda_event([record_with_window_left("w1", 2.0)]), LambdaContext())
        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext())

        (letter,) = letters(aws)
        assert "its retry window (60 s) ended" in letter["reason"]
        assert letter["attempts"] >= 2

    def test_a_ticket_whose_window_ended_before_its_retry_came_is_dead_lettered_not_delivered(
        self, kafka_bootstrap, aws, webhook, monkeypatch
    ):
        """A backed-up retry queue can hand a ticket over after its window: the policy still holds."""
        consumer = minute_window_consumer(kafka_bootstrap, aws, webhook, monkeypatch)

        consumer.handler(lambda_event([record_with_window_left("late1", 1.5)]), LambdaContext())
        webhook.down_until = 0.0  # back, but the ticket only comes once the window is over
        time.sleep(2.0)
        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext())

        assert webhook.delivered == [], "not delivered past its window"
        (letter,) = letters(aws)
        assert "its retry window (60 s) ended" in letter["reason"]
        assert letter["attempts"] == 1, "no attempt was made past the window"
        assert letter["last_error"] == "webhook 127.0.0.1 answered HTTP 503"

    def test_a_retry_batch_is_delivered_side_by_side(self, kafka_bootstrap, aws, webhook, monkeypatch):
        webhook.go_down(3600)
        env = consumer_env(kafka_bootstrap, aws, json.dumps([hook(webhook.start())]))
        consumer = load_consumer(monkeypatch, env)
        consumer.handler(batch([(f"s{n}", f"key-{n}") for n in range(10)]), LambdaContext())
        webhook.down_until, webhook.delay_s, webhook.peak_in_flight = 0.0, 0.2, 0

        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext())

        assert sorted(e["id"] for e in webhook.delivered) == sorted(f"s{n}" for n in range(10))
        assert webhook.peak_in_flight > 1, "the tickets of one SQS batch were retried one after another"

    def test_a_webhook_that_recovers_gets_everything_in_key_order_and_the_dlq_nothing(
        self, kafka_bootstrap, aws, webhook, monkeypatch
    ):
        webhook.go_down(2.0)
        keys = {f"k{n}": f"key-{n % 5}" for n in range(40)}
        env = consumer_env(
            kafka_bootstrap,
            aws,
            json.dumps([queue(aws), hook(webhook.start())]),
            IDEMPOTENCY_TABLE="idempotency",
        )
        consumer = load_consumer(monkeypatch, env)

        consumer.handler(batch(list(keys.items())), LambdaContext())
        assert sorted(queued_ids(aws)) == sorted(keys), "the queue has them all before the webhook is back"
        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext(), quiet_s=3.5)

        assert letters(aws) == []
        order = per_key_order(webhook.delivered, keys)
        assert order == per_key_order([{"id": event_id} for event_id in keys], keys), "each key in its order"
        check_ledger(list(keys), {"hook": [e["id"] for e in webhook.delivered]}, [], ["hook"])

    def test_a_message_that_is_no_ticket_or_names_a_gone_subscription_is_dead_lettered_with_why(
        self, kafka_bootstrap, aws, monkeypatch
    ):
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([queue(aws)])))
        aws.sqs.send_message(QueueUrl=aws.retries, MessageBody="not a ticket")
        ticket = {
            "v": 1,
            "subscription": "removed",
            "lane": "key:orders:x",
            "seq": "orders/00000/00000000000000000001",
            "record": raw_record("orders", 1, json.dumps(cloud_event("g1")).encode()),
            "attempts": 1,
            "first_failed_at": time.time(),
        }
        aws.sqs.send_message(QueueUrl=aws.retries, MessageBody=json.dumps(ticket))
        drain(aws.sqs, aws.retries, consumer.handler, LambdaContext())
        reasons = sorted(letter["reason"] for letter in letters(aws))
        assert reasons[0].startswith("subscription 'removed' no longer exists")
        assert reasons[1].startswith("the retry message is not a ticket")


class TestThroughputMechanics:
    def test_an_sqs_target_gets_batches_of_ten(self, kafka_bootstrap, aws, monkeypatch):
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([queue(aws)])))
        calls: Counter[str] = Counter()
        consumer.sqs.meta.events.register("before-call.sqs.*", lambda model, **_: calls.update([model.name]))
        events = [(f"b{n}", f"key-{n}") for n in range(25)]

        consumer.handler(batch(events), LambdaContext())

        assert sorted(queued_ids(aws)) == sorted(event_id for event_id, _ in events)
        assert calls == {"SendMessageBatch": 3}

    def test_a_webhook_gets_requests_side_by_side_on_kept_alive_connections(
        self, kafka_bootstrap, aws, webhook: WebhookReceiver, monkeypatch
    ):
        webhook.delay_s = 0.05
        env = consumer_env(kafka_bootstrap, aws, json.dumps([hook(webhook.start(), max_concurrency=4)]))
        consumer = load_consumer(monkeypatch, env)
        events = [(f"c{n}", f"key-{n % 8}") for n in range(40)]

        started = time.monotonic()
        consumer.handler(batch(events), LambdaContext())
        took = time.monotonic() - started

        assert sorted(e["id"] for e in webhook.delivered) == sorted(event_id for event_id, _ in events)
        assert took < 40 * 0.05 / 2, f"{took:.2f} s: not one request after another"
        connections = {d["peer"] for d in webhook.received}
        assert len(connections) <= 4, f"{len(connections)} connections for 40 requests on a pool of 4"

    def test_an_event_twice_in_one_batch_is_delivered_once_even_without_a_table(
        self, kafka_bootstrap, aws, webhook, monkeypatch
    ):
        """A producer's retry can write an event twice; both copies may land in one batch, on other keys."""
        env = consumer_env(kafka_bootstrap, aws, json.dumps([queue(aws), hook(webhook.start(), ordering="none")]))
        consumer = load_consumer(monkeypatch, env)

        consumer.handler(batch([("twice", "A"), ("once", "A"), ("twice", "B")]), LambdaContext())

        assert sorted(e["id"] for e in webhook.delivered) == ["once", "twice"]
        assert sorted(queued_ids(aws)) == ["once", "twice"]
        assert letters(aws) == []

    def test_the_claims_of_a_delivered_batch_are_completed_side_by_side(self, kafka_bootstrap, aws, monkeypatch):
        """Each completion is a DynamoDB write: one after another, thousands would take seconds of the batch."""
        env = consumer_env(kafka_bootstrap, aws, json.dumps([queue(aws)]), IDEMPOTENCY_TABLE="idempotency")
        consumer = load_consumer(monkeypatch, env)
        client = consumer.processor.settler.idempotency._client
        completions = SlowCalls(lambda params: params.get("Item", {}).get("status", {}).get("S") == "COMPLETED")
        client.meta.events.register("provide-client-params.dynamodb.PutItem", completions)
        events = [(f"d{n}", f"key-{n}") for n in range(20)]

        consumer.handler(batch(events), LambdaContext())

        assert sorted(queued_ids(aws)) == sorted(event_id for event_id, _ in events)
        assert completions.calls == 20
        assert completions.peak > 1, "the claims were completed one after another"

    def test_the_dead_letters_of_a_batch_are_sent_side_by_side(self, kafka_bootstrap, aws, webhook, monkeypatch):
        webhook.status = 404  # refused: each delivery goes to the DLQ at once
        consumer = load_consumer(monkeypatch, consumer_env(kafka_bootstrap, aws, json.dumps([hook(webhook.start())])))
        sends = SlowCalls(lambda params: params.get("QueueUrl") == aws.dlq)
        consumer.sqs.meta.events.register("provide-client-params.sqs.SendMessage", sends)

        consumer.handler(batch([(f"x{n}", f"key-{n}") for n in range(20)]), LambdaContext())

        dead = letters(aws)
        assert sorted(letter["event"]["id"] for letter in dead) == sorted(f"x{n}" for n in range(20))
        assert all("refused" in letter["reason"] for letter in dead)
        assert sends.peak > 1, "the dead letters were sent one after another"


class TestLanes:
    def test_a_busy_lanes_lost_head_is_still_found_stale(self, aws):
        """New events joining a lane must not make its head look alive: only the head's own moves count."""
        import boto3
        from consumer.lanes import DynamoDBLanes

        lanes = DynamoDBLanes("idempotency", 3600, client=boto3.client("dynamodb", region_name="us-east-1"))
        lane = ("hook", "key:orders:abc")
        lanes.join(lane, ["orders/00000/00000000000000000001"], time.time())
        head = lanes.state(lane)
        time.sleep(0.05)
        lanes.join(lane, ["orders/00000/00000000000000000002"], time.time())  # a later event of the key
        later = lanes.state(lane)
        assert later is not None
        assert head is not None
        assert later.head_at == head.head_at, "joining did not refresh the head"
        assert later.head == "orders/00000/00000000000000000001"
        assert lanes.drop_stale_head(lane, later)
        after = lanes.state(lane)
        assert after is not None
        assert after.head == "orders/00000/00000000000000000002"

    def test_updates_of_a_gone_lane_make_no_item(self, aws):
        import boto3
        from consumer.lanes import DynamoDBLanes

        client = boto3.client("dynamodb", region_name="us-east-1")
        lanes = DynamoDBLanes("idempotency", 3600, client=client)
        lanes.progress(("hook", "event:x"), time.time() + 5)
        lanes.leave(("hook", "event:x"), "orders/00000/00000000000000000001")
        assert client.scan(TableName="idempotency")["Items"] == [], "no item without a TTL is left behind"
