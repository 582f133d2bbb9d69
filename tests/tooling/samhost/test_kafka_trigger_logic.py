"""The Kafka trigger's batch logic without a broker: the event it builds, the partial batch response, offsets to
commit and rewind, retries, bisection, record age and the on-failure destination (fakes for the invoker and the
destination: the real ones run in tests/tooling/samhost/test_kafka_trigger.py)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from samhost.kafka_trigger import (
    DeadLetter,
    FunctionFailedError,
    InvokeResult,
    KafkaMapping,
    Position,
    Record,
    ResponseContext,
    RetryPolicy,
)
from samhost.kafka_trigger.batches import (
    Attempts,
    Partition,
    event_for,
    invocation_record,
    item_failures,
    message_bodies,
    settle,
    split_at_failures,
)
from samhost.kafka_trigger.delivery import Delivery

NOW_MS = 1_800_000_000_000
BOOTSTRAP = "127.0.0.1:9092"


def record(
    offset: int, partition: int = 0, topic: str = "orders", value: bytes = b"v", timestamp_ms: int = NOW_MS
) -> Record:
    message = Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=f"k{offset}".encode(),
        value=value,
        headers=[("ce_id", f"id-{offset}".encode()), ("empty", None)],
        timestamp=(TIMESTAMP_CREATE_TIME, timestamp_ms),
    )
    return Record.from_message(message)


def mapping(**overrides: Any) -> KafkaMapping:
    settings: dict[str, Any] = {
        "logical_id": "KafkaConsumerSelfManagedMapping",
        "function_name": "consumer",
        "function_arn": "arn:aws:lambda:us-east-1:000000000000:function:consumer",
        "function_timeout_s": 60.0,
        "topic": "orders",
        "group_id": "bus-orders",
        "bootstrap_servers": BOOTSTRAP,
        "batch_size": 100,
        "batching_window_s": 0.0,
        "starting_position": "TRIM_HORIZON",
        "max_retry_attempts": 2,
        "max_record_age_s": 3600,
        "bisect_on_error": True,
        "on_failure_destination": "arn:aws:sqs:us-east-1:000000000000:dlq",
        "function_response_types": ("ReportBatchItemFailures",),
    }
    return KafkaMapping(**{**settings, **overrides})


class TestRecordsAndEvent:
    def test_the_event_is_what_a_self_managed_mapping_sends(self):
        event = event_for([record(4), record(5), record(0, partition=1)], BOOTSTRAP)

        assert event["eventSource"] == "SelfManagedKafka"
        assert event["bootstrapServers"] == BOOTSTRAP
        assert "eventSourceArn" not in event
        assert list(event["records"]) == ["orders-0", "orders-1"]
        first = event["records"]["orders-0"][0]
        assert first == {
            "topic": "orders",
            "partition": 0,
            "offset": 4,
            "timestamp": NOW_MS,
            "timestampType": "CREATE_TIME",
            "key": base64.b64encode(b"k4").decode(),
            "value": base64.b64encode(b"v").decode(),
            "headers": [{"ce_id": list(b"id-4")}, {"empty": []}],
        }

    def test_record_size_is_its_json_size_and_age_comes_from_its_timestamp(self):
        one = record(1)
        assert one.size == len(json.dumps(one.event_record, separators=(",", ":")))
        assert one.age_s(NOW_MS + 1500) == 1.5


class TestPartialBatchResponse:
    def test_the_documented_kafka_form(self):
        records = [record(1), record(2), record(7, partition=3)]
        response = {
            "batchItemFailures": [
                {"itemIdentifier": {"partition": "orders-0", "offset": 2}},
                {"itemIdentifier": {"partition": "orders-3", "offset": "7"}},
            ]
        }
        assert item_failures(response, records).positions == {Position("orders", 0, 2), Position("orders", 3, 7)}

    @pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, "ok"])
    def test_no_failures_is_a_success(self, response):
        assert item_failures(response, [record(1)]).positions == frozenset()
        assert item_failures(response, [record(1)]).invalid is None

    @pytest.mark.parametrize(
        "failures",
        [
            [{"itemIdentifier": {"partition": "orders-0", "offset": 99}}],  # not in the batch
            [{"itemIdentifier": {"partition": "orders-0"}}],
            [{"itemIdentifier": ""}],
            [{"itemIdentifier": {"partition": "orders-0", "offset": True}}],
            "orders-0",
        ],
    )
    def test_an_invalid_response_fails_the_whole_batch(self, failures):
        records = [record(1), record(2)]
        answer = item_failures({"batchItemFailures": failures}, records)
        assert answer.invalid is not None
        assert answer.positions == {r.position for r in records}

    def test_topic_names_with_dashes(self):
        records = [record(3, topic="orders-eu-1")]
        failures = {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-eu-1-0", "offset": 3}}]}
        assert item_failures(failures, records).positions == {Position("orders-eu-1", 0, 3)}

    def test_a_partition_is_redelivered_from_its_first_failure_others_are_done(self):
        records = [record(1), record(2), record(3), record(10, partition=1), record(11, partition=1)]
        done, again = split_at_failures(records, frozenset({Position("orders", 0, 2)}))
        assert [r.position for r in done] == [(("orders", 0, 1)), ("orders", 1, 10), ("orders", 1, 11)]
        assert [r.position for r in again] == [("orders", 0, 2), ("orders", 0, 3)]


class TestOffsets:
    def test_commit_up_to_the_first_undone_record_and_rewind_there(self):
        records = [record(1), record(2), record(3), record(10, partition=1), record(5, partition=2)]
        done = {Position("orders", 0, 1), Position("orders", 0, 3), Position("orders", 1, 10)}
        settlement = settle(records, done)
        assert settlement.commits == {Partition("orders", 0): 2, Partition("orders", 1): 11}
        assert settlement.rewinds == {Partition("orders", 0): 2, Partition("orders", 2): 5}

    def test_attempts_are_forgotten_once_committed(self):
        attempts = Attempts()
        attempts.failed([record(1), record(2), record(1, partition=1)], ResponseContext(200))
        attempts.forget_committed({Partition("orders", 0): 2})
        assert set(attempts.counts) == {Position("orders", 0, 2), Position("orders", 1, 1)}


class TestInvocationRecord:
    def test_modelled_on_aws_with_the_records_themselves(self):
        records = [record(4, value=b"poison"), record(5)]
        letter = invocation_record(
            records,
            condition="RetryAttemptsExhausted",
            function_arn="arn:fn",
            bootstrap_servers=BOOTSTRAP,
            invoke_count=3,
            response=ResponseContext(200, "$LATEST", "Unhandled", "req-1"),
            now=1_800_000_000.5,
        )
        assert letter["requestContext"] == {
            "requestId": "req-1",
            "functionArn": "arn:fn",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        }
        assert letter["responseContext"] == {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        assert (letter["version"], letter["timestamp"]) == ("1.0", "2027-01-15T08:00:00.500Z")
        info = letter["KafkaBatchInfo"]
        assert (info["batchSize"], info["bootstrapServers"]) == (2, BOOTSTRAP)
        assert info["recordsInfo"]["orders-0"]["firstRecordOffset"] == "4"
        assert info["recordsInfo"]["orders-0"]["lastRecordOffset"] == "5"
        (poison, _) = letter["payload"]["records"]["orders-0"]
        assert base64.b64decode(poison["value"]) == b"poison"

    def test_too_large_for_one_message_goes_one_record_per_message_and_trims_a_giant(self):
        records = [record(1, value=b"a" * 3000), record(2, value=b"b" * 3000), record(3, value=b"c" * 20_000)]
        letter = DeadLetter(tuple(records), "RecordAgeExceeded", "arn:fn", BOOTSTRAP, 0, ResponseContext())
        bodies = message_bodies(letter.records, 12_000, letter.invocation_record)
        assert len(bodies) == 3
        assert all(len(body.encode()) <= 12_000 for body in bodies)
        giant = json.loads(bodies[2])["payload"]["records"]["orders-0"][0]
        assert giant["offset"] == 3
        assert giant["truncated"] is True
        assert "value" not in giant
        assert json.loads(bodies[0])["payload"]["records"]["orders-0"][0]["offset"] == 1
        assert letter.bodies(10**6) == [json.dumps(letter.invocation_record(), separators=(",", ":"))]


# the delivery state machine, with a scripted invoker and an in-memory destination


@dataclass
class ScriptedInvoker:
    """Answers each invocation with `answer(event)`: an InvokeResult, or an exception to raise."""

    answer: Callable[[dict[str, Any]], InvokeResult | Exception]
    events: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, function_name: str, payload: bytes, *, timeout_s: float) -> InvokeResult:
        assert function_name == "consumer"
        assert timeout_s == 70.0, "the function's timeout plus the margin"
        event = json.loads(payload)
        self.events.append(event)
        outcome = self.answer(event)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def offsets(self) -> list[list[int]]:
        return [[r["offset"] for rs in event["records"].values() for r in rs] for event in self.events]


def ok(body: object = None) -> InvokeResult:
    return InvokeResult(200, json.dumps(body).encode() if body is not None else b"null")


def values(event: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(r["value"]) for rs in event["records"].values() for r in rs]


@dataclass
class MemoryDestination:
    letters: list[DeadLetter] = field(default_factory=list)
    failing: bool = False

    def send(self, letter: DeadLetter) -> None:
        if self.failing:
            raise ConnectionError("queue unreachable")
        self.letters.append(letter)


def delivery(
    invoker: ScriptedInvoker,
    destination: MemoryDestination | None = None,
    stop: threading.Event | None = None,
    **settings: Any,
) -> Delivery:
    return Delivery(
        mapping(**settings),
        invoker,
        destination if destination is not None else MemoryDestination(),
        attempts=Attempts(),
        stop=stop or threading.Event(),
        retry=RetryPolicy(base_delay_s=0),
        invoke_timeout_margin_s=10.0,
        now_ms=lambda: NOW_MS,
    )


def poison_fails(event: dict[str, Any]) -> InvokeResult:
    return InvokeResult(200, b'{"errorMessage": "boom"}', "Unhandled") if b"poison" in values(event) else ok()


class TestDelivery:
    def test_success_commits_everything(self):
        invoker = ScriptedInvoker(lambda event: ok({"batchItemFailures": []}))
        records = [record(1), record(2), record(1, partition=1)]
        report = delivery(invoker).deliver(records)
        assert report.done == {r.position for r in records}
        assert report.redeliver_after_s == 0
        assert invoker.offsets() == [[1, 2, 1]]

    def test_bisection_isolates_the_poison_record_which_goes_to_the_destination_after_its_retries(self):
        destination = MemoryDestination()
        invoker = ScriptedInvoker(poison_fails)
        records = [record(1), record(2), record(3, value=b"poison"), record(4)]

        report = delivery(invoker, destination).deliver(records)

        assert invoker.offsets() == [[1, 2, 3, 4], [1, 2], [3, 4], [3], [3], [3], [4]]
        assert report.done == {r.position for r in records}
        (letter,) = destination.letters
        assert [r.position.offset for r in letter.records] == [3]
        assert (letter.condition, letter.invoke_count) == ("RetryAttemptsExhausted", 3)
        assert letter.response.function_error == "Unhandled"

    def test_without_bisection_the_whole_batch_is_retried_then_given_up(self):
        destination = MemoryDestination()
        invoker = ScriptedInvoker(poison_fails)
        records = [record(1), record(2, value=b"poison")]
        report = delivery(invoker, destination, bisect_on_error=False, max_retry_attempts=1).deliver(records)
        assert invoker.offsets() == [[1, 2], [1, 2]]
        (letter,) = destination.letters
        assert [r.position.offset for r in letter.records] == [1, 2]
        assert report.done == {r.position for r in records}

    def test_a_partial_failure_leaves_the_rest_of_its_partition_for_redelivery(self):
        failures = {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 2}}]}
        invoker = ScriptedInvoker(lambda event: ok(failures))
        records = [record(1), record(2), record(3), record(7, partition=1)]
        subject = delivery(invoker)
        report = subject.deliver(records)
        assert report.done == {Position("orders", 0, 1), Position("orders", 1, 7)}
        assert invoker.offsets() == [[1, 2, 3, 7]]
        assert subject.attempts.counts == {Position("orders", 0, 2): 1}, "only the named record counts an attempt"

    def test_partial_failures_are_ignored_without_report_batch_item_failures(self):
        failures = {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 1}}]}
        invoker = ScriptedInvoker(lambda event: ok(failures))
        report = delivery(invoker, function_response_types=()).deliver([record(1)])
        assert report.done == {Position("orders", 0, 1)}

    def test_an_invalid_response_is_retried_whole(self):
        answers = iter([InvokeResult(200, b"not json"), ok()])
        invoker = ScriptedInvoker(lambda event: next(answers))
        report = delivery(invoker).deliver([record(1), record(2)])
        assert invoker.offsets() == [[1, 2], [1, 2]]
        assert len(report.done) == 2

    def test_an_invoke_that_fails_before_the_function_runs_is_retried_without_counting(self):
        answers = iter([ConnectionError("refused"), ConnectionError("refused"), ConnectionError("refused"), ok()])
        invoker = ScriptedInvoker(lambda event: next(answers))
        subject = delivery(invoker, max_retry_attempts=0)
        report = subject.deliver([record(1)])
        assert len(invoker.events) == 4
        assert report.done == {Position("orders", 0, 1)}
        assert subject.attempts.counts == {}

    def test_no_answer_in_time_counts_as_a_failed_attempt(self):
        destination = MemoryDestination()
        invoker = ScriptedInvoker(lambda event: FunctionFailedError("no answer within 70s"))
        delivery(invoker, destination, max_retry_attempts=0).deliver([record(1)])
        (letter,) = destination.letters
        assert letter.response.function_error == "Unhandled (no answer within 70s)"

    def test_records_older_than_the_maximum_age_go_to_the_destination_without_an_invoke(self):
        destination = MemoryDestination()
        invoker = ScriptedInvoker(lambda event: ok())
        old = record(1, timestamp_ms=NOW_MS - 61_000)
        report = delivery(invoker, destination, max_record_age_s=60).deliver([old, record(2)])
        assert invoker.offsets() == [[2]]
        (letter,) = destination.letters
        assert (letter.condition, [r.position.offset for r in letter.records]) == ("RecordAgeExceeded", [1])
        assert report.done == {Position("orders", 0, 1), Position("orders", 0, 2)}

    def test_when_the_destination_fails_nothing_past_the_record_is_done(self):
        destination = MemoryDestination(failing=True)
        invoker = ScriptedInvoker(poison_fails)
        records = [record(1), record(2, value=b"poison"), record(3), record(9, partition=1)]
        subject = delivery(invoker, destination, max_retry_attempts=0, bisect_on_error=False)
        report = subject.deliver(records)
        assert report.done == frozenset(), "the batch failed as a whole and could not be dead-lettered"
        assert report.redeliver_after_s == 0  # no backoff configured in these tests
        destination.failing = False
        report = subject.deliver(records)
        assert report.done == {r.position for r in records}, "the retry count survived: straight to the queue"
        assert len(invoker.events) == 1

    def test_infinite_retries_with_a_destination_stop_at_ten(self):
        assert replace(mapping(), max_retry_attempts=-1).retry_limit == 10
        assert replace(mapping(), max_retry_attempts=-1, on_failure_destination=None).retry_limit is None

    def test_stop_ends_the_retries(self):
        stop = threading.Event()

        def fail_then_stop(event: dict[str, Any]) -> InvokeResult:
            stop.set()
            return InvokeResult(200, b"{}", "Unhandled")

        invoker = ScriptedInvoker(fail_then_stop)
        report = delivery(invoker, stop=stop, max_retry_attempts=5).deliver([record(1), record(2)])
        assert len(invoker.events) == 1
        assert report.done == frozenset()


def test_backoff_doubles_up_to_its_ceiling():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=3)
    assert [policy.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
