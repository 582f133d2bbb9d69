"""Invoke one deployed function of the local stack with a sample event and show its answer and its logs: the
Docker-free counterpart of `sam local invoke`.

    python -m samhost.invoke FUNCTION EVENT [--endpoint URL] [--stack-name NAME]

FUNCTION is a logical id of the project's template.yaml, resolved to its physical name through CloudFormation, or a
function's physical name. EVENT is a file, a sample of the project's tests/events/ by name (with or without
`.json`), or `-` for stdin.

The invocation is synchronous (RequestResponse) with LogType=Tail. Printed: the status code, the FunctionError if
any, the result (pretty JSON when it is JSON), then the invocation's log lines from CloudWatch Logs (group
/aws/lambda/<name>, its START to its REPORT line; the tail Lambda returns holds only the last 4 KB), or that tail
when CloudWatch Logs does not have them in time.

The endpoint: --endpoint, else AWS_ENDPOINT_URL, else http://127.0.0.1:4566 (`python -m hoststack.invoke` gives
the running local stack's). The stack: --stack-name, else samconfig.toml's `local` stack_name.

Exit status: 0 the function succeeded, 1 it failed (FunctionError) or the invoke call did, 2 nothing was invoked
(an unknown function or event, an event that is not JSON, no stack or no endpoint there).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from samhost.cfn import TemplateError, load_template
from samhost.deploy import TEMPLATE, aws_client, samconfig_stack_name
from samhost.venvs import REPO

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_logs import CloudWatchLogsClient

EVENTS_DIR = REPO / "tests" / "events"
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
LAMBDA_FUNCTION = "AWS::Lambda::Function"
LOG_WAIT_S = 5.0  # the executor ships an invocation's lines to CloudWatch Logs right after it; seldom needs 1 s
LOG_CLOCK_SKEW_MS = 5_000
MAX_LOG_PAGES = 50
MAX_FUNCTION_TIMEOUT_S = 900

EXIT_OK, EXIT_FUNCTION_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Nothing was invoked: the message is one line that says why, and what would do."""


@dataclass(frozen=True)
class LogEvent:
    """One CloudWatch Logs event, as much of it as slicing by request id needs."""

    stream: str
    message: str


@dataclass(frozen=True)
class Invocation:
    """What one invocation gave back, as plain values."""

    function_name: str
    request_id: str
    status_code: int
    function_error: str | None
    payload: bytes
    log_lines: tuple[str, ...]
    log_source: str  # where log_lines come from, for the reader

    @property
    def succeeded(self) -> bool:
        return self.function_error is None

    def result(self) -> Any:  # noqa: ANN401 - whatever JSON the function returned
        """The payload as JSON, or as text when it is not JSON."""
        text = self.payload.decode("utf-8", errors="replace")
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return text


# --- where things are: endpoint, event, function -----------------------------------------------------------------


def default_endpoint(environ: Mapping[str, str]) -> str:
    """AWS_ENDPOINT_URL, else LocalStack's usual address."""
    return environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT


def sample_names(events_dir: Path = EVENTS_DIR) -> list[str]:
    return sorted(path.stem for path in events_dir.glob("*.json"))


def resolve_event(argument: str, events_dir: Path = EVENTS_DIR) -> Path | None:
    """The event's file: a path, or a sample's name with or without `.json`; None for `-` (stdin)."""
    if argument == "-":
        return None
    candidates = [Path(argument), events_dir / argument, events_dir / f"{argument}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"no event {argument!r}: give a file, - for stdin, or a sample of {events_dir}: "
        + ", ".join(sample_names(events_dir))
    )


def read_event(source: Path | None, stdin: TextIO) -> bytes:
    """The event as the invoke call's payload; UsageError unless it is JSON."""
    text = stdin.read() if source is None else source.read_text()
    try:
        json.loads(text)
    except ValueError as error:
        raise UsageError(f"the event {source or '(stdin)'} is not JSON: {error}") from None
    return text.encode()


