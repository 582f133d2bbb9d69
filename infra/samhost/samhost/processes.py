"""Processes of the local stack: start a server, wait for its ports, stop it by its PID (never by name)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_of(address: str) -> int:
    """The port of `host:port` or `scheme://host:port[/path]`."""
    return int(address.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def binary(name: str, *candidates: Path) -> str:
    """The first existing candidate, else `name` on PATH; fails the test run loudly when missing."""
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make setup` (it installs every server the suite needs)")
    return found


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        wait_ports: Sequence[int],
        env: Mapping[str, str] | None = None,
        drop_env: Sequence[str] = (),
        timeout: float = 15.0,
    ) -> ManagedProcess:
        environment = {key: value for key, value in os.environ.items() if key not in drop_env}
        environment.update(env or {})
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:  # appended: a restarted process keeps what the last one said
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environment)
        managed = cls(name, process, log_path)
        deadline = time.monotonic() + timeout
        while not all(port_open(port) for port in wait_ports):
            if process.poll() is not None or time.monotonic() > deadline:
                managed.stop()
                raise RuntimeError(f"{name} did not start: {managed.log_tail()}")
            time.sleep(0.02)
        # some servers (tansu) exit 0 right after a failed bind: make sure it is still ours that listens
        time.sleep(0.05)
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited right after start: {managed.log_tail()}")
        return managed

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash would end it (what it held only in memory is gone), and wait for it."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


# --- process trees: what a server started, by pid and start time (a pid can be reused) -------------------------


def process_tree(root: int) -> dict[int, int]:
    """`root` and its live descendants, pid -> start time (to tell a process from a later one with its pid)."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], starts[int(entry.name)] = stat
    if root not in starts:
        return {}
    tree = {root: starts[root]}
    found = True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree[pid] = starts[pid]
                found = True
    return tree


def running(processes: Mapping[int, int]) -> list[int]:
    """The pids of `processes` (pid -> start time, as from `process_tree`) still running (zombies are not)."""
    return [pid for pid, start in processes.items() if start_time(pid) == start]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) from /proc/PID/stat; None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: the fields after it are positional
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[1]), int(fields[19])


def start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[1]


def signal_all(processes: Mapping[int, int], signum: signal.Signals) -> None:
    for pid in running(processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment holds `text` (say, a state folder): what a stopped stack
    must not leave, even processes re-parented away from its tree."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or start_time(int(entry.name)) is None:
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found
