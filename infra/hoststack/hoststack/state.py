"""The local stack's state on disk, shared by the supervisor and the commands: what `up` started (state.json,
written by the supervisor only), what a deploy deployed (deployment.json), and the pieces held down on purpose
(holds.json)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from samhost.processes import running
from samhost.venvs import REPO

DEFAULT_STATE_DIR = REPO / ".local" / "stack"
STATE_FILE = "state.json"  # written by the supervisor only: the pieces, their pids and addresses
DEPLOYMENT_FILE = "deployment.json"  # written by a deploy only: the stack's outputs, resources and parameters
HOLDS_FILE = "holds.json"  # written by `hold` only (fault runs): pieces kept down until a time


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
    secret: str = ""  # what its clients need to talk to it (an extra's signing key, say)

    def alive(self) -> bool:
        return bool(running({self.pid: self.start_time}))


@dataclass
class StackState:
    """What `up` started and `deploy` deployed, as written to state.json."""

    state_dir: str
    supervisor: Piece
    pieces: dict[str, Piece] = field(default_factory=dict)
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
            deployment=deployment,
        )


def write_json(path: Path, value: object) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(value, out, indent=2)
    Path(temporary).replace(path)


def hold(state_dir: Path, name: str, seconds: float) -> None:
    """Keep a piece of the running stack down for `seconds` (the supervisor stops it, then starts it again at its
    address once the time is up): a fault for the fault suite, or to see the application cope with it by hand."""
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
