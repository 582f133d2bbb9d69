"""LocalStack's Lambda runtime executor `host`: each execution environment is a process on this machine, no Docker.

LocalStack selects it with `LAMBDA_RUNTIME_EXECUTOR=host`. For every environment it starts
`python -m eventbus_localstack.sandbox` (see that module: it serves the Lambda Runtime and Extensions APIs and runs
AWS's `awslambdaric` as the runtime) and speaks LocalStack's executor protocol with it through LocalStack's own
`ExecutorEndpoint`, exactly as the Docker executor does with its in-container init.

Settings, read from LocalStack's environment:
- `LOCALBUS_LAMBDA_PYTHON`: the interpreter that runs functions (Python 3.13 with `awslambdaric` and boto3, as in
  Lambda's `python3.13` runtime); required.
- `LOCALBUS_LAMBDA_LOG_DIR`: where each environment's log file goes (`<function>-<environment id>.log`);
  defaults to a folder under the system's temporary directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from localstack import config
from localstack.services.lambda_.invocation.executor_endpoint import ExecutorEndpoint
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

LOG = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 5.0  # the sandbox itself gives the runtime at most 2 s after SIGTERM


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def runtime_python() -> str:
    python = os.environ.get("LOCALBUS_LAMBDA_PYTHON", "")
    if not python or not os.access(python, os.X_OK):
        raise LambdaRuntimeException(
            "LOCALBUS_LAMBDA_PYTHON must name the Python 3.13 interpreter (with awslambdaric) that runs functions"
        )
    return python


def log_dir() -> Path:
    folder = Path(os.environ.get("LOCALBUS_LAMBDA_LOG_DIR") or Path(tempfile.gettempdir()) / "localbus-lambda")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class HostRuntimeExecutor(RuntimeExecutor):
    """One execution environment: a sandbox process (and its runtime child) in its own process group."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = ExecutorEndpoint(self.id, container_address=LOOPBACK)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = log_dir() / f"{function_version.id.function_name}-{id}.log"

    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        port = free_port()
        self.executor_endpoint.container_port = port
        code = self.function_version.config.code
        if code is None:
            raise LambdaRuntimeException("container image functions are not supported by the host executor")
        layers = [layer.code.get_unzipped_code_location() for layer in self.function_version.config.layers]
        env = {key: str(value) for key, value in env_vars.items()}
        env.update(
            {
                "LAMBDA_TASK_ROOT": str(code.get_unzipped_code_location()),
                "_LOCALBUS_PORT": str(port),
                "_LOCALBUS_LAYERS": os.pathsep.join(str(path) for path in layers),
                "_LOCALBUS_RUNTIME_PYTHON": runtime_python(),
                "_LOCALBUS_RUNTIME": str(self.function_version.config.runtime or "python3.13"),
            }
        )
        # the sandbox runs with LocalStack's interpreter and only the environment Lambda gives a function
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        if "LD_LIBRARY_PATH" in os.environ:
            env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root
        LOG.debug("starting host environment %s for %s on port %s", self.id, self.function_version.qualified_arn, port)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # our own sandbox module
                [sys.executable, "-m", "eventbus_localstack.sandbox"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.executor_endpoint.wait_for_startup()

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                LOG.warning("host environment %s did not stop in time; killing it", self.id)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE_S)
        try:
            self.executor_endpoint.shutdown()
        except Exception as exc:  # LocalStack's own endpoint may already be gone
            LOG.debug("endpoint shutdown for %s: %s", self.id, exc)

    def get_address(self) -> str:
        return LOOPBACK

    def get_endpoint_from_executor(self) -> str:
        return LOOPBACK

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{LOOPBACK}:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        return self.executor_endpoint.invoke(payload)

    def get_logs(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-20_000:]
        except OSError:
            return "no logs from this environment"

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        # unlike the Docker executor, never get_runtime_client_path(): that downloads the Go init from GitHub
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()
        for layer in function_version.config.layers:
            if layer.code:
                layer.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        """Nothing to clean: the unpacked code belongs to LocalStack's code store."""

    @classmethod
    def validate_environment(cls) -> bool:
        try:
            runtime_python()
        except LambdaRuntimeException as exc:
            LOG.warning("%s", exc)
            return False
        return True


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "host"

    def load(self, *args: object, **kwargs: object) -> type[RuntimeExecutor]:
        return HostRuntimeExecutor
