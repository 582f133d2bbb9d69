"""One execution environment's state: init, the freeze point, invocations, timeouts, extensions, shutdown."""

from __future__ import annotations

import contextlib
import enum
import math
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from eventbus_localstack.sandbox.localstack import LocalStackClient, error_body
from eventbus_localstack.sandbox.logs import LogCollector
from eventbus_localstack.sandbox.settings import EXTERNAL_SHUTDOWN_S, INTERNAL_SHUTDOWN_S, Settings, log


class Phase(enum.Enum):
    """Where the environment is. Invocations are handed to the runtime only when RUNNING."""

    INITIALISING = "initialising"
    """Extensions and the runtime are starting (or are about to start again after a timeout or a crash)."""
    AWAITING_INIT = "awaiting init"
    """A re-init failed: the next invocation that arrives starts another."""
    RUNNING = "running"
    """Initialised: the next invocation goes to the runtime once it and every extension wait."""
    SHUTTING_DOWN = "shutting down"
    """SIGTERM was received; nothing leaves this phase."""


@dataclass
class Invocation:
    request_id: str
    function_arn: str
    payload: bytes
    trace_id: str
    deadline_ms: int = 0
    started: float = 0.0


@dataclass
class Extension:
    identifier: str
    name: str
    events: frozenset[str]
    external: bool
    waiting: bool = False
    inbox: deque[dict[str, Any]] = field(default_factory=deque)


def max_memory_mb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return math.ceil(int(line.split()[1]) / 1024)
    return 0


