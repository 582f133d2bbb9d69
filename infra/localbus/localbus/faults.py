"""The fault matrix: real traffic through the deployed local bus, one real fault at a time, and a ledger of every
event (localbus.ledger) that says where each ended. A scenario passes when nothing accepted is lost, nothing is
delivered twice to a subscription, every dead letter says why, and no answer is a 5xx other than 503.

    make faults ARGS="[SCENARIO ...] [--events N]"   # against the running stack (make up deploy)

prints one table row per scenario. The faults are real: the broker SIGKILLed (the supervisor starts it again on
its durable storage), a proxy answering DynamoDB's writes late, the Pushgateway and the OTLP receiver held down
(`hoststack.state.hold`) or frozen (SIGSTOP), the webhook answering 503, poison records written straight to a consumed
topic, and LocalStack stopped and started again (then one deploy brings the bus back; it runs last).

The traffic pauses while the broker is killed: tansu loses acknowledged records when it is killed in the middle
of a produce (it advances its sequence before it stores the batch), a defect of the local broker that the
README's guarantees section states, not one of the bus's.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Producer
from hoststack import state as stack_state
from hoststack.proxy import DelayingProxy, Seen

from localbus import stack
from localbus.client import LocalBus, wait_until
from localbus.ledger import QUEUE, WEBHOOK, Ledger, Reconciliation
from localbus.wiring import BRIEF_WINDOW

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

PUT_ITEM = "DynamoDB_20120810.PutItem"
LATE_S = 1.5  # past the functions' 1 s DynamoDB read timeout: botocore retries a write that succeeded
SLOW_EVERY = 8
OUTAGE_S = 10.0
BACKOFF_S = 5.0  # TelemetryBackoffSeconds on the local stage (samconfig.toml)
# the Kafka trigger's log lines for records given up to the mapping's on-failure destination (or dropped)
GIVEN_UP = (" sent to ", "discarded (no on-failure destination)")
WEBHOOK_OUTAGE_S = 120.0  # past orders-brief-window's 60 s retry window, well inside orders-webhook's 24 h


@dataclass
class Run:
    """One scenario's run: the bus, its state folder, how many events, and what the scenario saw besides."""

    bus: LocalBus
    state_dir: Path
    events: int = 100
    notes: list[str] = field(default_factory=list)
    built_template: Path | None = None  # a `sam build` to deploy again (localstack-restart); else it builds

    def ledger(self, scenario: str) -> Ledger:
        return Ledger(self.bus, scenario)

    def pid(self, piece: str) -> int:
        state = stack_state.current(self.state_dir)
        if state is None:
            raise stack_state.StackError("the local stack is not running")
        return state.pieces[piece].pid


Scenario = Callable[[Run], Reconciliation]


