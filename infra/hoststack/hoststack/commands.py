"""The local stack's commands: start it, see each piece's state, keep a piece down, stop it, and record a
deployment so the supervisor starts the Kafka trigger for it.

    python -m hoststack up       # the servers + LocalStack, in the background
    python -m hoststack status   # each piece: state, address, pid, log file
    python -m hoststack hold otlp 10   # keep a piece down for 10 s (a fault, by hand)
    python -m hoststack down     # stop everything `up` started, by PID

`up` starts a supervisor process in a session of its own; it owns every piece as its child, so a Ctrl-C in the
terminal leaves the stack running and `down` (SIGTERM to the supervisor) stops all of it: the Kafka trigger first,
then LocalStack (which stops the Lambda environments), the in-process extras (an application's own servers, given
to `up` as `name=module:function`), Prometheus, the Pushgateway, rotel and tansu. Everything binds 127.0.0.1 on
free ports; the addresses are in `<state dir>/state.json` and every log is under `<state dir>/logs/` (the Lambda
environments' own under `logs/lambda/`).

A piece that dies is started again at the same address (at most MAX_RESTARTS times in RESTART_WINDOW_S; then it is
left down and `status` says so), and every restart is logged in `logs/stack.log`. What a restart keeps: the broker's
topics, records and committed offsets (its storage is SeaweedFS, under `<state dir>/kafka`), the Pushgateway's
groups (its persistence file); not LocalStack's state, which lives in memory: after LocalStack restarts, a deploy
brings the application back. All of it lives as long as the stack: `up` starts empty.

The pieces: SeaweedFS (the broker's storage), tansu (Kafka), rotel (OTLP receiver, spans to the `otlp_traces` topic),
the Pushgateway and Prometheus, LocalStack with the host executor's plugins (eventbus_localstack), the extras, and,
once a deployment is recorded, the Kafka trigger that stands in for the Kafka event source mappings
(samhost.kafka_trigger).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from samhost.deploy import Deployment
from samhost.processes import port_of, port_open, process_tree, running
from samhost.venvs import REPO

from hoststack.state import (
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
from hoststack.supervisor import serve

COMMANDS = ("up", "status", "down", "hold", "serve")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def up(state_dir: Path = DEFAULT_STATE_DIR, extras: Sequence[str] = ()) -> StackState:
    """Start the stack in the background (or return the running one). `extras`: the application's own in-process
    servers, each `name=module:function` (see hoststack.supervisor.start_extra)."""
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
        [
            sys.executable,
            "-m",
            "hoststack",
            "serve",
            "--state-dir",
            str(state_dir),
            *(f"--extra={extra}" for extra in extras),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
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


def record_deployment(state_dir: Path, deployment: Deployment, **details: object) -> None:
    """Record what was deployed (with the application's own `details`) and wait until the supervisor has started
    the Kafka trigger for it."""
    state = current(state_dir)
    previous = state.pieces.get("kafka-trigger") if state else None
    write_json(state_dir / DEPLOYMENT_FILE, {**asdict(deployment), "deployed_at": time.time(), **details})
    wait_for_trigger(state_dir, previous)


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


def parser(
    prog: str = "python -m hoststack",
    commands: Sequence[str] = COMMANDS,
    description: str = "The local stack's commands: start it, see each piece, keep a piece down, stop it.",
) -> argparse.ArgumentParser:
    """The commands' arguments (an application's own command line adds its commands to them)."""
    parsed = argparse.ArgumentParser(prog=prog, description=description)
    parsed.add_argument("command", choices=commands)
    parsed.add_argument("hold", nargs="*", metavar="PIECE SECONDS", help="hold: keep a piece down for SECONDS")
    parsed.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCALBUS_STATE_DIR") or DEFAULT_STATE_DIR)
    )
    parsed.add_argument(
        "--extra", action="append", default=[], metavar="NAME=MODULE:FUNCTION", help="up: an in-process server"
    )
    return parsed


def _hold_arguments(values: list[str]) -> tuple[str, float]:
    try:
        name, seconds = values
        return name, float(seconds)
    except ValueError:
        raise StackError("hold takes a piece and a number of seconds, e.g. `hold otlp 10`") from None


def run(args: argparse.Namespace) -> int:
    """One command; a StackError is printed as one line and exits 1."""
    state_dir: Path = args.state_dir.resolve()
    try:
        if args.command == "serve":
            return serve(state_dir, args.extra)
        if args.command == "up":
            up(state_dir, args.extra)
            print_status(status(state_dir), state_dir)
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


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))
