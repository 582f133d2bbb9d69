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
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localbus import servers
from localbus.deploy import Deployment, build, deploy, samconfig_parameters, samconfig_stack_name, source_digest
from localbus.localstack import start_localstack
from localbus.processes import ManagedProcess, port_of, port_open, process_tree, running, start_time
from localbus.venvs import REPO, lambda_python, localstack_python
from localbus.webhook import WebhookReceiver
from localbus.wiring import create_topics, local_parameters, prepare_targets

DEFAULT_STATE_DIR = REPO / ".local" / "stack"
STATE_FILE = "state.json"  # written by the supervisor only: the pieces, their pids and addresses
DEPLOYMENT_FILE = "deployment.json"  # written by a deploy only: the stack's outputs, resources and parameters
HOLDS_FILE = "holds.json"  # written by `hold` only (fault runs): pieces kept down until a time
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
TRIGGER_RESTART_S = 5.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0
"""A piece that dies is started again at its address, at most MAX_RESTARTS times in RESTART_WINDOW_S."""


class StackError(RuntimeError):
    """The stack is not in the state a command needs; the message says what to run."""


@dataclass
class Piece:
    name: str
    pid: int
    start_time: int
    address: str
    log: str
    restarts: int = 0  # how often the supervisor started it again after it died
    failed: str = ""  # why it is left down (it kept dying)

    def alive(self) -> bool:
        return bool(running({self.pid: self.start_time}))