def template_functions(template: Path = TEMPLATE) -> list[str]:
    """The logical ids of the template's functions, in its order (none when it cannot be read)."""
    try:
        resources = load_template(template).get("Resources", {})
    except (OSError, TemplateError):
        return []
    kinds = ("AWS::Serverless::Function", LAMBDA_FUNCTION)
    return [name for name, resource in resources.items() if resource.get("Type") in kinds]


def unknown_function(name: str, stack_name: str, functions: Sequence[str] | None) -> UsageError:
    """The one-line message for a FUNCTION that names nothing; `functions`: the stack's, None without a stack."""
    if functions is None:
        return UsageError(
            f"no function {name!r} and no stack {stack_name!r} (deploy it, or give --stack-name): "
            f"choose one of {', '.join(template_functions())} or a function's name"
        )
    return UsageError(
        f"no function {name!r} in stack {stack_name!r}: choose one of {', '.join(functions)} or a function's name"
    )


def resolve_function(
    cloudformation: CloudFormationClient, lambda_client: LambdaClient, stack_name: str, name: str
) -> str:
    """The physical name of FUNCTION: a logical id of the stack, else a function that exists under that name."""
    try:
        detail = cloudformation.describe_stack_resource(StackName=stack_name, LogicalResourceId=name)
    except ClientError:
        pass  # no such logical id (or no stack): maybe a physical name
    else:
        resource = detail["StackResourceDetail"]
        if resource.get("ResourceType") == LAMBDA_FUNCTION:
            return str(resource["PhysicalResourceId"])
    try:
        lambda_client.get_function(FunctionName=name)
    except ClientError:
        raise unknown_function(name, stack_name, stack_functions(cloudformation, stack_name)) from None
    return name


def stack_functions(cloudformation: CloudFormationClient, stack_name: str) -> list[str] | None:
    """The logical ids of the stack's functions; None when there is no such stack."""
    try:
        resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    except ClientError:
        return None
    return sorted(item["LogicalResourceId"] for item in resources if item.get("ResourceType") == LAMBDA_FUNCTION)


# --- one invocation and its logs ----------------------------------------------------------------------------------


def invocation_lines(events: Iterable[LogEvent], request_id: str) -> list[str] | None:
    """The lines of one invocation: its START line to its REPORT line, in the log stream that holds them, with a
    cold start's INIT lines before them; None while the REPORT line is not there."""
    streams: dict[str, list[str]] = {}
    for event in events:
        streams.setdefault(event.stream, []).append(event.message.rstrip("\n"))
    start_line, report_line = f"START RequestId: {request_id}", f"REPORT RequestId: {request_id}"
    for lines in streams.values():
        start = next((n for n, line in enumerate(lines) if line.startswith(start_line)), None)
        if start is None:
            continue
        end = next((n for n in range(start, len(lines)) if lines[n].startswith(report_line)), None)
        if end is None:
            return None
        first = start
        for n in range(start - 1, -1, -1):  # the environment's init, if this is its first invocation
            if lines[n].startswith(("START RequestId:", "END RequestId:", "REPORT RequestId:")):
                break
            if lines[n].startswith("INIT_START"):
                first = n
                break
        return lines[first : end + 1]
    return None


def tail_lines(log_result: str | None) -> list[str]:
    """LogType=Tail's LogResult: the base64 of the invocation's last 4 KB of log."""
    if not log_result:
        return []
    return base64.b64decode(log_result).decode("utf-8", errors="replace").splitlines()


def log_events(logs: CloudWatchLogsClient, group: str, since_ms: int) -> list[LogEvent]:
    """The group's events since `since_ms`, every stream, in time order; none when the group is not there yet."""
    found: list[LogEvent] = []
    arguments: dict[str, Any] = {"logGroupName": group, "startTime": since_ms}
    for _ in range(MAX_LOG_PAGES):
        try:
            page = logs.filter_log_events(**arguments)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return found
            raise
        found.extend(LogEvent(str(item.get("logStreamName", "")), str(item["message"])) for item in page["events"])
        token = page.get("nextToken")
        if not token or token == arguments.get("nextToken"):
            break
        arguments["nextToken"] = token
    return found