def broker_restart(run: Run) -> Reconciliation:
    """tansu SIGKILLed between two rounds of traffic, and traffic while it comes back."""
    ledger = run.ledger("broker-restart")
    third = max(1, run.events // 3)
    ledger.send(third)
    os.kill(run.pid("kafka"), signal.SIGKILL)
    ledger.send(third)  # while the supervisor starts it again
    wait_until(lambda: _alive(run, "kafka"), "the broker started again", timeout=30)
    ledger.send(run.events - 2 * third)
    return ledger.reconcile()


def dynamodb_slow(run: Run) -> Reconciliation:
    """One PutItem in SLOW_EVERY (the idempotency claims and their completion) answers 1.5 s late, after the write
    was done: botocore times out and retries a write that succeeded."""
    taken = 0

    def some_puts(seen: Seen) -> float:
        nonlocal taken
        if seen.amz_target != PUT_ITEM:
            return 0.0
        taken += 1
        return LATE_S if taken % SLOW_EVERY == 0 else 0.0

    proxy = DelayingProxy(run.bus.state.localstack_url, rule=some_puts).start()
    try:
        with _functions_env(run, {"AWS_ENDPOINT_URL_DYNAMODB": proxy.url}):
            ledger = run.ledger("dynamodb-slow")
            ledger.send(run.events)
            result = ledger.reconcile(timeout_s=180)  # deliveries are sequential (issue 11): each late write costs 1 s
    finally:
        proxy.stop()
    calls = len(proxy.requests_for(PUT_ITEM))
    run.notes.append(f"dynamodb-slow: {calls} PutItem calls, {calls // SLOW_EVERY} answered {LATE_S} s late")
    return result


def pushgateway_down(run: Run) -> Reconciliation:
    return _held(run, "pushgateway", "pushgateway-down")


def otlp_down(run: Run) -> Reconciliation:
    return _with_every_trace(run, _held(run, "otlp", "otlp-down"))


def otlp_hung(run: Run) -> Reconciliation:
    """rotel frozen (SIGSTOP: connections are accepted, nothing answers) while traffic flows, then thawed."""
    ledger = run.ledger("otlp-hung")
    half = run.events // 2
    pid = run.pid("otlp")
    os.kill(pid, signal.SIGSTOP)
    try:
        ledger.send(half)
    finally:
        os.kill(pid, signal.SIGCONT)
    ledger.send(run.events - half)
    return _with_every_trace(run, ledger.reconcile())


def webhook_503(run: Run) -> Reconciliation:
    """The webhook answers 503 to 20 deliveries in a row (a subscriber having a bad minute)."""
    ledger = run.ledger("webhook-503")
    run.bus.fail_webhook(20, 503)
    ledger.send(run.events)
    return ledger.reconcile(timeout_s=180)


def webhook_outage(run: Run) -> Reconciliation:
    """The webhook down for 2 minutes while `run.events` order events of 20 keys flow (each key's events one
    after another). Three subscriptions match them: the queue gets every event at once; `orders-webhook` (24 h
    retry window) gets every event after the webhook is back, each key in order; `orders-brief-window` (60 s)
    dead-letters every event with its reason once its window ends. The Kafka trigger never retries a batch and
    its on-failure destination gets nothing: the function settles every record itself."""
    ledger = Ledger(run.bus, "webhook-outage", (QUEUE, WEBHOOK, BRIEF_WINDOW))
    trigger_log = run.state_dir / "logs" / "kafka-trigger.log"
    log_from = trigger_log.stat().st_size if trigger_log.exists() else 0
    run.bus.webhook_down(WEBHOOK_OUTAGE_S)
    down_at = time.monotonic()
    order = ledger.send_keyed(keys=20, per_key=max(1, run.events // 20))
    accepted = sum(1 for sent in ledger.sent.values() if sent.accepted)
    # each look reads the webhook's record and drains the queue and the DLQ: once a second is enough
    wait_until(lambda: ledger.ended(QUEUE) >= accepted, "the queue's deliveries", timeout=WEBHOOK_OUTAGE_S, every=1.0)
    queued_s = time.monotonic() - down_at
    broken = []
    if ledger.ended(WEBHOOK):
        broken.append("orders-webhook had deliveries while the webhook was down")
    result = ledger.reconcile(timeout_s=WEBHOOK_OUTAGE_S + 240)
    recovered_s = time.monotonic() - down_at
    delivered = ledger.webhook_order(WEBHOOK)
    out_of_order = [
        key
        for key, ids in order.items()
        if [i for i in delivered if i in set(ids)] != [i for i in ids if i in set(delivered)]
    ]
    if out_of_order:
        broken.append(f"{len(out_of_order)} keys reached orders-webhook out of order, e.g. {out_of_order[:3]}")
    if result.delivered(BRIEF_WINDOW) or result.dead_lettered(BRIEF_WINDOW) != accepted:
        broken.append(
            f"orders-brief-window: {result.delivered(BRIEF_WINDOW)} delivered, {result.dead_lettered(BRIEF_WINDOW)} "
            f"dead-lettered of {accepted} (all should be dead-lettered: the outage outlasts its 60 s window)"
        )
    retried = trigger_lines(trigger_log, log_from, ("partial:", "bisected", " attempt ", *GIVEN_UP))
    if retried:
        broken.append(f"the Kafka trigger retried or gave up on batches: {retried[:2]}")
    result.broken += broken
    reasons = {
        ending.dead_letters[0].split(";")[0]
        for (_, name), ending in result.endings.items()
        if name == BRIEF_WINDOW and ending.dead_letters
    }
    run.notes.append(
        f"webhook-outage: the queue had all {accepted} events {queued_s:.0f} s into the {WEBHOOK_OUTAGE_S:.0f} s "
        f"outage; orders-webhook had all {len(set(delivered))} in key order {recovered_s:.0f} s after it began; "
        f"orders-brief-window dead-lettered {result.dead_lettered(BRIEF_WINDOW)} ({'; '.join(sorted(reasons))[:160]})"
    )
    return result


def poison(run: Run) -> Reconciliation:
    """Records no decoder can read, written straight to the orders topic between the ledger's events."""
    ledger = run.ledger("poison")
    producer = Producer({"bootstrap.servers": run.bus.state.address("kafka")})
    values = [f"poison {uuid.uuid4()} not a cloud event".encode() for _ in range(10)]
    half = run.events // 2
    ledger.send(half)
    for value in values:
        producer.produce("orders", key=b"poison", value=value)
    if producer.flush(10) != 0:
        raise stack_state.StackError("the poison records were not acknowledged")
    ledger.send(run.events - half)
    result = ledger.reconcile()
    letters = _poison_letters(run.bus, ledger, set(values))
    run.notes.append(f"poison: {len(letters)} of {len(values)} poison records in the DLQ, each with its reason")
    if len(letters) != len(values) or not all(letter.get("reason") for letter in letters):
        result.stray_letters += len(values) - sum(1 for letter in letters if letter.get("reason"))
    return result


def localstack_restart(run: Run) -> Reconciliation:
    """LocalStack stopped and started again (the supervisor does), which empties it: the documented recovery is
    one `make deploy`. Events accepted before are delivered; events after the deploy are too. Runs last: the
    deployment it leaves behind is a new one (new function names, queue URLs and API id)."""
    before = run.ledger("localstack-restart")
    half = run.events // 2
    before.send(half)
    settled = before.reconcile()
    old_pid = run.pid("localstack")
    os.kill(old_pid, signal.SIGTERM)
    wait_until(lambda: _alive(run, "localstack") and run.pid("localstack") != old_pid, "LocalStack again", timeout=90)
    started = time.monotonic()
    stack.deploy_stack(run.state_dir, built_template=run.built_template)
    run.notes.append(f"localstack-restart: the bus was back {time.monotonic() - started:.0f} s after `make deploy`")
    run.bus = LocalBus.of(run.state_dir)
    after = run.ledger("localstack-restart")
    after.send(run.events - half)
    again = after.reconcile()
    return Reconciliation(
        "localstack-restart",
        settled.sent + again.sent,
        {**settled.endings, **again.endings},
        settled.stray_letters + again.stray_letters,
        settled.waited_s + again.waited_s,
    )


SCENARIOS: dict[str, Scenario] = {
    "broker-restart": broker_restart,
    "dynamodb-slow": dynamodb_slow,
    "pushgateway-down": pushgateway_down,
    "otlp-down": otlp_down,
    "otlp-hung": otlp_hung,
    "webhook-503": webhook_503,
    "webhook-outage": webhook_outage,
    "poison": poison,
    "localstack-restart": localstack_restart,
}


def _held(run: Run, piece: str, scenario: str) -> Reconciliation:
    """The piece held down for OUTAGE_S while traffic flows, then started again at its address."""
    ledger = run.ledger(scenario)
    stack_state.hold(run.state_dir, piece, OUTAGE_S)
    wait_until(lambda: not _alive(run, piece), f"{piece} down", timeout=10)
    half = run.events // 2
    ledger.send(half)
    wait_until(lambda: _alive(run, piece), f"{piece} started again", timeout=OUTAGE_S + 30)
    ledger.send(run.events - half)
    return ledger.reconcile()


def _with_every_trace(run: Run, result: Reconciliation) -> Reconciliation:
    """Every accepted event's spans reached the collector: its produce span (IngestFunction) and its processing
    span (KafkaConsumerFunction), those exported after the outage included. Spans kept through the outage go out
    with a function's first flush after its back-off; a few more events make sure there is one."""
    wanted = {sent.id for sent in result.accepted}
    functions = {run.bus.service("IngestFunction"), run.bus.service("KafkaConsumerFunction")}
    time.sleep(BACKOFF_S + 1)
    run.ledger(f"{result.scenario}-nudge").send(8)

    def missing() -> set[tuple[str, str]]:
        seen = {
            (str(span.attributes.get("messaging.message.id")), str(span.resource.get("service.name")))
            for span in run.bus.traces.read(1.0)
            if span.attributes.get("messaging.message.id") in wanted
        }
        return {(event_id, function) for event_id in wanted for function in functions} - seen

    deadline = time.monotonic() + 60
    gaps = missing()
    while gaps and time.monotonic() < deadline:
        gaps = missing()
    run.notes.append(
        f"{result.scenario}: {len(wanted) - len({event_id for event_id, _ in gaps})} of {len(wanted)} "
        "accepted events have their ingest and consumer spans"
    )
    result.missing_spans = len(gaps)
    return result


def trigger_lines(log: Path, start: int, words: tuple[str, ...]) -> list[str]:
    """The Kafka trigger's log lines since byte `start` that contain any of `words`."""
    try:
        with log.open("rb") as text:
            text.seek(start)
            lines = text.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if any(word in line for word in words)]


def _alive(run: Run, piece: str) -> bool:
    state = stack_state.current(run.state_dir)
    return state is not None and piece in state.pieces and state.pieces[piece].alive()


@contextmanager
def _functions_env(run: Run, extra: dict[str, str]) -> Iterator[None]:
    """IngestFunction and KafkaConsumerFunction with `extra` in their environment (new execution environments),
    restored afterwards."""
    functions = run.bus.client("lambda")
    names = [run.bus.resource("IngestFunction"), run.bus.resource("KafkaConsumerFunction")]
    before = {
        name: functions.get_function_configuration(FunctionName=name)["Environment"]["Variables"] for name in names
    }

    def configure(variables: dict[str, dict[str, str]]) -> None:
        for name in names:
            functions.update_function_configuration(FunctionName=name, Environment={"Variables": variables[name]})
        for name in names:
            wait_until(functools.partial(_updated, functions, name), f"{name}'s new configuration")

    configure({name: {**variables, **extra} for name, variables in before.items()})
    try:
        yield
    finally:
        configure(before)


def _updated(functions: LambdaClient, name: str) -> bool:
    status = functions.get_function_configuration(FunctionName=name).get("LastUpdateStatus")
    return status in ("Successful", None)


def _poison_letters(bus: LocalBus, ledger: Ledger, values: set[bytes]) -> list[dict[str, Any]]:
    """The DLQ's letters for the poison records (the ledger drained some of them already)."""

    def poison(letter: dict[str, Any]) -> bool:
        return base64.b64decode(letter.get("value_base64") or b"") in values

    found = [letter for letter in ledger.other_letters if poison(letter)]
    deadline = time.monotonic() + 60
    while len(found) < len(values) and time.monotonic() < deadline:
        found += [
            letter
            for letter in (
                json.loads(message["Body"]) for message in bus.queue_messages(bus.dead_letter_queue, wait_s=1)
            )
            if poison(letter)
        ]
    return found


def run_scenarios(bus: LocalBus, state_dir: Path, names: list[str], events: int) -> Iterator[Reconciliation]:
    """Each scenario in turn, its result as soon as it is done (its notes go to stderr)."""
    Ledger(bus, "warm-up").send(8)  # every concurrent client's environment is warm before anything is measured
    for name in names:
        run = Run(bus, state_dir, events)
        result = SCENARIOS[name](run)
        for note in run.notes:
            print(f"  {note}", file=sys.stderr)
        yield result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (all)")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCALBUS_STATE_DIR") or stack_state.DEFAULT_STATE_DIR)
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    bus = LocalBus.of(args.state_dir)
    try:
        print(Reconciliation.HEADER)
        print(_rule(Reconciliation.HEADER))
        failed = False
        for result in run_scenarios(bus, args.state_dir, args.scenarios or list(SCENARIOS), args.events):
            print(result.row(), flush=True)
            for problem in result.problems():
                failed = True
                print(f"    {result.scenario}: {problem}", file=sys.stderr)
    finally:
        bus.close()
    return 1 if failed else 0


def _rule(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


if __name__ == "__main__":
    sys.exit(main())
