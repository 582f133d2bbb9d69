"""The local stack's supervisor heals: a piece that dies is started again at its address (logged, counted in
state.json), a piece held down for a fault run stays down until the hold ends, and a piece that keeps dying is
left down with the reason instead of being restarted forever."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hoststack import state as stack_state
from hoststack.supervisor import MAX_RESTARTS, Supervisor
from samhost.processes import ManagedProcess, free_port, port_of

pytestmark = pytest.mark.servers


class Sleeper:
    """A server stand-in: a real process listening on a fixed port."""

    def __init__(self, log_dir: Path, port: int) -> None:
        code = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)"
        self.process = ManagedProcess.start("sleeper", [sys.executable, "-c", code], log_dir=log_dir, wait_ports=[port])

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    (tmp_path / "logs").mkdir()
    supervisor = Supervisor(tmp_path)
    me = stack_state.Piece("supervisor", 0, 0, "", "")
    supervisor.state = stack_state.StackState(str(tmp_path), me)
    yield supervisor
    supervisor.stop()


def test_a_dead_piece_is_started_again_at_its_address(supervisor, tmp_path):
    port = free_port()
    first = Sleeper(tmp_path / "logs", port)
    supervisor._watch("sleeper", first, f"127.0.0.1:{port}", lambda: Sleeper(tmp_path / "logs", port))
    first.process.kill()
    supervisor.watch_servers()
    restarted = supervisor.watched["sleeper"].server
    assert restarted is not first
    assert restarted.process.process.poll() is None
    saved = stack_state.StackState.load(tmp_path)
    assert saved is not None
    assert (saved.pieces["sleeper"].pid, saved.pieces["sleeper"].restarts) == (restarted.process.process.pid, 1)


def test_a_held_piece_stays_down_until_the_hold_ends_and_that_is_no_crash(supervisor, tmp_path, monkeypatch):
    port = free_port()
    supervisor._watch(
        "sleeper", Sleeper(tmp_path / "logs", port), f"127.0.0.1:{port}", lambda: Sleeper(tmp_path / "logs", port)
    )
    monkeypatch.setattr(stack_state, "current", lambda state_dir: supervisor.state)
    stack_state.hold(tmp_path, "sleeper", 0.6)
    supervisor.watch_servers()
    held = supervisor.watched["sleeper"]
    assert held.server.process.process.poll() is not None, "stopped for the hold"
    supervisor.watch_servers()
    assert held.server.process.process.poll() is not None, "not started again while held"
    time.sleep(0.7)
    supervisor.watch_servers()
    assert held.server.process.process.poll() is None, "started again once the hold is over"
    assert held.restarts == [held.restarts[0]], "counted as one start, not as a crash before it"


def test_a_piece_that_keeps_dying_is_left_down_with_the_reason(supervisor, tmp_path):
    port = free_port()

    def broken() -> Sleeper:
        raise RuntimeError("port taken")

    first = Sleeper(tmp_path / "logs", port)
    supervisor._watch("sleeper", first, f"127.0.0.1:{port}", broken)
    first.stop()
    for _ in range(MAX_RESTARTS + 2):
        supervisor.watch_servers()
    watched = supervisor.watched["sleeper"]
    assert watched.given_up
    assert len(watched.restarts) == MAX_RESTARTS
    saved = stack_state.StackState.load(tmp_path)
    assert saved is not None
    assert saved.pieces["sleeper"].failed.endswith("left down")


def test_the_stacks_pushgateway_keeps_its_groups_across_a_kill(tmp_path):
    """Environments idle when the Pushgateway comes back push again only at their next invocation: without
    persistence their groups, and Prometheus's view of them, would be gone until then."""
    from hoststack import servers
    from prometheus_client import CollectorRegistry, Counter, push_to_gateway
    from support import pushgateway as gateway

    persisted = tmp_path / "pushgateway.db"
    first = servers.start_pushgateway(tmp_path, persistence_file=persisted)
    registry = CollectorRegistry()
    Counter("orders", "orders seen", registry=registry).inc(3)
    push_to_gateway(first.url.removeprefix("http://"), job="idle-env", registry=registry)
    time.sleep(2.5)  # one persistence interval
    first.process.kill()
    again = servers.start_pushgateway(tmp_path, port=port_of(first.url), persistence_file=persisted)
    try:
        assert {group["labels"]["job"] for group in gateway.groups(again.url)} == {"idle-env"}
        assert any(s.name == "orders_total" and s.value == 3 for s in gateway.samples(again.url))
    finally:
        again.stop()
