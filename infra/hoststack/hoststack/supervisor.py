"""The local stack's supervisor (`python -m hoststack serve`, started by `up` in a session of its own): it
starts every piece as its child, records them in state.json, starts a piece that died again at its address (a
bounded number of times), keeps held pieces down, and starts the Kafka trigger once a deployment exists.

An application adds its own servers as extras, `name=module:function`: the function takes the state folder and
returns a started server with a `url`, a `stop()` and, when its clients need one, a `secret`; it runs in the
supervisor's process for as long as the stack does (the event bus's webhook receiver is one)."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from samhost.localstack import start_localstack
from samhost.processes import ManagedProcess, port_of, start_time
from samhost.venvs import REPO, lambda_python, localstack_python

from hoststack import servers
from hoststack.state import (
    DEPLOYMENT_FILE,
    HOLDS_FILE,
    STATE_FILE,
    Piece,
    StackError,
    StackState,
    read_holds,
)

TRIGGER_RESTART_S = 5.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0
"""A piece that dies is started again at its address, at most MAX_RESTARTS times in RESTART_WINDOW_S."""


class ExtraServer(Protocol):
    """What an extra's function returns: a server already started."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


def start_extra(spec: str, state_dir: Path) -> tuple[str, ExtraServer]:
    """Start the extra `name=module:function`; a spec that does not name one is a StackError."""
    name, _, target = spec.partition("=")
    module_name, _, function_name = target.partition(":")
    if not (name and module_name and function_name):
        raise StackError(f"an extra is name=module:function, not {spec!r}")
    factory = getattr(importlib.import_module(module_name), function_name, None)
    if not callable(factory):
        raise StackError(f"{module_name} has no function {function_name!r} (extra {name!r})")
    server: ExtraServer = factory(state_dir)
    return name, server


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
    extras: Sequence[str] = ()  # name=module:function each
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
        for spec in self.extras:  # in this process: they live and stop with the supervisor
            name, extra = start_extra(spec, self.state_dir)
            self.servers.append(extra)
            secret = str(getattr(extra, "secret", ""))
            state.pieces[name] = Piece(
                name, me, start_time(me) or 0, extra.url, str(self.logs / "stack.log"), secret=secret
            )
        localstack_env = {
            "LOCALBUS_LAMBDA_PYTHON": str(lambda_python()),
            "LOCALBUS_LAMBDA_LOG_DIR": str(self.logs / "lambda"),
        }
        localstack = start_localstack(
            self.logs, self.state_dir / "localstack", localstack_python(), extra_env=localstack_env
        )
        localstack_port = port_of(localstack.url)
        # a restarted LocalStack is empty (its state lives in memory): a deploy brings the application back
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
                    logging.getLogger("hoststack").exception("supervisor round failed")

    def watch_servers(self) -> None:
        holds = read_holds(self.state_dir)
        for watched in self.watched.values():
            if self.stopping.is_set():
                return
            alive = watched.server.process.process.poll() is None
            if holds.get(watched.name, 0.0) > time.time():
                if alive:  # a fault run asked for it to be down
                    logging.getLogger("hoststack").warning("%s held down (a fault run asked)", watched.name)
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
        log = logging.getLogger("hoststack")
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
            log.warning("LocalStack started again without its state: deploy again to bring the application back")

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
            "samhost.kafka_trigger",
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


def serve(state_dir: Path, extras: Sequence[str] = ()) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    supervisor = Supervisor(state_dir, extras)
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