@dataclass
class StackState:
    """What `up` started and `deploy` deployed, as written to state.json."""

    state_dir: str
    supervisor: Piece
    pieces: dict[str, Piece] = field(default_factory=dict)
    webhook_secret: str = ""
    deployment: dict[str, Any] | None = None

    @property
    def localstack_url(self) -> str:
        return self.pieces["localstack"].address

    def address(self, name: str) -> str:
        return self.pieces[name].address

    def save(self) -> None:
        """Only the supervisor writes state.json; a deploy writes deployment.json (one writer per file)."""
        pieces = {key: value for key, value in asdict(self).items() if key != "deployment"}
        write_json(Path(self.state_dir) / STATE_FILE, pieces)

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        try:
            raw = json.loads((state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        try:
            deployment = json.loads((state_dir / DEPLOYMENT_FILE).read_text())
        except (OSError, ValueError):
            deployment = None
        return cls(
            state_dir=raw["state_dir"],
            supervisor=Piece(**raw["supervisor"]),
            pieces={name: Piece(**piece) for name, piece in raw["pieces"].items()},
            webhook_secret=raw.get("webhook_secret", ""),
            deployment=deployment,
        )


def write_json(path: Path, value: object) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(value, out, indent=2)
    Path(temporary).replace(path)


def piece(name: str, process: ManagedProcess, address: str) -> Piece:
    pid = process.process.pid
    return Piece(name, pid, start_time(pid) or 0, address, str(process.log_path))


# --- the supervisor (`serve`): owns every piece as its child ------------------------------------------------------


@dataclass
class Watched:
    """A piece the supervisor restarts when it dies: how to start it again where its clients look for it, and the
    restarts it already had (bounded: a piece that keeps dying is left down, and `status` says so)."""

    name: str
    server: Any  # its `process` is a ManagedProcess; it has stop()
    restart: Callable[[], Any]
    address: str
    restarts: list[float] = field(default_factory=list)  # time.monotonic() of each
    given_up: bool = False
    held: bool = False  # stopped on purpose (`hold`), not dead


@dataclass
class Supervisor:
    state_dir: Path
    stopping: threading.Event = field(default_factory=threading.Event)
    servers: list[Any] = field(default_factory=list)  # anything with stop(), in start order
    watched: dict[str, Watched] = field(default_factory=dict)
    state: StackState | None = None
    trigger: ManagedProcess | None = None
    trigger_for: str = ""
    trigger_started: float = 0.0

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def start(self) -> StackState:
        self.logs.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        state = StackState(
            str(self.state_dir),
            Piece("supervisor", me, start_time(me) or 0, "", str(self.logs / "stack.log")),
            webhook_secret=secrets.token_hex(16),
        )
        self.state = state
        # the broker's records live as long as the stack: a restarted broker keeps them, a new stack starts empty
        kafka_data = self.state_dir / "kafka"
        shutil.rmtree(kafka_data, ignore_errors=True)
        store = servers.start_object_store(self.logs, kafka_data)
        self._watch(
            "object-store",
            store,
            store.url,
            lambda: servers.start_object_store(self.logs, kafka_data, ports=store.ports),
        )
        kafka = servers.start_tansu(self.logs, object_store=store.url)
        kafka_port = port_of(kafka.url)
        self._watch(
            "kafka", kafka, kafka.url, lambda: servers.start_tansu(self.logs, port=kafka_port, object_store=store.url)
        )
        otlp = servers.start_rotel(self.logs, kafka.url)
        otlp.store.close()  # readers make their own; the supervisor only runs the receiver
        rotel_ports = (port_of(otlp.grpc_endpoint), port_of(otlp.http_endpoint))
        self._watch(
            "otlp",
            otlp,
            otlp.http_endpoint,
            lambda: _without_store(servers.start_rotel(self.logs, kafka.url, ports=rotel_ports)),
        )
        groups = self.state_dir / "pushgateway.db"
        groups.unlink(missing_ok=True)
        pushgateway = servers.start_pushgateway(self.logs, persistence_file=groups)
        pushgateway_port = port_of(pushgateway.url)
        self._watch(
            "pushgateway",
            pushgateway,
            pushgateway.url,
            lambda: servers.start_pushgateway(self.logs, port=pushgateway_port, persistence_file=groups),
        )
        prometheus = servers.start_prometheus(self.logs, self.state_dir / "prometheus", pushgateway.url)
        prometheus_port = port_of(prometheus.url)
        self._watch(
            "prometheus",
            prometheus,
            prometheus.url,
            lambda: servers.start_prometheus(
                self.logs, self.state_dir / "prometheus", pushgateway.url, port=prometheus_port
            ),
        )
        webhook = WebhookReceiver(state.webhook_secret, record_to=self.state_dir / "webhook.jsonl")
        webhook.start()
        self.servers.append(webhook)
        state.pieces["webhook"] = Piece("webhook", me, start_time(me) or 0, webhook.url, "")
        localstack_env = {
            "LOCALBUS_LAMBDA_PYTHON": str(lambda_python()),
            "LOCALBUS_LAMBDA_LOG_DIR": str(self.logs / "lambda"),
        }
        localstack = start_localstack(
            self.logs, self.state_dir / "localstack", localstack_python(), extra_env=localstack_env
        )
        localstack_port = port_of(localstack.url)
        # a restarted LocalStack is empty (its state lives in memory): `make deploy` brings the bus back
        self._watch(
            "localstack",
            localstack,
            localstack.url,
            lambda: start_localstack(
                self.logs, self.state_dir / "localstack", localstack_python(), localstack_port, localstack_env
            ),
        )
        state.save()
        return state

    def _watch(self, name: str, server: Any, address: str, restart: Callable[[], Any]) -> None:  # noqa: ANN401
        self.servers.append(server)
        self.watched[name] = Watched(name, server, restart, address)
        self._started().pieces[name] = piece(name, server.process, address)

    def _started(self) -> StackState:
        if self.state is None:
            raise StackError("the supervisor has not started the stack")
        return self.state

    def run(self) -> None:
        """Until SIGTERM: restart a piece that died, and (re)start the Kafka trigger whenever a deployment is
        recorded."""
        while not self.stopping.wait(0.5):
            for step in (self.watch_servers, self.watch_deployment):
                try:
                    step()
                except Exception:  # one bad round must not stop the stack: it is logged and tried again
                    logging.getLogger("localbus.stack").exception("supervisor round failed")

    def watch_servers(self) -> None:
        holds = read_holds(self.state_dir)
        for watched in self.watched.values():
            if self.stopping.is_set():
                return
            alive = watched.server.process.process.poll() is None
            if holds.get(watched.name, 0.0) > time.time():
                if alive:  # a fault run asked for it to be down
                    logging.getLogger("localbus.stack").warning("%s held down (a fault run asked)", watched.name)
                    watched.server.stop()
                watched.held = True
                continue
            if watched.held:  # the hold is over: starting it again is not a crash's restart
                watched.held = False
                watched.restarts.clear()
            if watched.given_up or alive:
                continue
            self._restart(watched)

    def _restart(self, watched: Watched) -> None:
        log = logging.getLogger("localbus.stack")
        code = watched.server.process.process.poll()
        now = time.monotonic()
        watched.restarts = [moment for moment in watched.restarts if now - moment < RESTART_WINDOW_S]
        if len(watched.restarts) >= MAX_RESTARTS:
            watched.given_up = True
            log.error(
                "%s exited (code %s) after %d restarts in %.0f s: left down; see %s",
                watched.name,
                code,
                len(watched.restarts),
                RESTART_WINDOW_S,
                watched.server.process.log_path,
            )
            self._record(watched.name, failed=f"exited {len(watched.restarts) + 1} times; left down")
            return
        log.warning("%s exited (code %s): restarting it at %s", watched.name, code, watched.address)
        watched.restarts.append(now)
        try:
            server = watched.restart()
        except Exception:
            log.exception("%s did not start again; trying again in a moment", watched.name)
            return
        index = next(i for i, running in enumerate(self.servers) if running is watched.server)
        self.servers[index] = watched.server = server
        self._record(watched.name, restarts=len(watched.restarts))
        if watched.name == "localstack":
            log.warning("LocalStack started again without its state: run `make deploy` to bring the bus back")

    def _record(self, name: str, *, restarts: int | None = None, failed: str = "") -> None:
        state = self._started()
        watched = self.watched[name]
        updated = piece(name, watched.server.process, watched.address)
        updated.restarts = len(watched.restarts) if restarts is None else restarts
        updated.failed = failed
        state.pieces[name] = updated
        state.save()

    def watch_deployment(self) -> None:
        state = StackState.load(self.state_dir)
        deployment = state.deployment if state else None
        if state is not None and deployment is not None:
            stamp = str(deployment.get("deployed_at"))
            exited = self.trigger is not None and self.trigger.process.poll() is not None
            # a trigger that exits is restarted, at most every few seconds (a bad configuration exits at once)
            if stamp != self.trigger_for or (exited and time.monotonic() - self.trigger_started > TRIGGER_RESTART_S):
                self.start_trigger(state, deployment)
                self.trigger_for = stamp
                self.trigger_started = time.monotonic()

    def start_trigger(self, state: StackState, deployment: dict[str, Any]) -> None:
        if self.trigger is not None:
            self.trigger.stop()
        if self.state is not None:  # the pieces as this supervisor knows them (pids change on a restart)
            state.pieces.update(self.state.pieces)
        argv = [
            sys.executable,
            "-m",
            "localbus.kafka_trigger",
            "--template",
            str(REPO / "template.yaml"),
            "--parameters-json",
            json.dumps(deployment["parameters"]),
            "--stack-name",
            deployment["stack_name"],
        ]
        env = {
            "AWS_ENDPOINT_URL": state.localstack_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "PYTHONPATH": str(REPO / "infra"),
        }
        self.trigger = ManagedProcess.start("kafka-trigger", argv, log_dir=self.logs, wait_ports=[], env=env)
        state.pieces["kafka-trigger"] = piece("kafka-trigger", self.trigger, "polls " + state.address("kafka"))
        state.save()

    def stop(self) -> None:
        if self.trigger is not None:
            self.trigger.stop()
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):  # stop the rest even if one fails
                server.stop()


def _without_store(receiver: servers.OtlpReceiver) -> servers.OtlpReceiver:
    receiver.store.close()  # readers make their own; the supervisor only runs the receiver
    receiver.metrics.close()
    return receiver


def serve(state_dir: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    supervisor = Supervisor(state_dir)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only `down` stops the stack
    try:
        supervisor.start()
        supervisor.run()
    finally:
        supervisor.stop()
        for stale in (STATE_FILE, DEPLOYMENT_FILE, HOLDS_FILE):
            with contextlib.suppress(OSError):
                (state_dir / stale).unlink()
    return 0


# --- the commands ----------------------------------------------------------------------------------------------


def hold(state_dir: Path, name: str, seconds: float) -> None:
    """Keep a piece of the running stack down for `seconds` (the supervisor stops it, then starts it again at its
    address once the time is up): a fault for the fault suite, or to see the bus cope with it by hand."""
    state = current(state_dir)
    if state is None or name not in state.pieces:
        raise StackError(f"no running piece {name!r}: run `make up` first (pieces: see `make status`)")
    holds = {piece: until for piece, until in read_holds(state_dir).items() if until > time.time()}
    holds[name] = time.time() + seconds
    write_json(state_dir / HOLDS_FILE, holds)


def read_holds(state_dir: Path) -> dict[str, float]:
    try:
        raw = json.loads((state_dir / HOLDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(name): float(until) for name, until in raw.items()} if isinstance(raw, dict) else {}


def current(state_dir: Path) -> StackState | None:
    """The running stack's state, or None when none runs (a state file left by a dead supervisor is ignored)."""
    state = StackState.load(state_dir)
    if state is None or not state.supervisor.alive():
        return None
    return state


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