class Sandbox:
    """The state of one execution environment; every change happens under `self._state`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.localstack = LocalStackClient(settings)
        self.logs = LogCollector()
        self._state = threading.Condition()
        self._pending: deque[Invocation] = deque()
        self._current: Invocation | None = None
        self._timer: threading.Timer | None = None
        self._extensions: dict[str, Extension] = {}
        self._external: list[subprocess.Popen[bytes]] = []
        self._external_names: set[str] = set()
        self._runtime: subprocess.Popen[bytes] | None = None
        self._runtime_generation = 0
        self._runtime_waiting = False
        self._registration_open = True
        self._phase = Phase.INITIALISING
        self._ever_ready = False  # the first init finished (LocalStack was told once)
        self._init_error_reported = False
        self._init_started = 0.0
        self._init_duration_ms: float | None = None  # reported once, on the REPORT after an init
        self._last_init_error: bytes | None = None
        self._stopped = threading.Event()

    def _enter(self, phase: Phase) -> None:
        """Change phase, unless shutting down (a timeout or a runtime's death during shutdown changes nothing).
        Holds the lock."""
        if self._phase is not Phase.SHUTTING_DOWN:
            self._phase = phase

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._init()

    def _init(self) -> None:
        """Start the external extensions and the runtime: Lambda's init phase."""
        with self._state:
            self._registration_open = True
            self._runtime_waiting = False
            self._enter(Phase.INITIALISING)
            self._last_init_error = None
            self._init_started = time.perf_counter()
            self._runtime_generation += 1
            generation = self._runtime_generation
        self.logs.add(f"INIT_START Runtime Version: {self.settings.runtime_name}.localbus")
        env = self.settings.runtime_environment()
        executables = self._external_extensions()
        with self._state:
            self._external_names = {executable.name for executable in executables}
        for executable in executables:
            self._spawn([str(executable)], env, runtime=False)
        self._await_external_registrations()
        runtime = self._spawn([self.settings.runtime_python, "-m", "awslambdaric", self.settings.handler], env)
        if runtime is not None:
            threading.Thread(target=self._watch_runtime, args=(runtime, generation), daemon=True).start()

    def _await_external_registrations(self) -> None:
        """Lambda's init runs extensions first: the runtime starts once each external extension has registered."""
        deadline = time.monotonic() + self.settings.init_timeout_s
        with self._state:
            while time.monotonic() < deadline:
                running = sum(1 for p in self._external if p.poll() is None)
                if sum(1 for e in self._extensions.values() if e.external) >= running:
                    return
                self._state.wait(timeout=0.05)
        log("external extensions did not all register within %s s", self.settings.init_timeout_s)

    def _external_extensions(self) -> list[Path]:
        found: list[Path] = []
        for layer in self.settings.layers:
            folder = layer / "extensions"
            if folder.is_dir():
                found += sorted(p for p in folder.iterdir() if p.is_file() and os.access(p, os.X_OK))
        return found

    def _spawn(self, argv: list[str], env: dict[str, str], *, runtime: bool = True) -> subprocess.Popen[bytes] | None:
        """Start the runtime or an external extension, in this sandbox's process group (the executor's SIGKILL to
        the group reaches them all), unless the sandbox is shutting down."""
        with self._state:
            if self._phase is Phase.SHUTTING_DOWN:
                return None
            process = subprocess.Popen(  # the runtime, and the executables a layer ships in extensions/
                argv,
                cwd=self.settings.task_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if runtime:
                self._runtime = process
            else:
                self._external.append(process)
        if process.stdout is not None:
            self.logs.follow(os.dup(process.stdout.fileno()))
            process.stdout.close()
        return process

    def _watch_runtime(self, runtime: subprocess.Popen[bytes], generation: int) -> None:
        code = runtime.wait()
        with self._state:
            if self._phase is Phase.SHUTTING_DOWN or generation != self._runtime_generation:
                return
            current, self._current = self._current, None
            ready, during_init = self._ever_ready, self._phase is not Phase.RUNNING
            failed = list(self._pending) if during_init else []
            if during_init:
                self._pending.clear()
            self._enter(Phase.INITIALISING)  # nothing is dispatched until the environment is initialised again
            self._state.notify_all()
        status = f"exit status {code}" if code >= 0 else f"signal: {signal.Signals(-code).name.lower()}"
        reason = f"Runtime exited with error: {status}"
        log("runtime exited (%s)", reason)
        if not ready:
            # the first init failed: LocalStack fails this environment's start with the error
            self.init_error(error_body("init", "Runtime.ExitError", reason))
            self.kill_all()
            self.stop()
            return
        if current is not None:
            self._cancel_timer()
            self._report(current, error_body(current.request_id, "Runtime.ExitError", reason), error=True)
        if during_init:
            # a re-init failed: the waiting invocations get the error, and the next one tries again (set before
            # reporting: LocalStack sends the next invocation as soon as it has the error)
            body = self._last_init_error or error_body("init", "Runtime.ExitError", reason)
            self.kill_all()
            with self._state:
                self._extensions.clear()
                self._enter(Phase.AWAITING_INIT)
            for invocation in failed:
                invocation.started = time.perf_counter()
                self._report(invocation, body, error=True)
            return
        self._reset()

    def _reset(self) -> None:
        """Kill what is left of the environment and initialise it again, as Lambda does after a timeout or crash."""
        self.kill_all()
        with self._state:
            self._extensions.clear()
        time.sleep(0.05)
        self._init()

    def kill_all(self) -> None:
        with self._state:
            processes = [p for p in [self._runtime, *self._external] if p is not None]
            self._external = []
            self._runtime_generation += 1
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

    def shutdown(self) -> None:
        """SHUTDOWN to the extensions that asked for it, SIGTERM to the runtime if extensions exist, then SIGKILL."""
        with self._state:
            if self._phase is Phase.SHUTTING_DOWN:
                return
            self._phase = Phase.SHUTTING_DOWN
            extensions = list(self._extensions.values())
            grace = EXTERNAL_SHUTDOWN_S if any(e.external for e in extensions) else INTERNAL_SHUTDOWN_S
            deadline_ms = int((time.time() + grace) * 1000)
            for extension in extensions:
                if "SHUTDOWN" in extension.events:
                    extension.inbox.append(
                        {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline_ms}
                    )
            self._state.notify_all()
            runtime = self._runtime
            external = list(self._external)
        if extensions and runtime is not None:
            # with no extension registered Lambda does not signal the runtime: it is killed at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(runtime.pid, signal.SIGTERM)
            end = time.monotonic() + grace
            for process in [p for p in [runtime, *external] if p is not None]:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(0.0, end - time.monotonic()))
        self.kill_all()
        leftover = self.logs.take()
        if leftover:
            log("output after the last invocation:\n%s", leftover.rstrip())
        self.stop()

    def stop(self) -> None:
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    # --- LocalStack's side ---------------------------------------------------------------------------------------

    def enqueue(self, body: dict[str, Any]) -> None:
        invocation = Invocation(
            request_id=body["invoke-id"],
            function_arn=body["invoked-function-arn"],
            payload=str(body.get("payload") or "").encode(),
            trace_id=body.get("trace-id") or "",
        )
        invocation.started = time.perf_counter()
        with self._state:
            self._pending.append(invocation)
            self._state.notify_all()
            needs_init = self._phase is Phase.AWAITING_INIT
            if needs_init:
                self._enter(Phase.INITIALISING)
        # an init that never finishes must not hold the caller for LocalStack's 15 minutes: the invocation's own
        # timeout counts from its arrival (as a suppressed init's does in Lambda), plus Lambda's init limit
        expiry = threading.Timer(
            self.settings.timeout_s + self.settings.init_timeout_s, self._expire, args=(invocation,)
        )
        expiry.daemon = True
        expiry.start()
        if needs_init:  # off the request's thread: LocalStack expects /invoke to answer at once
            threading.Thread(target=self._init, daemon=True, name="init").start()

    def _expire(self, invocation: Invocation) -> None:
        """The invocation is still waiting (its environment never became ready): time it out, start afresh."""
        with self._state:
            if invocation not in self._pending:
                return
            self._pending.remove(invocation)
            self._runtime_generation += 1
            self._enter(Phase.INITIALISING)
        seconds = self.settings.timeout_s + self.settings.init_timeout_s
        message = f"Task timed out after {seconds:.2f} seconds (the environment did not finish its init)"
        self._report(invocation, error_body(invocation.request_id, "Sandbox.Timedout", message), error=True)
        self._reset()

    # --- the Runtime API -------------------------------------------------------------------------------------------

    def next_invocation(self) -> Invocation | None:
        """Block until the environment may be unfrozen for the next invocation. At shutdown it never answers: the
        runtime is stopped while it waits, as in Lambda; None once the sandbox has stopped."""
        with self._state:
            generation = self._runtime_generation
            self._runtime_waiting = True
            self._registration_open = False
            self._state.notify_all()
        self._maybe_ready()
        with self._state:
            while self._phase is not Phase.SHUTTING_DOWN and not (
                self._pending
                and self._phase is Phase.RUNNING
                and self._all_extensions_waiting()
                and self._runtime_alive()
            ):
                if self._runtime_generation != generation:
                    return None  # the runtime that asked was replaced (timeout, crash): never hand it work
                # a runtime that died while waiting is noticed by its watcher: look again shortly
                self._state.wait(timeout=0.05 if self._pending else None)
            invocation = None if self._phase is Phase.SHUTTING_DOWN else self._dispatch()
        if invocation is None:
            self._stopped.wait()
            return None
        self.logs.add(f"START RequestId: {invocation.request_id} Version: {self.settings.function_version}")
        return invocation

    def _dispatch(self) -> Invocation:
        """Unfreeze: the next invocation to the runtime, its INVOKE event to the extensions. Holds the lock."""
        invocation = self._pending.popleft()
        invocation.started = time.perf_counter()  # the duration Lambda reports starts here, not at arrival
        invocation.deadline_ms = int((time.time() + self.settings.timeout_s) * 1000)
        self._current = invocation
        self._runtime_waiting = False
        for extension in self._extensions.values():
            if "INVOKE" in extension.events:
                extension.inbox.append(
                    {
                        "eventType": "INVOKE",
                        "deadlineMs": invocation.deadline_ms,
                        "requestId": invocation.request_id,
                        "invokedFunctionArn": invocation.function_arn,
                        "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
                    }
                )
                extension.waiting = False
        self._state.notify_all()
        self._timer = threading.Timer(self.settings.timeout_s, self._timed_out, args=(invocation,))
        self._timer.daemon = True
        self._timer.start()
        return invocation

    def _runtime_alive(self) -> bool:
        """Whether the runtime process still runs (a dead one may not be reaped yet). Holds the lock."""
        if self._runtime is None:
            return False
        try:
            stat = Path(f"/proc/{self._runtime.pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2 :].split(" ", 1)[0] not in {"Z", "X"}

    def _all_extensions_waiting(self) -> bool:
        return all(e.waiting for e in self._extensions.values())

    def _maybe_ready(self) -> None:
        with self._state:
            expected_external = sum(1 for p in self._external if p.poll() is None)
            registered_external = sum(1 for e in self._extensions.values() if e.external)
            if (
                self._phase is not Phase.INITIALISING
                or not self._runtime_waiting
                or not self._all_extensions_waiting()
                or registered_external < expected_external
            ):
                return
            self._phase = Phase.RUNNING
            self._init_duration_ms = (time.perf_counter() - self._init_started) * 1000
            first, self._ever_ready = not self._ever_ready, True
            extensions = list(self._extensions.values())
            self._state.notify_all()
        for extension in extensions:  # as Lambda logs them at the end of init
            events = ", ".join(sorted(extension.events))
            self.logs.add(f"EXTENSION\tName: {extension.name}\tState: Ready\tEvents: [{events}]")
        if first:
            self.localstack.ready()

    def finish(self, request_id: str, body: bytes, *, error: bool) -> bool:
        with self._state:
            current = self._current
            if current is None or current.request_id != request_id:
                return False
            self._current = None
        self._cancel_timer()
        self._report(current, body, error=error)
        return True

    def _report(self, invocation: Invocation, body: bytes, *, error: bool, extra: str = "") -> None:
        duration_ms = (time.perf_counter() - invocation.started) * 1000
        if extra:
            self.logs.add(extra)
        self.logs.add(f"END RequestId: {invocation.request_id}")
        with self._state:
            init_ms, self._init_duration_ms = self._init_duration_ms, None
            runtime = self._runtime
        report = (
            f"REPORT RequestId: {invocation.request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {self.settings.memory_mb} MB\t"
            f"Max Memory Used: {max_memory_mb(runtime.pid) if runtime else 0} MB\t"
        )
        if init_ms:
            report += f"Init Duration: {init_ms:.2f} ms\t"
        self.logs.add(report)
        self.localstack.finished(invocation.request_id, self.logs.take(), body, error=error)

    def _cancel_timer(self) -> None:
        with self._state:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _timed_out(self, invocation: Invocation) -> None:
        with self._state:
            if self._current is not invocation:
                return
            self._current = None
            self._timer = None
            self._runtime_generation += 1  # the runtime's death below is this timeout's, not a crash
            self._enter(Phase.INITIALISING)  # nothing is dispatched until the environment is initialised again
            self._state.notify_all()
        message = f"Task timed out after {self.settings.timeout_s:.2f} seconds"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self._report(
            invocation,
            error_body(invocation.request_id, "Sandbox.Timedout", message),
            error=True,
            extra=f"{stamp}Z {invocation.request_id} {message}",
        )
        self._reset()

    def init_error(self, body: bytes) -> None:
        log("init error: %s", body.decode(errors="replace"))
        with self._state:
            self._last_init_error = body
            report = not self._ever_ready and not self._init_error_reported
            self._init_error_reported = True
        if report:
            self.localstack.init_error(body)

    # --- the Extensions API ------------------------------------------------------------------------------------------

    def register(self, name: str, events: list[str]) -> tuple[HTTPStatus, dict[str, Any], str | None]:
        with self._state:
            external = name in self._external_names  # Lambda names an external extension after its file
        unknown = set(events) - {"INVOKE", "SHUTDOWN"}
        if unknown:
            return HTTPStatus.BAD_REQUEST, {"errorType": "InvalidEventType", "errorMessage": str(sorted(unknown))}, None
        if "SHUTDOWN" in events and not external:
            return (
                HTTPStatus.BAD_REQUEST,
                {
                    "errorType": "ShutdownEventNotSupportedForInternalExtension",
                    "errorMessage": "internal extensions cannot register for SHUTDOWN",
                },
                None,
            )
        with self._state:
            if not self._registration_open:
                return (
                    HTTPStatus.FORBIDDEN,
                    {"errorType": "Extension.RegistrationClosed", "errorMessage": "registration is closed"},
                    None,
                )
            identifier = str(uuid.uuid4())
            self._extensions[identifier] = Extension(identifier, name, frozenset(events), external)
            self._state.notify_all()
        body = {
            "functionName": self.settings.function_name,
            "functionVersion": self.settings.function_version,
            "handler": self.settings.handler,
        }
        return HTTPStatus.OK, body, identifier

    def next_event(self, identifier: str) -> dict[str, Any] | None:
        with self._state:
            extension = self._extensions.get(identifier)
            if extension is None:
                return None
            extension.waiting = True
            self._state.notify_all()
        self._maybe_ready()
        with self._state:
            while not extension.inbox:
                if self._extensions.get(identifier) is not extension:
                    return None
                self._state.wait(timeout=1.0)
            extension.waiting = False
            return extension.inbox.popleft()
