"""One Lambda execution environment as a host process: the Docker-free counterpart of LocalStack's in-container init.

LocalStack's Lambda service talks to an execution environment through a small protocol (the one its Go init
speaks inside a container): it POSTs each invocation to `/invoke` on this process, and this process reports back
to `LOCALSTACK_RUNTIME_ENDPOINT` (`status/<id>/ready` or `/error` once, then per invocation `logs` and `response`
or `error`). Towards the function, this process is what Lambda's sandbox is: it serves the Runtime API
(`/2018-06-01/runtime/...`) and the Extensions API (`/2020-01-01/extension/...`) on `AWS_LAMBDA_RUNTIME_API`, and
runs AWS's own runtime interface client (`python -m awslambdaric <handler>`) as a child process, so handlers get
the real context object, error shapes and logging.

What it keeps from Lambda:
- init is done when the runtime first asks for an invocation and every extension waits for its next event; an
  extension registers only during init (`Extension.RegistrationClosed` after), internal extensions (registered
  from the runtime process) cannot take SHUTDOWN, external ones are the executables in a layer's `extensions/`;
- an invocation is handed to the runtime only when the runtime and every extension wait (the "freeze" point),
  with the request id, deadline, function ARN and trace id headers; INVOKE events go to extensions first;
- logs are the runtime's stdout and stderr between START and END, then a REPORT line (duration, billed duration,
  memory size, max memory used, init duration on the first one); an `EXTENSION` line per registered extension at
  the end of init;
- the timeout: `Task timed out after N.NN seconds` (`Sandbox.Timedout`), then the environment is re-initialised;
  a runtime that dies answers `Runtime.ExitError` and is re-initialised the same way; an invocation waiting on an
  init that never finishes times out after its timeout plus the 10 s init limit;
- shutdown (SIGTERM to this process): SHUTDOWN to the extensions that registered for it and SIGTERM to the runtime
  when any extension registered (500 ms with internal extensions only, 2,000 ms with external ones), then SIGKILL.

What differs, on purpose: code and layers stay where LocalStack unpacked them (`LAMBDA_TASK_ROOT` and the layers'
`python/` folders are on `PYTHONPATH` in Lambda's order, not under /var/task and /opt); output written after the
response is reported with the next invocation's logs; `PYTHONUNBUFFERED=1` so that a handler's output is in the pipe
before its response (Lambda reads it through a telemetry file descriptor instead).

Standard library only: it runs under LocalStack's interpreter, the runtime under the one in `_LOCALBUS_RUNTIME_PYTHON`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RUNTIME_API = "/2018-06-01/runtime"
EXTENSION_API = "/2020-01-01/extension"
INIT_TIMEOUT_S = 10.0  # Lambda's init phase limit
READ_CHUNK = 65536
DRAIN_READS = 16  # at most 1 MiB per drain, so a process that never stops writing cannot hold the logs
MAX_LOG_BYTES = 1 << 20
INTERNAL_SHUTDOWN_S = 0.5
EXTERNAL_SHUTDOWN_S = 2.0
# the sandbox's own settings, passed by the executor and never shown to the function
PRIVATE_PREFIX = "_LOCALBUS_"
LOCALSTACK_ONLY = ("LOCALSTACK_RUNTIME_ENDPOINT", "LOCALSTACK_RUNTIME_ID")


def log(message: str, *args: object) -> None:
    """The sandbox's own diagnostics, in its log file (not the function's CloudWatch stream)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp} [sandbox] {message % args if args else message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    port: int
    handler: str
    task_root: Path
    layers: tuple[Path, ...]
    runtime_python: str
    runtime_name: str
    timeout_s: float
    init_timeout_s: float
    memory_mb: int
    function_name: str
    function_version: str
    localstack_endpoint: str
    runtime_id: str
    environment: dict[str, str]

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> Settings:
        layers = tuple(Path(p) for p in environ.get("_LOCALBUS_LAYERS", "").split(os.pathsep) if p)
        function_env = {
            k: v for k, v in environ.items() if not k.startswith(PRIVATE_PREFIX) and k not in LOCALSTACK_ONLY
        }
        return cls(
            port=int(environ["_LOCALBUS_PORT"]),
            handler=environ["_HANDLER"],
            task_root=Path(environ["LAMBDA_TASK_ROOT"]),
            layers=layers,
            runtime_python=environ["_LOCALBUS_RUNTIME_PYTHON"],
            runtime_name=environ.get("_LOCALBUS_RUNTIME", "python3.13"),
            timeout_s=float(environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3")),
            init_timeout_s=float(environ.get("_LOCALBUS_INIT_TIMEOUT_S", str(INIT_TIMEOUT_S))),
            memory_mb=int(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
            function_name=environ.get("AWS_LAMBDA_FUNCTION_NAME", "function"),
            function_version=environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            localstack_endpoint=environ["LOCALSTACK_RUNTIME_ENDPOINT"].rstrip("/"),
            runtime_id=environ["LOCALSTACK_RUNTIME_ID"],
            environment=function_env,
        )

    def python_version(self) -> str:
        return self.runtime_name.removeprefix("python")

    def runtime_environment(self) -> dict[str, str]:
        """The function's variables as Lambda sets them, pointed at this sandbox."""
        version = self.python_version()
        paths = [str(self.task_root)]
        for layer in self.layers:
            paths += [str(layer / "python" / "lib" / f"python{version}" / "site-packages"), str(layer / "python")]
        env = dict(self.environment)
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{self.runtime_name}",
                "LAMBDA_TASK_ROOT": str(self.task_root),
                "LAMBDA_RUNTIME_DIR": str(Path(self.runtime_python).parent.parent),
                "PYTHONPATH": os.pathsep.join(paths),
                "PYTHONUNBUFFERED": "1",
                "PATH": os.pathsep.join([str(Path(self.runtime_python).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
                "LANG": "en_US.UTF-8",
            }
        )
        return env


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


class LogCollector:
    """The function's output for the current invocation, read from the runtime's and extensions' pipes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[str] = []
        self._size = 0
        self._fds: set[int] = set()

    def follow(self, fd: int) -> None:
        os.set_blocking(fd, False)
        with self._lock:
            self._fds.add(fd)
        threading.Thread(target=self._pump, args=(fd,), daemon=True, name=f"logs-{fd}").start()

    def _pump(self, fd: int) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                select.select([fd], [], [], 0.5)
            with self._lock:
                if fd not in self._fds:
                    return
                if not self._read(fd, reads=1):  # one read per hold: a chatty process cannot starve the others
                    self._fds.discard(fd)
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    return

    def _drain(self) -> None:
        """Read what every pipe holds now: a process writes its output before its next API call. Holds the lock."""
        for fd in list(self._fds):
            self._read(fd, reads=DRAIN_READS)

    def _read(self, fd: int, reads: int) -> bool:
        """Read what the pipe holds (at most `reads` chunks); False once the writer is gone. Holds the lock."""
        for _ in range(reads):
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            text = data.decode("utf-8", errors="replace")
            sys.stdout.write(text)
            sys.stdout.flush()
            self._keep(text)
        return True

    def _keep(self, text: str) -> None:
        """Keep an invocation's output up to MAX_LOG_BYTES (the sandbox's own log file gets all of it)."""
        if self._size < MAX_LOG_BYTES:
            self._chunks.append(text)
            self._size += len(text)
            if self._size >= MAX_LOG_BYTES:
                self._chunks.append(f"\n[output truncated at {MAX_LOG_BYTES} bytes for this invocation]\n")

    def add(self, line: str) -> None:
        """Append a line of the sandbox's own (START, END, REPORT) after everything the processes wrote before it."""
        with self._lock:
            self._drain()
            self._chunks.append(line + "\n")
            self._size += len(line) + 1
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def take(self) -> str:
        """Everything written so far, including what is still in the pipes."""
        with self._lock:
            self._drain()
            text = "".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            return text


class LocalStackClient:
    """Reports to LocalStack's executor endpoint; no proxies, as the Go init does."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.localstack_endpoint
        self._runtime_id = settings.runtime_id
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(f"{self._base}/{path}", data=body, method="POST")  # noqa: S310 - http only
        request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=30) as response:
                response.read()
        except OSError as exc:
            log("report %s failed: %s", path, exc)

    def ready(self) -> None:
        self._post(f"status/{self._runtime_id}/ready", b"{}")

    def init_error(self, body: bytes) -> None:
        self._post(f"status/{self._runtime_id}/error", body)

    def finished(self, request_id: str, logs: str, body: bytes, *, error: bool) -> None:
        self._post(f"invocations/{request_id}/logs", json.dumps({"logs": logs}).encode())
        self._post(f"invocations/{request_id}/{'error' if error else 'response'}", body)


def error_body(request_id: str, error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message}"}).encode()


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
        self._ready = False
        self._initialising = False
        self._needs_init = False
        self._init_error_reported = False
        self._init_started = 0.0
        self._init_duration_ms: float | None = None  # reported once, on the REPORT after an init
        self._shutting_down = False
        self._last_init_error: bytes | None = None
        self._stopped = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._init()

    def _init(self) -> None:
        """Start the external extensions and the runtime: Lambda's init phase."""
        with self._state:
            self._registration_open = True
            self._runtime_waiting = False
            self._initialising = True
            self._needs_init = False
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
            if self._shutting_down:
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
            if self._shutting_down or generation != self._runtime_generation:
                return
            current, self._current = self._current, None
            ready, during_init = self._ready, self._initialising
            failed = list(self._pending) if during_init else []
            if during_init:
                self._pending.clear()
            self._initialising = True  # nothing is dispatched until the environment is initialised again
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
                self._needs_init = True
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
            if self._shutting_down:
                return
            self._shutting_down = True
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
            needs_init, self._needs_init = self._needs_init, False
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
            self._initialising = True
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
            while not self._shutting_down and not (
                self._pending and not self._initialising and self._all_extensions_waiting() and self._runtime_alive()
            ):
                if self._runtime_generation != generation:
                    return None  # the runtime that asked was replaced (timeout, crash): never hand it work
                # a runtime that died while waiting is noticed by its watcher: look again shortly
                self._state.wait(timeout=0.05 if self._pending else None)
            invocation = None if self._shutting_down else self._dispatch()
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
                not self._initialising
                or not self._runtime_waiting
                or not self._all_extensions_waiting()
                or registered_external < expected_external
            ):
                return
            self._initialising = False
            self._init_duration_ms = (time.perf_counter() - self._init_started) * 1000
            first, self._ready = not self._ready, True
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
            self._initialising = True  # nothing is dispatched until the environment is initialised again
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
            report = not self._ready and not self._init_error_reported
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the function's log stream is the runtime's output, not this server's access log."""

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: HTTPStatus, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        if self.path == f"{RUNTIME_API}/invocation/next":
            invocation = sandbox.next_invocation()
            if invocation is None:
                self.close_connection = True
                return
            headers = {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                "Lambda-Runtime-Trace-Id": invocation.trace_id,
                "Content-Type": "application/json",
            }
            self._send(HTTPStatus.OK, invocation.payload, headers)
        elif self.path == f"{EXTENSION_API}/event/next":
            event = sandbox.next_event(self.headers.get("Lambda-Extension-Identifier", ""))
            if event is None:
                self._json(HTTPStatus.FORBIDDEN, {"errorType": "Extension.Unknown", "errorMessage": "not registered"})
            else:
                self._json(HTTPStatus.OK, event)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})

    def do_POST(self) -> None:
        sandbox = self.server.sandbox
        body = self._body()
        parts = self.path.strip("/").split("/")
        if self.path == "/invoke":
            sandbox.enqueue(json.loads(body))
            self._send(HTTPStatus.OK)
        elif self.path.startswith(f"{RUNTIME_API}/invocation/") and len(parts) == 5:
            request_id, outcome = parts[3], parts[4]
            if outcome not in ("response", "error"):
                self._json(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})
            elif sandbox.finish(request_id, body, error=outcome == "error"):
                self._json(HTTPStatus.ACCEPTED, {"status": "OK"})
            else:
                self._json(
                    HTTPStatus.BAD_REQUEST, {"errorType": "InvalidRequestID", "errorMessage": "not the current one"}
                )
        elif self.path == f"{RUNTIME_API}/init/error":
            sandbox.init_error(body)
            self._json(HTTPStatus.ACCEPTED, {"status": "OK"})
        elif self.path == f"{EXTENSION_API}/register":
            events = list(json.loads(body or b"{}").get("events") or [])
            status, payload, identifier = sandbox.register(self.headers.get("Lambda-Extension-Name", ""), events)
            headers = {"Lambda-Extension-Identifier": identifier} if identifier else {}
            self._json(status, payload, headers)
        elif self.path in (f"{EXTENSION_API}/init/error", f"{EXTENSION_API}/exit/error"):
            log("extension %s: %s", self.path.rsplit("/", 2)[-2], body.decode(errors="replace"))
            self._json(HTTPStatus.ACCEPTED, {"status": "OK"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"errorType": "NotFound", "errorMessage": self.path})


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", sandbox.settings.port), Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # without it every answer waits ~40 ms for the client's delayed ACK (Nagle)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def main() -> int:
    settings = Settings.from_environ(dict(os.environ))
    sandbox = Sandbox(settings)
    server = SandboxServer(sandbox)
    threading.Thread(target=server.serve_forever, daemon=True, name="api").start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=sandbox.shutdown, daemon=True).start())
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=sandbox.shutdown, daemon=True).start())
    try:
        sandbox.start()
        sandbox.wait()
    except Exception:
        log("sandbox failed:\n%s", traceback.format_exc())
        sandbox.localstack.init_error(error_body("init", "Sandbox.Failure", "the local sandbox failed to start"))
        return 1
    finally:
        sandbox.kill_all()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
