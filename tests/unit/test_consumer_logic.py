"""KafkaConsumerFunction's plain logic: subscriptions (format, matching, delivery promises), settings, record
decoding, the retry backoff and tickets, batch calls."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import pytest
from cloudevents.core.v1.event import CloudEvent
from consumer.decoding import PoisonRecordError, read_record, to_cloud_event
from consumer.parking import Backoff, Ticket
from consumer.settings import ConsumerSettings
from consumer.subscriptions import RetryPolicy, Subscription, Target, matching, parse_subscriptions
from consumer.targets import Deliverer, Outbound, batches, sign
from lambda_event_bus.base import ConfigError
from lambda_event_bus.bus.contract import data_value


def event(**attributes: object) -> CloudEvent:
    return CloudEvent(
        {"specversion": "1.0", "id": "1", "source": "/shop", "type": "com.example.order.created", **attributes}, None
    )


def subscription(match: dict, name: str = "s") -> str:
    return json.dumps([{"name": name, "match": match, "target": {"type": "sqs", "url": "https://q"}}])


class TestSubscriptions:
    @pytest.mark.parametrize(
        ("match", "expected"),
        [
            ({"type": "com.example.order.created"}, True),
            ({"type": "com.example.order.*"}, True),
            ({"type": "com.example.*"}, True),
            ({"type": "*"}, True),
            ({"type": "com.example.order"}, False),
            ({"type": "com.example.payment.*"}, False),
            ({"type": "com.example.*", "source": "/shop"}, True),
            ({"type": "com.example.*", "source": "/crm"}, False),
            ({"type": "*", "attributes": {"region": "eu", "priority": True}}, True),
            ({"type": "*", "attributes": {"region": "us"}}, False),
            ({"type": "*", "attributes": {"missing": "x"}}, False),
        ],
    )
    def test_matching(self, match, expected):
        subscriptions = parse_subscriptions(subscription(match), "SUBSCRIPTIONS")
        assert bool(matching(subscriptions, event(region="eu", priority=True))) is expected

    @pytest.mark.parametrize(
        "text",
        [
            "not json",
            "{}",
            '[{"name": "a"}]',
            '[{"name": "a", "match": {"type": "x"}, "target": {"type": "ftp", "url": "x"}}]',
            '[{"name": "a", "match": {"type": "x"}, "target": {"type": "sqs"}}]',
            '[{"name": "a", "match": {"type": "a*b"}, "target": {"type": "sqs", "url": "u"}}]',
            subscription({"type": "x"}, "dup")[:-1] + ", " + subscription({"type": "y"}, "dup")[1:],
        ],
    )
    def test_a_bad_list_fails_start_up_naming_the_variable(self, text):
        with pytest.raises(ConfigError) as raised:
            ConsumerSettings.from_env({"SUBSCRIPTIONS": text})
        assert str(raised.value).startswith("SUBSCRIPTIONS=")
        assert "\n" not in str(raised.value)

    def test_subscriptions_can_come_from_an_ssm_parameter(self):
        read: list[str] = []

        def read_parameter(name: str) -> str:
            read.append(name)
            return subscription({"type": "*"}, "from-ssm")

        settings = ConsumerSettings.from_env({"SUBSCRIPTIONS_PARAMETER": "/bus/subs"}, read_parameter=read_parameter)
        assert [s.name for s in settings.subscriptions] == ["from-ssm"]
        assert read == ["/bus/subs"]

    def test_the_shipped_subscriptions_are_valid(self):
        assert ConsumerSettings.from_env({}).subscriptions


def record(value: bytes | None, headers: list[tuple[str, bytes]] = (), offset: int = 7) -> dict:
    return {
        "topic": "orders",
        "partition": 1,
        "offset": offset,
        "timestamp": 1,
        "value": base64.b64encode(value).decode() if value is not None else None,
        "headers": [{name: list(data)} for name, data in headers],
    }


class TestDecoding:
    def decode(self, raw: dict):
        return to_cloud_event(read_record(raw), max_bytes=10_000, plain_event_type="kafka.record")

    def test_binary_structured_and_plain_json(self):
        binary = self.decode(
            record(
                b'{"a": 1}',
                [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", b"i"),
                    ("ce_type", b"t"),
                    ("ce_source", b"/s"),
                    ("content-type", b"application/json"),
                ],
            )
        )
        assert (binary.get_id(), binary.get_data(), data_value(binary)) == ("i", b'{"a": 1}', {"a": 1})
        structured = self.decode(
            record(json.dumps({"specversion": "1.0", "id": "j", "type": "t", "source": "/s", "data": [1]}).encode())
        )
        assert (structured.get_id(), structured.get_data()) == ("j", [1])
        plain = self.decode(record(b'{"b": 2}'))
        assert (plain.get_id(), plain.get_source(), plain.get_type()) == (
            "orders-1-7",
            "kafka://orders",
            "kafka.record",
        )

    def test_the_structured_content_type_wins_over_stray_ce_headers(self):
        document = {"specversion": "1.0", "id": "s", "type": "t", "source": "/s"}
        headers = [("content-type", b"application/cloudevents+json"), ("ce_specversion", b"1.0")]
        assert self.decode(record(json.dumps(document).encode(), headers)).get_id() == "s"

    def test_a_tombstone_carries_no_event(self):
        assert self.decode(record(None)) is None

    def test_signed_header_bytes_from_java_producers(self):
        raw = read_record({**record(b"{}"), "headers": [{"ce_id": [-61, -87]}]})
        assert raw.header("ce_id") == "é".encode()

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ({**record(b"{}"), "value": "@@@"}, "not valid base64"),
            (record(b"\xff\xfe"), "neither a CloudEvent nor JSON"),
            (record(b"{}", [("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_source", b"/s")]), "'id' is required"),
            (record(b"{}", [("ce_specversion", b"0.3"), ("ce_id", b"i")]), "specversion"),
            (record(b"x" * 20_000), "the limit is 10000"),
            ({**record(b"{}"), "headers": [{"h": "not a list"}]}, "byte values"),
            ({**record(b"{}"), "headers": [{"h": [1000, True]}]}, "byte values"),
            (record(b"{}", [("ce_id", b"i"), ("ce_type", b"t"), ("ce_source", b"/s")]), "'specversion' is required"),
            (record(None, [("ce_id", b"i")]), "'specversion' is required"),
            (record(b"[]", [("content-type", b"application/cloudevents-batch+json")]), "batch"),
        ],
    )
    def test_poison(self, raw, reason):
        with pytest.raises(PoisonRecordError, match=reason):
            self.decode(raw)


def test_webhook_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("k", b"{}", 1700000000) == f"t=1700000000,v1={expected}"


def test_a_dead_letter_always_fits_an_sqs_message():
    from consumer.dead_letters import DeadLetter
    from consumer.decoding import RawRecord
    from lambda_event_bus.bus.dead_letters import MAX_MESSAGE_BYTES

    raw = RawRecord("orders", 0, 1, None, b"k" * 400_000, b"v" * 900_000, [("big", b"h" * 800_000)])
    body = DeadLetter.of(raw, "poison record: too big", "e" * 32).body()
    letter = json.loads(body)
    assert len(body.encode()) <= MAX_MESSAGE_BYTES
    assert {"value_base64_omitted", "key_base64_omitted", "headers_omitted"} <= set(letter)
    assert letter["value_sha256"] == hashlib.sha256(b"v" * 900_000).hexdigest()
    assert (letter["topic"], letter["offset"]) == ("orders", 1)


class TestDeliveryPromises:
    def parsed(self, **extra: object) -> Subscription:
        item = {"name": "s", "match": {"type": "x"}, "target": {"type": "webhook", "url": "https://h"}, **extra}
        (parsed,) = parse_subscriptions(json.dumps([item]), "SUBSCRIPTIONS")
        return parsed

    def test_defaults_are_eventbridges(self):
        parsed = self.parsed()
        assert parsed.ordering == "key"
        assert parsed.retry == RetryPolicy(maximum_event_age_s=86_400, maximum_retry_attempts=185)
        assert parsed.max_concurrency == 16

    def test_a_subscription_states_its_ordering_retry_policy_and_concurrency(self):
        parsed = self.parsed(
            ordering="none",
            retry_policy={"maximum_event_age_seconds": 3600, "maximum_retry_attempts": 0},
            max_concurrency=4,
        )
        assert (parsed.ordering, parsed.retry, parsed.max_concurrency) == ("none", RetryPolicy(3600, 0), 4)

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"ordering": "fifo"}, "ordering must be one of key, none"),
            ({"retry_policy": {"maximum_event_age_seconds": 59}}, "from 60 to 86400"),
            ({"retry_policy": {"maximum_retry_attempts": 186}}, "from 0 to 185"),
            ({"retry_policy": {"maximum_retry_attempts": True}}, "from 0 to 185"),
            ({"retry_policy": {"attempts": 3}}, "retry_policy takes"),
            ({"max_concurrency": 0}, "max_concurrency must be an integer from 1 to 64"),
        ],
    )
    def test_a_bad_promise_fails_start_up_naming_it(self, extra: dict, message: str):
        with pytest.raises(ConfigError, match=message):
            self.parsed(**extra)


class TestBackoff:
    def test_each_step_doubles_with_jitter_up_to_the_cap_and_never_past_the_window(self):
        backoff = Backoff(base_s=2, cap_s=900)
        rng = random.Random(7)  # noqa: S311 - jitter, not secrets
        for attempts, step in [(1, 2), (2, 4), (3, 8), (9, 512), (10, 900), (50, 900)]:
            delays = {backoff.delay_s(attempts, time_left_s=10_000, rng=rng) for _ in range(50)}
            assert min(delays) >= int(step / 2)
            assert max(delays) <= step
        assert backoff.delay_s(12, time_left_s=30, rng=rng) <= 30, "the last retry falls inside the window"

    def test_no_delay_is_longer_than_sqs_takes(self):
        assert Backoff(base_s=900, cap_s=10_000).delay_s(20, time_left_s=99_999) <= 900


class TestTickets:
    def test_a_ticket_survives_its_message(self):
        ticket = Ticket("s", "key:orders:ab", "orders/00000/00000000000000000007", {"topic": "orders"}, 2, 1.5, "e")
        assert Ticket.parse(ticket.body()) == ticket
        assert ticket.then("later error").attempts == 3

    @pytest.mark.parametrize("body", ["", "[]", '{"v": 2}', '{"v": 1, "subscription": "s"}', "not json"])
    def test_anything_else_is_not_a_ticket(self, body: str):
        with pytest.raises(ValueError, match=r"ticket|Expecting|JSON"):
            Ticket.parse(body)


class TestBatches:
    def test_ten_entries_and_256_kib_at_most_per_call(self):
        small = [Outbound(event(id=str(n)), {}) for n in range(23)]
        assert [len(call) for call in batches(small)] == [10, 10, 3]
        big = [
            Outbound(CloudEvent({"specversion": "1.0", "id": str(n), "source": "/s", "type": "t"}, "x" * 100_000), {})
            for n in range(5)
        ]
        assert [len(call) for call in batches(big)] == [2, 2, 1]


@pytest.mark.parametrize(("kind", "service"), [("sqs", "SQS"), ("sns", "SNS")])
def test_a_target_without_its_client_fails_each_event_for_good_with_the_reason(kind: str, service: str):
    """A function built without the service's client (SNS is only made when a subscription needs it) answers each
    event with a permanent failure that names the missing client, not an AttributeError that fails the batch."""
    subscription = Subscription("s", "t", Target(kind, "arn:aws:sns:eu-west-1:0:topic" if kind == "sns" else "q"))
    failures = Deliverer().send_batch(subscription, [Outbound(event(id="1"), {}), Outbound(event(id="2"), {})])
    assert [(failure.transient, failure.reason) for failure in failures if failure is not None] == [
        (False, f"no {service} client is configured for this function")
    ] * 2
