"""Lambda SnapStart on one machine: a function initialised once, snapshotted, and restored into several environments.

Lambda's SnapStart snapshots a microVM's memory after init and resumes copies of it. Here the snapshot is a process:
it loads the function as Lambda does (its CodeUri and the layer on the path, `AWS_LAMBDA_INITIALIZATION_TYPE` set to
`snap-start`), runs the runtime's before-snapshot hooks with AWS's own runner (awslambdaric's), then forks once per
restored environment. Each fork runs the after-restore hooks, as the runtime does after `restore/next`, and then
calls the handler with its own events. The forks share what init left in memory, as restored environments do; two
things a fork does that a snapshot does not are undone or avoided: CPython reseeds `random` in a forked child (the
snapshot's random state is put back before the hooks run), and OpenTelemetry's span processor empties its queue
after a fork (the before-snapshot hook has exported it by then). Threads other than the forking one do not survive
a fork, while a snapshot keeps them: a client that kept a thread across the snapshot breaks here, not in Lambda.

    results = restore(code_uri, "app.handler", environment, [[event_a], [event_b]], layers=[layer_dir])

Each restored environment reports how long its restore took (fork to hooks done), each call's time and answer, and
the `observe` expression's value (e.g. its telemetry's environment id), as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOT = r"""
import importlib, json, os, sys, time, uuid
plan = json.loads(sys.argv[1])
started = time.perf_counter()
module_name, handler_name = plan["handler"].rsplit(".", 1)
module = importlib.import_module(module_name)          # init, as Lambda runs it
init_ms = (time.perf_counter() - started) * 1000
from awslambdaric import lambda_runtime_hooks_runner as hooks
hooks.run_before_snapshot()

class Context:
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    function_version = "1"
    invoked_function_arn = f"arn:aws:lambda:eu-west-1:123456789012:function:{function_name}:live"
    memory_limit_in_mb = "512"
    log_group_name = f"/aws/lambda/{function_name}"
    log_stream_name = "restored"
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
    def get_remaining_time_in_millis(self):
        return 30_000

import random
snapshot_random = random.getstate()  # os.fork() reseeds `random` in the child; a snapshot does not
children = []
for index, events in enumerate(plan["environments"]):
    pid = os.fork()
    if pid:
        children.append(pid)
        continue
    code = 0
    try:
        forked = time.perf_counter()
        random.setstate(snapshot_random)
        hooks.run_after_restore()
        restore_ms = (time.perf_counter() - forked) * 1000
        handler = getattr(module, handler_name)
        calls = []
        for event in events:
            call_started = time.perf_counter()
            answer = handler(event, Context())
            calls.append({"ms": (time.perf_counter() - call_started) * 1000, "answer": answer})
        observed = eval(plan["observe"], vars(module)) if plan["observe"] else None
        result = {"init_ms": init_ms, "restore_ms": restore_ms, "calls": calls, "observed": observed}
    except BaseException as error:
        result = {"error": f"{type(error).__name__}: {error}"}
        code = 1
    with open(os.path.join(plan["out"], f"{index}.json"), "w") as out:
        json.dump(result, out, default=str)
    os._exit(code)
failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
os._exit(1 if failed else 0)
"""


@dataclass(frozen=True)
class Restored:
    """One restored environment's report."""

    init_ms: float
    restore_ms: float
    calls: list[dict[str, Any]]
    observed: Any


class SnapshotError(RuntimeError):
    """The snapshot process or a restored environment failed."""


def restore(
    code_uri: Path,
    handler: str,
    environment: Mapping[str, str],
    environments: Sequence[Sequence[Mapping[str, Any]]],
    *,
    layers: Sequence[Path] = (),
    observe: str = "",
    python: str = sys.executable,
    timeout_s: float = 120.0,
) -> list[Restored]:
    """Initialise the function once, snapshot it, restore one environment per entry of `environments` and call the
    handler with that entry's events. `layers`: the layers' folders (their contents, as under /opt/python), after
    the code on the path as in Lambda; `observe` is evaluated in the handler module's namespace after the calls."""
    with tempfile.TemporaryDirectory(prefix="snapstart-") as out:
        plan = {
            "handler": handler,
            "environments": [list(events) for events in environments],
            "observe": observe,
            "out": out,
        }
        env = {
            **environment,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
            "PYTHONPATH": os.pathsep.join([str(code_uri), *map(str, layers)]),
        }
        # a session of its own: on a timeout the snapshot and every environment restored from it are stopped
        process = subprocess.Popen(
            [python, "-c", SNAPSHOT, json.dumps(plan)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise SnapshotError(f"no answer from the restored environments within {timeout_s:.0f} s") from None
        reports = [
            json.loads((Path(out) / f"{index}.json").read_text())
            for index in range(len(environments))
            if (Path(out) / f"{index}.json").exists()
        ]
        errors = [report["error"] for report in reports if "error" in report]
        if process.returncode != 0 or errors or len(reports) != len(environments):
            tail = "\n".join(stderr.splitlines()[-15:])
            raise SnapshotError(f"snapshot run failed ({'; '.join(errors) or process.returncode}): {tail}")
        return [Restored(r["init_ms"], r["restore_ms"], r["calls"], r["observed"]) for r in reports]
