"""The whole bus on this machine, no Docker: start it, deploy to it, see each piece's state, stop it.

    PYTHONPATH=infra python -m localbus.stack up       # servers + LocalStack, in the background
    PYTHONPATH=infra python -m localbus.stack deploy   # sam build + samlocal deploy (samconfig.toml's `local`)
    PYTHONPATH=infra python -m localbus.stack status   # each piece: state, address, pid, log file
    PYTHONPATH=infra python -m localbus.stack hold otlp 10   # keep a piece down for 10 s (a fault, by hand)
    PYTHONPATH=infra python -m localbus.stack down     # stop everything `up` started, by PID

`up` starts a supervisor process in a session of its own; it owns every piece as its child, so a Ctrl-C in the
terminal leaves the stack running and `down` (SIGTERM to the supervisor) stops all of it: the Kafka trigger first,
then LocalStack (which stops the Lambda environments), the webhook receiver, Prometheus, the Pushgateway, rotel and
tansu. Everything binds 127.0.0.1 on free ports; the addresses are in `<state dir>/state.json` and every log is
under `<state dir>/logs/` (the Lambda environments' own under `logs/lambda/`).

A piece that dies is started again at the same address (at most MAX_RESTARTS times in RESTART_WINDOW_S; then it is
left down and `status` says so), and every restart is logged in `logs/stack.log`. What a restart keeps: the broker's
topics, records and committed offsets (its storage is SeaweedFS, under `<state dir>/kafka`), the Pushgateway's
groups (its persistence file); not LocalStack's state, which lives in memory: after LocalStack restarts,
`make deploy` brings the bus back. All of it lives as long as the stack: `up` starts empty.

The pieces: SeaweedFS (the broker's storage), tansu (Kafka), rotel (OTLP receiver, spans to the `otlp_traces` topic),
the Pushgateway and Prometheus,
LocalStack with the project's plugins (host Lambda executor, DynamoDB from moto), a webhook receiver that checks the
bus's HMAC signatures and records each delivery (the local subscribers' endpoint), and, once deployed, the Kafka
trigger that stands in for the Kafka event source mappings (localbus.kafka_trigger).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from localbus.deploy import Deployment, build, deploy, samconfig_parameters, samconfig_stack_name, source_digest
from localbus.processes import port_of, port_open, process_tree, running
from localbus.stack_state import (
    DEFAULT_STATE_DIR,
    DEPLOYMENT_FILE,
    HOLDS_FILE,
    STATE_FILE,
    Piece,
    StackError,
    StackState,
    current,
    hold,
    write_json,
)
from localbus.supervisor import serve
from localbus.venvs import REPO
from localbus.wiring import create_topics, local_parameters, prepare_targets

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def up(state_dir: Path = DEFAULT_STATE_DIR) -> StackState:
    """Start the stack in the background (or return the running one)."""
    state = current(state_dir)
    if state is not None:
        return state
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    for stale in (STATE_FILE, DEPLOYMENT_FILE, HOLDS_FILE):  # a new LocalStack has no deployment
        with contextlib.suppress(OSError):
            (state_dir / stale).unlink()
    log = (state_dir / "logs" / "stack.log").open("ab")
    process = subprocess.Popen(  # the supervisor: this module, in a session of its own
        [sys.executable, "-m", "localbus.stack", "serve", "--state-dir", str(state_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "infra"), os.environ.get("PYTHONPATH", "")])},
        start_new_session=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = StackState.load(state_dir)
        if state is not None and "localstack" in state.pieces:
            return state
        if process.poll() is not None:
            break
        time.sleep(0.2)
    if process.poll() is None:
        process.terminate()
    tail = "\n".join((state_dir / "logs" / "stack.log").read_text(errors="replace").splitlines()[-30:])
    raise StackError(f"the local stack did not start (logs in {state_dir / 'logs'}):\n{tail}")


def deploy_stack(
    state_dir: Path = DEFAULT_STATE_DIR,
    extra_parameters: dict[str, str] | None = None,
    *,
    built_template: Path | None = None,
) -> Deployment:
    """sam build (unless `built_template` is given), then deploy to the running stack; records the deployment so
    the supervisor starts the trigger."""
    state = current(state_dir)
    if state is None:
        raise StackError("the local stack is not running: start it with `make up` (or `make demo`)")
    digest = source_digest()
    built = built_template or build(state_dir / "sam-build")
    targets = prepare_targets(state.localstack_url, state.address("webhook"), state.webhook_secret)
    parameters = {**local_parameters(state, targets), **(extra_parameters or {})}
    create_topics(state.address("kafka"), {**samconfig_parameters(), **parameters})
    deployment = deploy(state.localstack_url, built, parameters, stack_name=samconfig_stack_name())
    state = current(state_dir) or state
    previous = state.pieces.get("kafka-trigger")
    record = {**asdict(deployment), "deployed_at": time.time(), "targets": asdict(targets), "source_digest": digest}
    write_json(state_dir / DEPLOYMENT_FILE, record)
    wait_for_trigger(state_dir, previous)
    return deployment


def wait_for_trigger(state_dir: Path, previous: Piece | None, timeout: float = 30.0) -> None:
    """Until the supervisor has started the Kafka trigger for the new deployment (a new process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = current(state_dir)
        trigger = state.pieces.get("kafka-trigger") if state else None
        if trigger is not None and trigger.alive() and (previous is None or trigger.pid != previous.pid):
            return
        time.sleep(0.2)
    raise StackError(f"the Kafka trigger did not start: see {state_dir / 'logs' / 'kafka-trigger.log'}")


def down(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop the stack: SIGTERM to the supervisor, then SIGKILL to anything of its tree still alive."""
    state = StackState.load(state_dir)
    if state is None or not state.supervisor.alive():
        return []
    tree = process_tree(state.supervisor.pid)
    os.kill(state.supervisor.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while running({state.supervisor.pid: state.supervisor.start_time}) and time.monotonic() < deadline:
        tree.update(process_tree(state.supervisor.pid))
        time.sleep(0.1)
    leftovers = running(tree)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [f"pid {pid}" for pid in leftovers]


@dataclass(frozen=True)
class Row:
    name: str
    state: str
    address: str
    pid: int
    log: str


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[Row]:
    state = current(state_dir)
    if state is None:
        return []
    rows = []
    for item in [state.supervisor, *state.pieces.values()]:
        listening = _listening(item.address)
        if item.failed:
            condition = "left down"  # it kept dying: its log says why
        elif not item.alive():
            condition = "stopped"
        elif listening is False:
            condition = "not answering"
        else:
            condition = f"running, restarted {item.restarts}x" if item.restarts else "running"
        rows.append(Row(item.name, condition, item.address, item.pid, item.log))
    if state.deployment:
        outputs = state.deployment["outputs"]
        stage = state.deployment["parameters"]["Stage"]
        api = f"{state.localstack_url}/_aws/execute-api/{outputs['EventBusApiId']}/{stage}"
        rows.append(Row("api", "deployed", api, 0, str(Path(state.state_dir) / "logs" / "lambda")))
    return rows


def _listening(address: str) -> bool | None:
    """Whether the address's port answers; None when the piece has no port (the trigger)."""
    text = address.removeprefix("http://")
    host_port = text.split("/", 1)[0]
    if ":" not in host_port or not host_port.startswith("127.0.0.1"):
        return None
    return port_open(port_of(host_port))


def print_status(rows: list[Row], state_dir: Path) -> None:
    if not rows:
        print(f"the local stack is not running (state: {state_dir})")
        return
    width = max(len(row.name) for row in rows)
    for row in rows:
        pid = f"pid {row.pid}" if row.pid else ""
        print(f"  {row.name:<{width}}  {row.state:<24} {row.address:<55} {pid:<10} {row.log}")


def iter_args(argv: list[str] | None) -> Iterator[argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m localbus.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "deploy", "status", "down", "hold", "serve"])
    parser.add_argument("hold", nargs="*", metavar="PIECE SECONDS", help="hold: keep a piece down for SECONDS")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCALBUS_STATE_DIR") or DEFAULT_STATE_DIR)
    )
    yield parser.parse_args(argv)


def _hold_arguments(values: list[str]) -> tuple[str, float]:
    try:
        name, seconds = values
        return name, float(seconds)
    except ValueError:
        raise StackError("hold takes a piece and a number of seconds, e.g. `hold otlp 10`") from None


def main(argv: list[str] | None = None) -> int:
    args = next(iter_args(argv))
    state_dir: Path = args.state_dir.resolve()
    try:
        if args.command == "serve":
            return serve(state_dir)
        if args.command == "up":
            up(state_dir)
            print_status(status(state_dir), state_dir)
        elif args.command == "deploy":
            deployment = deploy_stack(state_dir)
            print(f"deployed {deployment.stack_name} in {deployment.seconds:.1f} s; API at {deployment.api_url}")
        elif args.command == "status":
            print_status(status(state_dir), state_dir)
        elif args.command == "hold":
            name, seconds = _hold_arguments(args.hold)
            hold(state_dir, name, seconds)
            print(f"{name} is held down for {seconds:g} s")
        elif args.command == "down":
            killed = down(state_dir)
            print("stopped" + (f" (killed leftovers: {', '.join(killed)})" if killed else ""))
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
