"""What the executor passes to the sandbox, and the environment the function sees."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
