"""LocalStack on the host, without Docker: its own venv (with the project's plugins) and a managed server process.

LocalStack runs from a venv of its own (it pins its own boto and moto), with the plugin package at
infra/localstack_ext installed editable: DynamoDB and DynamoDB Streams from moto, and the host Lambda runtime
executor. The server binds 127.0.0.1 only, including the Node processes it starts for Kinesis (a preload moves
their wildcard listens to loopback), and stopping it also stops every process it started.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from samhost.processes import ManagedProcess, free_port, process_tree, running, signal_all

LOCALSTACK_REQUIREMENTS = ("localstack-core[runtime]==2026.3.0", "service_identity")
# newer releases of these break localstack-core 2026.3.0
LOCALSTACK_CONSTRAINTS = ("cbor2<6", "pyopenssl<26", "cryptography<47")
PLUGIN_PACKAGE = Path(__file__).resolve().parents[2] / "localstack_ext"
NODE_LOOPBACK_PRELOAD = PLUGIN_PACKAGE / "node" / "listen_loopback.js"
INSTALL_MARKER = ".eventbus-localstack-installed"
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
# a developer's own settings that would change what LocalStack's interpreter imports
LOCALSTACK_ENV_NOISE = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


def ensure_localstack_venv(venv_dir: Path, python: str) -> Path:
    """Create or update LocalStack's venv (with the plugin package, editable) and return its interpreter.

    Idempotent: a marker keyed by the pinned requirements, the plugin's pyproject and its location makes a re-run
    instant. The plugin is installed editable, so editing its modules needs no re-install; changing its
    pyproject (say, an entry point) re-installs it. `python` creates the venv when it does not exist (3.12+).
    """
    venv_dir.mkdir(parents=True, exist_ok=True)
    venv_python = venv_dir / "bin" / "python"
    with (venv_dir / ".eventbus-install.lock").open("w") as lock:
        # two test sessions may share the venv
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv_dir / INSTALL_MARKER
        digest = _install_digest()
        if venv_python.exists() and marker.exists() and marker.read_text().strip() == digest:
            return venv_python
        if not venv_python.exists():
            _run([python, "-m", "venv", str(venv_dir)], "creating LocalStack's venv")
        constraints = venv_dir / "eventbus-constraints.txt"
        constraints.write_text("\n".join(LOCALSTACK_CONSTRAINTS) + "\n")
        _run(
            [
                str(venv_python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-c",
                str(constraints),
                *LOCALSTACK_REQUIREMENTS,
                "-e",
                str(PLUGIN_PACKAGE),
            ],
            "installing LocalStack and the project's plugins",
        )
        marker.write_text(digest + "\n")
    return venv_python


def _install_digest() -> str:
    digest = hashlib.sha256()
    for part in (*LOCALSTACK_REQUIREMENTS, *LOCALSTACK_CONSTRAINTS, str(PLUGIN_PACKAGE)):
        digest.update(part.encode() + b"\0")
    digest.update((PLUGIN_PACKAGE / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def _run(argv: list[str], what: str) -> None:
    """A long install step: says what it does, then how long it took (on stderr, the progress of `make setup`)."""
    print(f"==> {what}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    print(f"    done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output}")


@dataclass
class LocalStack:
    process: ManagedProcess
    url: str
    # every process LocalStack started (pid -> start time), seen while it ran: Kinesis's Node server and the
    # Lambda executors run in sessions of their own, so a signal to LocalStack's process group misses them
    started: dict[int, int] = field(default_factory=dict)

    def processes(self) -> dict[int, int]:
        """LocalStack and its live descendants, pid -> start time (clock ticks since boot)."""
        tree = process_tree(self.process.process.pid)
        self.started.update(tree)
        return tree

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s; then the same for whatever LocalStack started and left behind."""
        self.processes()
        self.process.stop()
        leftovers = {pid: self.started[pid] for pid in running(self.started)}
        signal_all(leftovers, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while running(leftovers) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal_all(leftovers, signal.SIGKILL)


def start_localstack(
    log_dir: Path,
    data_dir: Path,
    python: Path,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    *,
    cache_dir: Path | None = None,
) -> LocalStack:
    """Start LocalStack on 127.0.0.1 (a free port by default) and wait until it answers its health check.

    `data_dir` is its FILESYSTEM_ROOT. What LocalStack keeps across runs lives in `cache_dir` (by default next to
    `python`'s venv), so a fresh `data_dir` costs nothing: the packages it installs on first use (kinesis-local from
    npm) and its service catalog index (built on the first request, ~3 s). `extra_env` is applied last.
    """
    port = port or free_port()
    _link_cache(data_dir, cache_dir or python.parent.parent / "localstack-cache")
    (data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    env = {
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(data_dir),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        # the default (twisted) gateway ignores the host and binds 0.0.0.0
        "GATEWAY_SERVER": "hypercorn",
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "DNS_ADDRESS": "0",
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "PROVIDER_OVERRIDE_DYNAMODB": "moto",
        "PROVIDER_OVERRIDE_DYNAMODBSTREAMS": "moto",
        "LAMBDA_RUNTIME_EXECUTOR": "host",
        # its SQS mappings back off up to 10 s after an empty poll: a retry whose delay just ended would wait
        # for that (AWS long-polls); 1 s keeps the retry queue's delays close to what they say
        "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC": "1",
        "NODE_OPTIONS": f'--require "{NODE_LOOPBACK_PRELOAD}"',
        # LocalStack unpacks functions and layers under tempfile.gettempdir(): keep them in this instance's folder
        "TMPDIR": str(data_dir / "tmp"),
    }
    env.update(extra_env or {})
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    process = ManagedProcess.start(
        "localstack",
        [str(python), "-m", "localstack.runtime.main"],
        log_dir=log_dir,
        wait_ports=[port],
        env=env,
        drop_env=LOCALSTACK_ENV_NOISE,
        timeout=START_TIMEOUT_SECONDS,
    )
    localstack = LocalStack(process, f"http://127.0.0.1:{port}")
    while not _healthy(localstack.url):
        if process.process.poll() is not None or time.monotonic() > deadline:
            localstack.stop()
            raise RuntimeError(
                f"LocalStack did not become healthy at {localstack.url} within {START_TIMEOUT_SECONDS:.0f} s:\n"
                f"{process.log_tail(40)}"
            )
        time.sleep(0.1)
    localstack.processes()
    return localstack


def _link_cache(data_dir: Path, cache_dir: Path) -> None:
    """Point LocalStack's `var/lib/localstack/{lib,cache}` under its FILESYSTEM_ROOT at `cache_dir`."""
    var_lib = data_dir / "var" / "lib" / "localstack"
    var_lib.mkdir(parents=True, exist_ok=True)
    for name in ("lib", "cache"):
        shared = cache_dir / name
        shared.mkdir(parents=True, exist_ok=True)
        if not (var_lib / name).is_symlink() and not (var_lib / name).exists():
            (var_lib / name).symlink_to(shared.resolve(), target_is_directory=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as response:  # noqa: S310 - our server
            return isinstance(json.loads(response.read()).get("services"), dict)
    except (OSError, ValueError):
        return False
