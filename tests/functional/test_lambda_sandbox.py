"""The host executor's sandbox, one execution environment with AWS's real runtime client (`awslambdaric`),
driven the way LocalStack drives it (see tests/support/sandbox.py)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from samhost.processes import process_tree, running
from samhost.venvs import lambda_python
from support.sandbox import ARN, SandboxLauncher, children_of


def kill_and_wait(pid: int) -> None:
    """SIGKILL, then wait until the process is gone: the scenario is an invocation that arrives after the death."""
    tree = process_tree(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while running(tree) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_invocation_gets_lambdas_context_and_logs(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start(
        "app.handler",
        """
        import os
        print("cold start")
        def handler(event, context):
            print("event", event["n"])
            return {
                "function": context.function_name,
                "memory": context.memory_limit_in_mb,
                "remaining": context.get_remaining_time_in_millis(),
                "request_id": context.aws_request_id,
                "arn": context.invoked_function_arn,
                "log_stream": context.log_stream_name,
                "task_root": os.environ["LAMBDA_TASK_ROOT"],
                "execution_env": os.environ["AWS_EXECUTION_ENV"],
                "leaked": [k for k in os.environ if k.startswith(("_LOCALBUS", "LOCALSTACK_RUNTIME"))],
            }
        """,
    )
    assert env.endpoint.next().path == "status/env1/ready"

    kind, body, logs = env.invoke({"n": 1})
    assert kind == "response"
    assert body["function"] == "probe"
    assert body["memory"] == "256"  # a string, as awslambdaric gives it
    assert 0 < body["remaining"] <= 3000
    assert body["arn"] == ARN
    assert body["log_stream"] == "2026/11/26/[$LATEST]abc"
    assert body["execution_env"] == "AWS_Lambda_python3.13"
    assert body["leaked"] == []
    lines = logs.splitlines()
    assert lines[0].startswith("INIT_START")
    assert "cold start" in lines
    assert lines[lines.index(f"START RequestId: {body['request_id']} Version: $LATEST") + 1] == "event 1"
    assert f"END RequestId: {body['request_id']}" in lines
    report = lines[-1]
    assert report.startswith(f"REPORT RequestId: {body['request_id']}\tDuration: ")
    assert "Memory Size: 256 MB" in report
    assert "Init Duration: " in report

    kind, second, logs = env.invoke({"n": 2})
    assert kind == "response"
    assert second["request_id"] != body["request_id"]
    assert "cold start" not in logs
    assert "Init Duration" not in logs


def test_errors_keep_lambdas_shapes_and_the_environment_recovers(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start(
        "app.handler",
        """
        import os, time
        def handler(event, context):
            if event["do"] == "raise":
                raise KeyError("missing")
            if event["do"] == "sleep":
                time.sleep(5)
            if event["do"] == "exit":
                os._exit(3)
            return "ok"
        """,
        timeout=1,
    )
    assert env.endpoint.next().path == "status/env1/ready"

    kind, body, logs = env.invoke({"do": "raise"})
    assert kind == "error"
    assert body["errorType"] == "KeyError"
    assert body["errorMessage"] == "'missing'"
    assert body["requestId"]
    assert body["stackTrace"]
    assert "[ERROR] KeyError" in logs

    kind, body, logs = env.invoke({"do": "sleep"})
    assert kind == "error"
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert "Task timed out after 1.00 seconds" in logs

    kind, body, logs = env.invoke({"do": "exit"})
    assert (kind, body["errorType"]) == ("error", "Runtime.ExitError")
    assert "exit status 3" in body["errorMessage"]

    kind, body, logs = env.invoke({"do": "ok"})
    assert (kind, body) == ("response", "ok")
    assert logs.startswith("INIT_START")  # a fresh environment after the crash


def test_a_runtime_that_dies_or_times_out_is_never_handed_the_next_invocation(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start(
        "app.handler",
        """
        import time
        def handler(event, context):
            time.sleep(event.get("sleep", 0))
            return "done"
        """,
        timeout=1,
    )
    assert env.endpoint.next().path == "status/env1/ready"
    # finishes just as the timeout fires (either may win, as in Lambda): a timed-out runtime must not take the
    # next invocation
    for _ in range(3):
        kind, body, _ = env.invoke({"sleep": 1.0})
        assert (kind, body) == ("response", "done") or (kind, body["errorType"]) == ("error", "Sandbox.Timedout")
        assert env.invoke({})[:2] == ("response", "done")

    # the runtime dies while it waits for work: the next invocation goes to a fresh one
    (runtime,) = [
        pid for pid in children_of(env.process.pid) if b"awslambdaric" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    kill_and_wait(runtime)
    kind, body, logs = env.invoke({})
    assert (kind, body) == ("response", "done")
    assert logs.startswith("INIT_START")


def test_an_init_that_never_finishes_times_the_invocation_out(sandboxes: SandboxLauncher, tmp_path: Path) -> None:
    hang = tmp_path / "hang-at-init"
    env = sandboxes.start(
        "app.handler",
        f"""
        import os, time
        while os.path.exists({str(hang)!r}):
            time.sleep(0.05)
        def handler(event, context):
            return "done"
        """,
        timeout=1,
        env={"_LOCALBUS_INIT_TIMEOUT_S": "1"},
    )
    assert env.endpoint.next().path == "status/env1/ready"
    hang.touch()
    (runtime,) = [
        pid for pid in children_of(env.process.pid) if b"awslambdaric" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    kill_and_wait(runtime)  # the next init hangs in the function's own import

    started = time.monotonic()
    kind, body, _ = env.invoke({})
    assert (kind, body["errorType"]) == ("error", "Sandbox.Timedout"), (body, env.log.read_text()[-3000:])
    assert "did not finish its init" in body["errorMessage"]
    assert time.monotonic() - started < 10

    hang.unlink()
    assert env.invoke({})[:2] == ("response", "done")


def test_an_import_error_fails_the_environments_start(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start("app.handler", "import not_a_module\n")
    report = env.endpoint.next()
    assert report.path == "status/env1/error"
    assert report.json()["errorType"] == "Runtime.ImportModuleError"
    assert "not_a_module" in report.json()["errorMessage"]
    assert env.process.wait(timeout=10) == 0


def test_layers_are_on_the_path_after_the_function_code(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start(
        "app.handler",
        """
        import shared, only_in_layer
        def handler(event, context):
            return [shared.WHERE, only_in_layer.WHERE]
        """,
        files={"shared.py": "WHERE = 'task'\n"},
        layers={
            "python/shared.py": "WHERE = 'layer'\n",
            "python/lib/python3.13/site-packages/only_in_layer.py": "WHERE = 'layer site-packages'\n",
        },
    )
    assert env.endpoint.next().path == "status/env1/ready"
    assert env.invoke({})[:2] == ("response", ["task", "layer site-packages"])  # the task root wins, as in Lambda


INTERNAL_EXTENSION = """
import json, os, threading, urllib.request
API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2020-01-01/extension"
SEEN = []