def fetch_invocation_logs(
    logs: CloudWatchLogsClient,
    group: str,
    request_id: str,
    since_ms: int,
    wait_s: float = LOG_WAIT_S,
) -> list[str] | None:
    """The invocation's lines from CloudWatch Logs, waiting up to `wait_s` for them to arrive."""
    deadline = time.monotonic() + wait_s
    while True:
        lines = invocation_lines(log_events(logs, group, since_ms), request_id)
        if lines is not None or time.monotonic() >= deadline:
            return lines
        time.sleep(0.2)


def invoke(
    lambda_client: LambdaClient,
    logs: CloudWatchLogsClient,
    function_name: str,
    payload: bytes,
    *,
    log_wait_s: float = LOG_WAIT_S,
) -> Invocation:
    since_ms = int(time.time() * 1000) - LOG_CLOCK_SKEW_MS
    response = lambda_client.invoke(
        FunctionName=function_name, InvocationType="RequestResponse", LogType="Tail", Payload=payload
    )
    body = response["Payload"].read()
    request_id = str(response["ResponseMetadata"].get("RequestId", ""))
    group = f"/aws/lambda/{function_name}"
    missing = f"not found in {group}"
    try:
        lines = fetch_invocation_logs(logs, group, request_id, since_ms, log_wait_s) if request_id else None
    except (ClientError, BotoCoreError) as error:  # the logs are a convenience: the tail still says something
        lines, missing = None, f"{group} unreadable: {type(error).__name__}"
    if lines is not None:
        source = f"CloudWatch Logs {group}"
    else:
        lines, source = tail_lines(response.get("LogResult")), f"LogResult tail (last 4 KB; {missing})"
    return Invocation(
        function_name=function_name,
        request_id=request_id,
        status_code=int(response["StatusCode"]),
        function_error=response.get("FunctionError"),
        payload=body,
        log_lines=tuple(lines),
        log_source=source,
    )


# --- the command line ---------------------------------------------------------------------------------------------


def render(invocation: Invocation) -> str:
    result = invocation.result()
    shown = json.dumps(result, indent=2, ensure_ascii=False) if not isinstance(result, str) else result
    lines = [f"StatusCode: {invocation.status_code}"]
    if invocation.function_error:
        lines.append(f"FunctionError: {invocation.function_error}")
    lines += [shown, f"--- logs of request {invocation.request_id}, from {invocation.log_source} ---"]
    # the runtime writes a traceback as one event, its lines separated by \r: a terminal would overprint them
    lines += (line.replace("\r", "\n") for line in invocation.log_lines)
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m samhost.invoke",
        description="Invoke a function of the local stack with an event; print its result and its logs.",
    )
    parser.add_argument("function", help="a logical id of the template's functions, or a function's name")
    parser.add_argument("event", help="a file, a sample of tests/events/ by name, or - for stdin")
    parser.add_argument("--endpoint", help="LocalStack's URL (default: AWS_ENDPOINT_URL, else :4566)")
    parser.add_argument("--stack-name", help="the stack (default: samconfig.toml's local stack_name)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    arguments = parse_arguments(argv)
    endpoint = arguments.endpoint or default_endpoint(os.environ)
    stack_name = arguments.stack_name or samconfig_stack_name("local")
    try:
        payload = read_event(resolve_event(arguments.event), stdin)
        # once: an Invoke that timed out may have run, and a retry would run the function again
        lambda_client = aws_client("lambda", endpoint, attempts=1, read_timeout=MAX_FUNCTION_TIMEOUT_S + 10)
        name = resolve_function(aws_client("cloudformation", endpoint), lambda_client, stack_name, arguments.function)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BotoCoreError as error:  # nothing answers there
        print(f"error: no local stack at {endpoint} ({error}); start it, or give --endpoint", file=sys.stderr)
        return EXIT_USAGE
    try:
        invocation = invoke(lambda_client, aws_client("logs", endpoint), name, payload)
    except (ClientError, BotoCoreError) as error:
        print(f"error: invoking {name} failed: {error}", file=sys.stderr)
        return EXIT_FUNCTION_ERROR
    print(render(invocation), file=stdout)
    return EXIT_OK if invocation.succeeded else EXIT_FUNCTION_ERROR


if __name__ == "__main__":
    sys.exit(main())
