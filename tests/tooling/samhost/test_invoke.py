"""`python -m samhost.invoke`'s pure parts: which event file and which function an argument names, where the
endpoint comes from, one invocation's lines out of a log group, what is printed (the live path is checked by
hand against the local stack, and by the e2e suite)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from samhost import invoke as cli
from samhost.invoke import Invocation, LogEvent, UsageError

REQUEST = "7e28571c-c6dd-461d-8fa3-a380a951be32"
OTHER = "b9b6223e-ae9b-4c71-9c0c-dbd6dc3430f7"


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code}!"}}, operation)


def invocation_events(request_id: str, stream: str = "s1", *body: str) -> list[LogEvent]:
    lines = [f"START RequestId: {request_id} Version: $LATEST\n", *body, f"END RequestId: {request_id}\n"]
    lines.append(f"REPORT RequestId: {request_id}\tDuration: 14.82 ms\tBilled Duration: 15 ms\t\n")
    return [LogEvent(stream, line) for line in lines]


class TestEvents:
    def test_a_sample_by_name_with_or_without_json_and_a_path(self, tmp_path):
        (tmp_path / "scheduled_event.json").write_text("{}")
        elsewhere = tmp_path / "mine.json"
        elsewhere.write_text("{}")
        assert cli.resolve_event("scheduled_event", tmp_path) == tmp_path / "scheduled_event.json"
        assert cli.resolve_event("scheduled_event.json", tmp_path) == tmp_path / "scheduled_event.json"
        assert cli.resolve_event(str(elsewhere), tmp_path / "none") == elsewhere
        assert cli.resolve_event("-", tmp_path) is None

    def test_every_shipped_sample_resolves(self):
        names = cli.sample_names()
        assert {"kafka_msk_orders", "dynamodb_stream_orders", "scheduled_event", "apigw_rest_get_health"} <= set(names)
        for name in names:
            assert json.loads(cli.read_event(cli.resolve_event(name), io.StringIO()))

    def test_an_unknown_event_lists_the_samples_on_one_line(self, tmp_path):
        for name in ("b_event", "a_event"):
            (tmp_path / f"{name}.json").write_text("{}")
        with pytest.raises(UsageError) as raised:
            cli.resolve_event("c_event", tmp_path)
        message = str(raised.value)
        assert "\n" not in message
        assert message.endswith(": a_event, b_event")
        assert "'c_event'" in message

    def test_the_event_must_be_json(self, tmp_path):
        assert cli.read_event(None, io.StringIO('{"detail": {}}')) == b'{"detail": {}}'
        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        with pytest.raises(UsageError, match=r"broken\.json is not JSON"):
            cli.read_event(broken, io.StringIO())
        with pytest.raises(UsageError, match=r"\(stdin\) is not JSON"):
            cli.read_event(None, io.StringIO(""))


class TestEndpoint:
    def test_aws_endpoint_url_else_4566(self):
        assert cli.default_endpoint({"AWS_ENDPOINT_URL": "http://h:1"}) == "http://h:1"
        assert cli.default_endpoint({}) == "http://127.0.0.1:4566"


class FakeCloudFormation:
    def __init__(self, resources: dict[str, tuple[str, str]] | None) -> None:
        self.resources = resources  # logical id -> (type, physical id); None: no stack

    def describe_stack_resource(self, *, StackName: str, LogicalResourceId: str) -> dict[str, Any]:  # noqa: N803
        if self.resources is None or LogicalResourceId not in self.resources:
            raise client_error("ValidationError", "DescribeStackResource")
        kind, physical = self.resources[LogicalResourceId]
        return {"StackResourceDetail": {"ResourceType": kind, "PhysicalResourceId": physical}}

    def describe_stack_resources(self, *, StackName: str) -> dict[str, Any]:  # noqa: N803
        if self.resources is None:
            raise client_error("ValidationError", "DescribeStackResources")
        return {
            "StackResources": [
                {"LogicalResourceId": name, "ResourceType": kind} for name, (kind, _) in self.resources.items()
            ]
        }


class FakeLambda:
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def get_function(self, *, FunctionName: str) -> dict[str, Any]:  # noqa: N803
        if FunctionName not in self.names:
            raise client_error("ResourceNotFoundException", "GetFunction")
        return {"Configuration": {"FunctionName": FunctionName}}


STACK = FakeCloudFormation(
    {
        "IngestFunction": ("AWS::Lambda::Function", "bus-IngestFunction-1a2b"),
        "CdcFunction": ("AWS::Lambda::Function", "bus-CdcFunction-3c4d"),
        "DeadLetterQueue": ("AWS::SQS::Queue", "https://sqs/dlq"),
    }
)


class TestFunctions:
    def test_a_logical_id_becomes_its_physical_name(self):
        assert cli.resolve_function(STACK, FakeLambda(set()), "bus", "IngestFunction") == "bus-IngestFunction-1a2b"

    def test_a_physical_name_is_taken_as_it_is(self):
        lam = FakeLambda({"bus-CdcFunction-3c4d"})
        assert cli.resolve_function(STACK, lam, "bus", "bus-CdcFunction-3c4d") == "bus-CdcFunction-3c4d"

    def test_an_unknown_name_or_a_resource_that_is_no_function_lists_the_stacks_functions(self):
        for name in ("Nope", "DeadLetterQueue"):
            with pytest.raises(UsageError) as raised:
                cli.resolve_function(STACK, FakeLambda(set()), "bus", name)
            assert str(raised.value) == (
                f"no function {name!r} in stack 'bus': choose one of CdcFunction, IngestFunction or a function's name"
            )

    def test_without_the_stack_the_template_functions_are_the_choices(self):
        with pytest.raises(UsageError, match=r"no stack 'bus'.*IngestFunction, KafkaConsumerFunction, CdcFunction"):
            cli.resolve_function(FakeCloudFormation(None), FakeLambda(set()), "bus", "IngestFunction")


class TestLogSlicing:
    def test_start_to_report_of_that_request_only(self):
        events = [
            *invocation_events(OTHER, "s1", '{"level":"INFO","message":"earlier"}\n'),
            *invocation_events(REQUEST, "s1", '{"level":"INFO","message":"mine"}\n'),
            LogEvent("s1", "START RequestId: later Version: $LATEST\n"),
        ]
        lines = cli.invocation_lines(events, REQUEST)
        assert lines is not None
        assert lines[0] == f"START RequestId: {REQUEST} Version: $LATEST"
        assert lines[1] == '{"level":"INFO","message":"mine"}'
        assert lines[-1].startswith(f"REPORT RequestId: {REQUEST}\tDuration")
        assert len(lines) == 4

    def test_lines_of_other_environments_interleaved_in_time_stay_out(self):
        mine, theirs = invocation_events(REQUEST, "env-a", "mine\n"), invocation_events(OTHER, "env-b", "theirs\n")
        interleaved = [event for pair in zip(mine, theirs, strict=True) for event in pair]
        assert cli.invocation_lines(interleaved, REQUEST) == [event.message.rstrip("\n") for event in mine]

    def test_a_cold_start_keeps_its_init_lines(self):
        init = [LogEvent("s1", "INIT_START Runtime Version: python3.13.localbus\n"), LogEvent("s1", "init warning\n")]
        lines = cli.invocation_lines([*init, *invocation_events(REQUEST, "s1")], REQUEST)
        assert lines is not None
        assert lines[:3] == [
            "INIT_START Runtime Version: python3.13.localbus",
            "init warning",
            f"START RequestId: {REQUEST} Version: $LATEST",
        ]

    def test_a_warm_invocation_does_not_take_an_earlier_init(self):
        events = [
            LogEvent("s1", "INIT_START Runtime Version: python3.13.localbus\n"),
            *invocation_events(OTHER, "s1"),
            *invocation_events(REQUEST, "s1"),
        ]
        lines = cli.invocation_lines(events, REQUEST)
        assert lines is not None
        assert lines[0].startswith(f"START RequestId: {REQUEST}")

    def test_nothing_until_the_report_line_is_there(self):
        events = invocation_events(REQUEST, "s1", "mine\n")
        assert cli.invocation_lines(events[:-1], REQUEST) is None
        assert cli.invocation_lines(invocation_events(OTHER), REQUEST) is None
        assert cli.invocation_lines([], REQUEST) is None

    def test_the_tail_is_base64_text(self):
        tail = base64.b64encode(f"START RequestId: {REQUEST}\nline\n".encode()).decode()
        assert cli.tail_lines(tail) == [f"START RequestId: {REQUEST}", "line"]
        assert cli.tail_lines(None) == []


class FakeLogs:
    def __init__(self, pages: list[list[LogEvent]] | None) -> None:
        self.pages = pages  # None: the log group does not exist
        self.calls: list[dict[str, Any]] = []

    def filter_log_events(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        if self.pages is None:
            raise client_error("ResourceNotFoundException", "FilterLogEvents")
        index = int(arguments.get("nextToken", 0))
        page: dict[str, Any] = {
            "events": [{"logStreamName": e.stream, "message": e.message} for e in self.pages[index]]
        }
        if index + 1 < len(self.pages):
            page["nextToken"] = str(index + 1)
        return page


class FakeInvoke:
    def __init__(self, payload: bytes, tail: str, function_error: str | None = None) -> None:
        self.response: dict[str, Any] = {
            "StatusCode": 200,
            "Payload": io.BytesIO(payload),
            "LogResult": base64.b64encode(tail.encode()).decode(),
            "ResponseMetadata": {"RequestId": REQUEST},
        }
        if function_error:
            self.response["FunctionError"] = function_error
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        return self.response


class TestInvoke:
    def test_logs_come_from_cloudwatch_across_pages(self):
        events = invocation_events(REQUEST, "s1", "first\n", "second\n")
        logs = FakeLogs([events[:2], events[2:]])
        lam = FakeInvoke(b'{"batchItemFailures": []}', "tail only")

        invocation = cli.invoke(lam, logs, "fn", b"{}", log_wait_s=0)

        assert lam.calls == [
            {"FunctionName": "fn", "InvocationType": "RequestResponse", "LogType": "Tail", "Payload": b"{}"}
        ]
        assert logs.calls[0]["logGroupName"] == "/aws/lambda/fn"
        assert invocation.log_lines[1:3] == ("first", "second")
        assert invocation.log_source == "CloudWatch Logs /aws/lambda/fn"
        assert invocation.result() == {"batchItemFailures": []}
        assert invocation.succeeded

    def test_the_tail_when_cloudwatch_has_no_such_lines(self):
        for logs in (FakeLogs(None), FakeLogs([invocation_events(OTHER)])):
            invocation = cli.invoke(FakeInvoke(b"null", "the tail\n"), logs, "fn", b"{}", log_wait_s=0)
            assert invocation.log_lines == ("the tail",)
            assert invocation.log_source.startswith("LogResult tail")


class TestRender:
    def test_status_error_result_then_logs_with_a_tracebacks_lines_apart(self):
        invocation = Invocation(
            function_name="fn",
            request_id=REQUEST,
            status_code=200,
            function_error="Unhandled",
            payload=b'{"errorType": "AttributeError"}',
            log_lines=("START RequestId: x", "[ERROR] AttributeError: boom\rTraceback (most recent call last):"),
            log_source="CloudWatch Logs /aws/lambda/fn",
        )
        printed = cli.render(invocation).splitlines()
        assert printed[:2] == ["StatusCode: 200", "FunctionError: Unhandled"]
        assert printed[2:5] == ["{", '  "errorType": "AttributeError"', "}"]
        assert printed[5] == f"--- logs of request {REQUEST}, from CloudWatch Logs /aws/lambda/fn ---"
        assert printed[-2:] == ["[ERROR] AttributeError: boom", "Traceback (most recent call last):"]
        assert not invocation.succeeded

    def test_a_payload_that_is_not_json_is_printed_as_text(self):
        invocation = Invocation("fn", REQUEST, 200, None, b"plain text", (), "tail")
        assert cli.render(invocation).splitlines()[1] == "plain text"


def test_usage_errors_exit_2_with_one_line(capsys):
    assert cli.main(["IngestFunction", "no-such-sample", "--endpoint", "http://127.0.0.1:1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: no event 'no-such-sample'")
    assert error.count("\n") == 1
