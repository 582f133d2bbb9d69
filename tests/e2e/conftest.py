"""The deployed bus: one local stack per session (LocalStack with the project's plugins, tansu, rotel, the
Pushgateway, Prometheus, the webhook receiver and the Kafka trigger), `sam build` + deploy of template.yaml,
and a check at the end that stopping it left no process behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from localbus import stack
from localbus.client import LocalBus
from localbus.ledger import Reconciliation
from samhost.processes import process_tree, processes_mentioning, running


@pytest.fixture(scope="session")
def bus_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-bus")


@pytest.fixture(scope="session")
def bus(bus_state_dir: Path, sam_build_dir: Path) -> Iterator[LocalBus]:
    state = stack.up(bus_state_dir)
    seen: dict[int, int] = {}
    try:
        stack.deploy_stack(bus_state_dir, built_template=sam_build_dir / "template.yaml")
        client = LocalBus.of(bus_state_dir)
        yield client
        client.close()
    finally:
        seen.update(process_tree(state.supervisor.pid))
        killed = stack.down(bus_state_dir)
    assert not killed, f"stopping the stack had to kill {killed}"
    left = running(seen)
    assert not left, f"processes of the local stack still running after stop: {left}"
    strays = processes_mentioning(str(bus_state_dir))  # the Lambda runtimes' LAMBDA_TASK_ROOT is under it
    assert not strays, f"processes of the local stack's folder still running after stop: {strays}"


FAULT_ROWS = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def fault_rows(request: pytest.FixtureRequest) -> list[str]:
    """The fault matrix's table rows, printed at the end of the run."""
    rows: list[str] = []
    request.config.stash[FAULT_ROWS] = rows
    return rows


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(FAULT_ROWS, [])
    if rows:
        terminalreporter.section("fault matrix (tests/e2e/test_faults.py)")
        for line in (Reconciliation.HEADER, "|" + "---|" * (Reconciliation.HEADER.count("|") - 1), *rows):
            terminalreporter.write_line(line)