def call(path, body=None, headers=None):
    request = urllib.request.Request(API + path, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")

refused = call("/register", json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(), {"Lambda-Extension-Name": "inner"})
status, headers, _ = call("/register", json.dumps({"events": ["INVOKE"]}).encode(), {"Lambda-Extension-Name": "inner"})
ident = headers["Lambda-Extension-Identifier"]

def loop():
    while True:
        SEEN.append(call("/event/next", headers={"Lambda-Extension-Identifier": ident})[2])

threading.Thread(target=loop, daemon=True).start()

def handler(event, context):
    import time
    deadline = time.monotonic() + 2
    while not SEEN and time.monotonic() < deadline:  # the extension's thread records the event concurrently
        time.sleep(0.01)
    late = call("/register", json.dumps({"events": ["INVOKE"]}).encode(), {"Lambda-Extension-Name": "late"})
    return {"refused": [refused[0], refused[2]["errorType"]], "late": [late[0], late[2]["errorType"]],
            "seen": [(e["eventType"], e["requestId"]) for e in SEEN], "request_id": context.aws_request_id}
"""


def test_internal_extension_gets_invoke_events_before_the_handler(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start("app.handler", INTERNAL_EXTENSION)
    assert env.endpoint.next().path == "status/env1/ready"
    kind, body, _ = env.invoke({})
    assert kind == "response"
    assert body["refused"] == [400, "ShutdownEventNotSupportedForInternalExtension"]
    assert body["late"] == [403, "Extension.RegistrationClosed"]
    assert body["seen"] == [["INVOKE", body["request_id"]]]


EXTERNAL_EXTENSION = """\
#!{python}
import json, os, urllib.request
api = f"http://{{os.environ['AWS_LAMBDA_RUNTIME_API']}}/2020-01-01/extension"
request = urllib.request.Request(api + "/register", data=json.dumps({{"events": ["INVOKE", "SHUTDOWN"]}}).encode(),
                                 headers={{"Lambda-Extension-Name": "recorder"}}, method="POST")
with urllib.request.urlopen(request) as answer:
    ident = answer.headers["Lambda-Extension-Identifier"]
while True:
    with urllib.request.urlopen(urllib.request.Request(api + "/event/next",
                                headers={{"Lambda-Extension-Identifier": ident}})) as answer:
        event = json.loads(answer.read())
    with open(os.environ["LAMBDA_TASK_ROOT"] + "/events.jsonl", "a") as out:
        out.write(json.dumps(event) + "\\n")
    if event["eventType"] == "SHUTDOWN":
        break
"""

SIGTERM_AWARE = """
import os, signal
def on_term(signum, frame):
    open(os.environ["LAMBDA_TASK_ROOT"] + "/sigterm", "w").write("runtime got SIGTERM")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
def handler(event, context):
    return context.aws_request_id
"""


def test_shutdown_reaches_extensions_and_the_runtime_then_nothing_is_left(sandboxes: SandboxLauncher) -> None:
    env = sandboxes.start(
        "app.handler",
        SIGTERM_AWARE,
        layers={"extensions/recorder": EXTERNAL_EXTENSION.format(python=lambda_python())},
    )
    assert env.endpoint.next().path == "status/env1/ready"
    kind, request_id, _ = env.invoke({})
    assert kind == "response"
    children = children_of(env.process.pid)
    assert len(children) == 2  # the runtime and the extension

    assert env.terminate() == 0
    task = env.log.parent / "task"
    events = [json.loads(line) for line in (task / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["INVOKE", "SHUTDOWN"]
    assert events[0]["requestId"] == request_id
    assert events[1]["shutdownReason"] == "spindown"
    assert (task / "sigterm").read_text() == "runtime got SIGTERM"
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
