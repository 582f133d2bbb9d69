"""The fault matrix on the deployed bus (localbus.faults): one real fault at a time under real traffic, with a ledger
of every event id. Each scenario fails on any accepted event lost, any duplicate per subscription, any dead letter
without a reason, and any 5xx but 503; its table row is printed at the end of the run. Then a load run of 1,000
events checks every counter in Prometheus against the ledger, and last LocalStack is restarted and the bus brought
back with one deploy.

Runs after the other end-to-end modules (it kills and holds pieces of the shared stack); each scenario leaves the
stack working, the last one with a new deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from localbus import faults
from localbus.client import LocalBus, wait_until
from localbus.ledger import QUEUE, WEBHOOK, Ledger, Reconciliation
from localbus.wiring import BRIEF_WINDOW

pytestmark = [pytest.mark.e2e, pytest.mark.localstack, pytest.mark.sam]

EVENTS = 100
LOAD_EVENTS = 1000


LAST = "localstack-restart"  # it leaves a new deployment behind: after everything else
OUTAGE, OUTAGE_EVENTS = "webhook-outage", 200  # its own test: more events, and the three subscriptions checked


@pytest.fixture(scope="module")
def warm(bus: LocalBus) -> None:
    """Every concurrent client's execution environment warm before anything is measured."""
    Ledger(bus, "warm-up").send(8)


def check(run: faults.Run, result: Reconciliation, fault_rows: list[str]) -> None:
    fault_rows.append(result.row())
    assert len(result.accepted) >= len(result.sent) * 0.9, f"the client's retries get nearly all in: {result.row()}"
    assert not result.problems(), f"{result.row()}\n{result.problems()}\n{run.notes}"
    given_up = faults.trigger_lines(run.state_dir / "logs" / "kafka-trigger.log", 0, faults.GIVEN_UP)
    assert not given_up, f"the mapping's on-failure destination was reached: {given_up[:3]}"


@pytest.mark.parametrize("scenario", [name for name in faults.SCENARIOS if name not in (LAST, OUTAGE)])
def test_scenario_loses_nothing_and_explains_every_dead_letter(
    scenario: str, bus: LocalBus, bus_state_dir: Path, warm: None, fault_rows: list[str]
) -> None:
    run = faults.Run(bus, bus_state_dir, EVENTS)
    check(run, faults.SCENARIOS[scenario](run), fault_rows)


def test_a_webhook_down_for_two_minutes_gets_everything_after_in_key_order_and_blocks_nobody(
    bus: LocalBus, bus_state_dir: Path, warm: None, fault_rows: list[str]
) -> None:
    """The scenario itself checks the queue had every event during the outage, each key's order at the webhook,
    and that the Kafka trigger never retried a batch (its problems); the figures are asserted here too."""
    run = faults.Run(bus, bus_state_dir, OUTAGE_EVENTS)
    result = faults.SCENARIOS[OUTAGE](run)
    check(run, result, fault_rows)
    accepted = len(result.accepted)
    assert (result.delivered(QUEUE), result.delivered(WEBHOOK)) == (accepted, accepted), run.notes
    assert (result.delivered(BRIEF_WINDOW), result.dead_lettered(BRIEF_WINDOW)) == (0, accepted), run.notes
    assert all(
        "retry window" in reason
        for (_, name), ending in result.endings.items()
        if name == BRIEF_WINDOW
        for reason in ending.dead_letters
    ), "every letter says the window ended"


def counter(bus: LocalBus, expression: str) -> float:
    result = bus.prometheus(f"sum({expression})")
    return float(result[0]["value"][1]) if result else 0.0


def test_a_load_run_of_1000_events_matches_every_counter(bus: LocalBus, warm: None, fault_rows: list[str]) -> None:
    source = "/ledger/load-1000"
    counters = {
        "accepted (http 202)": 'http_requests_total{endpoint="/events",status="202"}',
        "produced": f'events_produced_total{{source="{source}"}}',
        "consumed": f'events_consumed_total{{source="{source}"}}',
        "delivered to the queue": f'deliveries_total{{subscription="{QUEUE}",outcome="delivered"}}',
        "delivered to the webhook": f'deliveries_total{{subscription="{WEBHOOK}",outcome="delivered"}}',
        "processing errors": f'event_processing_errors_total{{source="{source}"}}',
    }

    def snapshot() -> dict[str, float]:
        return {name: counter(bus, expression) for name, expression in counters.items()}

    # what earlier scenarios pushed may still be on its way to Prometheus: start from values that stopped moving
    previous: dict[str, float] = {}

    def settled() -> dict[str, float] | None:
        nonlocal previous
        now = snapshot()
        stable = now if now == previous else None
        previous = now
        return stable

    before = wait_until(settled, "the counters to stop moving before the load run", timeout=60, every=3.0)
    ledger = Ledger(bus, "load-1000")
    ledger.send(LOAD_EVENTS)
    result = ledger.reconcile(timeout_s=240)
    fault_rows.append(result.row())
    assert not result.problems(), result.problems()
    answers_202 = sum(status == 202 for sent in result.sent for status in sent.statuses)
    truth = {
        "accepted (http 202)": answers_202,
        "produced": len(result.accepted),
        "consumed": len(result.accepted),
        "delivered to the queue": result.delivered(QUEUE),
        "delivered to the webhook": result.delivered(WEBHOOK),
        "processing errors": 0,
    }

    def deltas() -> dict[str, Any] | None:
        now = {name: counter(bus, expression) - before[name] for name, expression in counters.items()}
        return now if now == truth else None

    try:
        wait_until(deltas, "the counters in Prometheus to match the ledger", timeout=60, every=1.0)
    except Exception:
        seen = {name: counter(bus, expression) - before[name] for name, expression in counters.items()}
        pytest.fail(f"Prometheus {seen} != ledger {truth}")


def test_after_localstack_restarts_one_deploy_brings_the_bus_back(
    bus: LocalBus, bus_state_dir: Path, sam_build_dir: Path, fault_rows: list[str]
) -> None:
    run = faults.Run(bus, bus_state_dir, EVENTS, built_template=sam_build_dir / "template.yaml")
    try:
        check(run, faults.SCENARIOS[LAST](run), fault_rows)
    finally:
        if run.bus is not bus:
            run.bus.close()
