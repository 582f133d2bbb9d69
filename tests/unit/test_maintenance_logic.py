"""MaintenanceFunction's plain logic: settings, Kafka Connect status rules, stale-group selection, the DELETE
URLs prometheus_client builds, the sweep's failure handling and the connector memory across runs."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable
from typing import Any

import pytest
from lambda_event_bus.base import ConfigError
from maintenance import (
    ConnectorFailure,
    Deadline,
    DeadlineExceededError,
    Maintenance,
    MaintenanceSettings,
    MskConnectSource,
    PushgatewaySweeper,
    PushGroup,
    SourceReport,
    UnexpectedAnswerError,
    parse_groups,
    select_stale,
)
from maintenance.connectors import connect_status_running, connector_names
from maintenance.rest import Endpoint
from maintenance.settings import connector_name_from_arn
from support.fakes import FakeKafkaConnectClient

ARN = "arn:aws:kafkaconnect:eu-west-1:123456789012:connector/orders-cdc/0f6a5c2e-1111-2222-3333-444455556666-3"
NOW = 1_800_000_000.0


class TestSettings:
    def test_defaults(self):
        settings = MaintenanceSettings.from_env({})
        assert settings == MaintenanceSettings()
        assert (settings.stale_group_s, settings.connect_timeout_s, settings.pushgateway_timeout_s) == (900, 2.0, 2.0)
        assert (settings.kafka_connect_url, settings.msk_connector_arns) == (None, ())

    def test_values(self):
        second = ARN.replace("orders-cdc", "payments-cdc")
        settings = MaintenanceSettings.from_env(
            {
                "KAFKA_CONNECT_URL": "https://user:pw@connect.internal:8083",
                "MSK_CONNECT_CONNECTOR_ARNS": f" {ARN}, {second},{ARN},",
                "CONNECT_TIMEOUT_MS": "500",
                "SCRAPE_INTERVAL_SECONDS": "30",
                "STALE_GROUP_SCRAPES": "120",
                "PUSHGATEWAY_TIMEOUT_MS": "750",
            }
        )
        assert settings.kafka_connect_url == "https://user:pw@connect.internal:8083"
        assert settings.msk_connector_arns == (ARN, second), "trimmed, duplicates dropped, order kept"
        assert (settings.connect_timeout_s, settings.stale_group_s, settings.pushgateway_timeout_s) == (0.5, 3600, 0.75)

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("SCRAPE_INTERVAL_SECONDS", "abc"),
            ("SCRAPE_INTERVAL_SECONDS", "0"),
            ("SCRAPE_INTERVAL_SECONDS", "1.5"),
            ("STALE_GROUP_SCRAPES", "1"),
            ("CONNECT_TIMEOUT_MS", "-1"),
            ("CONNECT_TIMEOUT_MS", "120000"),
            ("PUSHGATEWAY_TIMEOUT_MS", "soon"),
            ("KAFKA_CONNECT_URL", "connect.internal:8083"),
            ("KAFKA_CONNECT_URL", "ftp://connect.internal"),
            ("MSK_CONNECT_CONNECTOR_ARNS", "orders-cdc"),
            ("MSK_CONNECT_CONNECTOR_ARNS", f"{ARN},arn:aws:kafka:eu-west-1:123456789012:cluster/c/1"),
            ("MSK_CONNECT_CONNECTOR_ARNS", ","),
        ],
    )
    def test_a_bad_value_is_one_line_naming_the_variable(self, variable, value):
        with pytest.raises(ConfigError) as raised:
            MaintenanceSettings.from_env({variable: value})
        assert raised.value.variable == variable
        message = str(raised.value)
        assert message.startswith(f"{variable}=")
        assert "\n" not in message
        assert "expected" in message

    def test_credentials_never_reach_the_error(self):
        with pytest.raises(ConfigError) as raised:
            MaintenanceSettings.from_env({"KAFKA_CONNECT_URL": "ftp://admin:s3cret@connect"})
        assert "s3cret" not in str(raised.value)

    def test_connector_name_comes_from_the_arn(self):
        assert connector_name_from_arn(ARN) == "orders-cdc"
        assert connector_name_from_arn("not-an-arn") == "not-an-arn"


def status(connector: str, *tasks: str) -> dict[str, Any]:
    return {"connector": {"state": connector}, "tasks": [{"id": n, "state": s} for n, s in enumerate(tasks)]}


class TestKafkaConnectStatus:
    @pytest.mark.parametrize(
        ("answer", "running"),
        [
            (status("RUNNING", "RUNNING"), True),
            (status("RUNNING", "RUNNING", "RUNNING"), True),
            (status("RUNNING", "RUNNING", "FAILED"), False),
            (status("RUNNING", "UNASSIGNED"), False),
            (status("PAUSED", "PAUSED"), False),
            (status("FAILED", "RUNNING"), False),
            (status("UNASSIGNED"), False),
            (status("RUNNING"), False),  # no task: nothing is captured
            ({"connector": {"state": "RUNNING"}}, False),
        ],
    )
    def test_running_means_the_connector_and_every_task_running(self, answer, running):
        assert connect_status_running(answer) is running

    @pytest.mark.parametrize(
        "answer",
        [[], "RUNNING", {"tasks": []}, {"connector": {}}, {"connector": {"state": "RUNNING"}, "tasks": ["RUNNING"]}],
    )
    def test_an_answer_of_another_shape_is_an_error(self, answer):
        with pytest.raises(UnexpectedAnswerError):
            connect_status_running(answer)

    def test_connector_names(self):
        assert connector_names(["a", "b", "a"]) == ["a", "b"]
        for answer in ({"a": {}}, [1], "a"):
            with pytest.raises(UnexpectedAnswerError):
                connector_names(answer)


class TestMskConnectSource:
    def test_state_failure_and_label(self):
        creating = ARN.replace("orders-cdc", "new-cdc")
        missing = ARN.replace("orders-cdc", "gone-cdc")
        client = FakeKafkaConnectClient({ARN: "RUNNING", creating: "CREATING"})
        report = MskConnectSource(client, [ARN, creating, missing]).check(Deadline.after(None))
        assert report.running == {"orders-cdc": True, "new-cdc": False, "gone-cdc": False}
        (failure,) = report.failures
        assert (failure.operation, failure.connector, type(failure.error)) == (
            "describe_connector",
            "gone-cdc",
            LookupError,
        )
        assert report.complete

    def test_no_call_starts_after_the_deadline(self):
        client = FakeKafkaConnectClient({ARN: "RUNNING"})
        report = MskConnectSource(client, [ARN]).check(Deadline(time.monotonic() - 1))
        assert client.calls == []
        assert report.running == {"orders-cdc": False}
        assert isinstance(report.failures[0].error, DeadlineExceededError)


def group(age_s: float | None, **labels: str) -> PushGroup:
    return PushGroup({"job": "svc", **labels}, None if age_s is None else NOW - age_s)


class TestStaleSelection:
    def test_older_than_the_age_is_stale(self):
        old, edge, fresh = group(901, instance="a"), group(900, instance="b"), group(5, instance="c")
        stale, kept = select_stale([old, edge, fresh], now=NOW, max_age_s=900)
        assert (stale, kept) == ([old], [edge, fresh])

    def test_the_functions_own_group_is_kept_however_old(self):
        own = group(10_000, function_name="maintenance", instance="me")
        other = group(10_000, function_name="maintenance", instance="dead")
        stale, kept = select_stale(
            [own, other], now=NOW, max_age_s=900, keep={"job": "svc", "function_name": "maintenance", "instance": "me"}
        )
        assert (stale, kept) == ([other], [own]), "another (dead) maintenance environment is not its own"

    def test_groups_without_a_push_time_or_a_job_are_kept(self):
        unknown = group(None, instance="x")
        jobless = PushGroup({"instance": "y"}, NOW - 10_000)
        assert select_stale([unknown, jobless], now=NOW, max_age_s=1) == ([], [unknown, jobless])

    def test_a_group_that_never_pushed_successfully_is_stale(self):
        never = PushGroup({"job": "svc"}, 0.0)
        assert select_stale([never], now=NOW, max_age_s=900) == ([never], [])

    def test_parse_groups_reads_labels_and_push_time(self):
        answer = {
            "status": "success",
            "data": [
                {
                    "labels": {"job": "svc", "function_name": "team/fn", "instance": "i1"},
                    "last_push_successful": True,
                    "push_time_seconds": {"type": "GAUGE", "metrics": [{"labels": {}, "value": "1.7957266e+09"}]},
                    "requests_total": {"type": "COUNTER", "metrics": [{"labels": {}, "value": "3"}]},
                },
                {"labels": {"job": "other"}},
                {"labels": {"job": "broken"}, "push_time_seconds": {"metrics": []}},
            ],
        }
        groups = parse_groups(answer)
        assert groups[0] == PushGroup({"job": "svc", "function_name": "team/fn", "instance": "i1"}, 1.7957266e09)
        assert (groups[0].job, groups[0].grouping_key) == ("svc", {"function_name": "team/fn", "instance": "i1"})
        assert [g.push_time for g in groups[1:]] == [None, None]

    @pytest.mark.parametrize(
        "answer", [[], {"status": "error", "data": []}, {"status": "success"}, {"status": "success", "data": [{}]}]
    )
    def test_parse_groups_refuses_other_shapes(self, answer):
        with pytest.raises(UnexpectedAnswerError):
            parse_groups(answer)


Handler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]


class RecordingGateway:
    """A prometheus_client push handler that records each request and answers with the planned outcome."""

    def __init__(self, outcomes: dict[str, Exception] | None = None) -> None:
        self.requests: list[tuple[str, str, float | None]] = []
        self.outcomes = outcomes or {}

    def __call__(
        self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        def handle() -> None:
            self.requests.append((method, url, timeout))
            for fragment, error in self.outcomes.items():
                if fragment in url:
                    raise error

        return handle


class ListedSweeper(PushgatewaySweeper):
    """The sweeper with its group listing answered in memory."""

    def __init__(self, groups: list[PushGroup], handler: Handler, **kwargs: Any) -> None:
        super().__init__("http://pushgateway:9091", clock=lambda: NOW, handler=handler, **kwargs)
        self._groups = groups

    def list_groups(self, deadline: Deadline) -> list[PushGroup]:
        return self._groups


class TestSweep:
    def test_delete_urls_use_base64_for_values_with_a_slash_a_space_or_nothing(self):
        recorder = RecordingGateway()
        sweeper = PushgatewaySweeper(
            "http://u:p@pushgateway:9091/", max_age_s=1, timeout_s=0.5, own_group=None, handler=recorder
        )
        plain = PushGroup({"job": "ingest", "function_name": "ingest-fn", "instance": "ab12"}, 0)
        awkward = PushGroup({"job": "a/b", "function_name": "team/consumer", "instance": "x y", "zone": ""}, 0)
        sweeper.delete(plain, Deadline.after(None))
        sweeper.delete(awkward, Deadline.after(None))
        assert recorder.requests == [
            ("DELETE", "http://pushgateway:9091/metrics/job/ingest/function_name/ingest-fn/instance/ab12", 0.5),
            (
                "DELETE",
                "http://pushgateway:9091/metrics/job@base64/YS9i/function_name@base64/dGVhbS9jb25zdW1lcg=="
                "/instance@base64/eCB5/zone@base64/=",
                0.5,
            ),
        ]

    def test_request_timeouts_shrink_to_the_deadline(self):
        recorder = RecordingGateway()
        sweeper = PushgatewaySweeper("http://pg:9091", max_age_s=1, timeout_s=5, own_group=None, handler=recorder)
        sweeper.delete(PushGroup({"job": "j"}, 0), Deadline.after(1.0))
        (_, _, timeout) = recorder.requests[0]
        assert timeout is not None
        assert 0.5 < timeout <= 1.0

    def test_an_error_status_skips_the_group_and_a_dead_gateway_ends_the_sweep(self):
        groups = [group(1000, instance=name) for name in ("a", "refused", "c", "down", "e")] + [group(1, instance="f")]
        http_error = urllib.error.HTTPError("http://pg", 400, "Bad Request", {}, None)  # type: ignore[arg-type]
        recorder = RecordingGateway({"/refused": http_error, "/down": urllib.error.URLError("Connection refused")})
        result = ListedSweeper(groups, recorder, max_age_s=900, timeout_s=1, own_group=None).sweep(Deadline.after(None))

        assert [g.labels["instance"] for g in result.deleted] == ["a", "c"]
        assert [(op, g.labels["instance"] if g else None) for op, _, g in result.failures] == [
            ("delete_group", "refused"),
            ("delete_group", "down"),
        ]
        assert result.kept == 4, "the fresh one, the refused one, and the two not tried after the gateway went away"
        assert len(recorder.requests) == 4

    def test_listing_failure_is_reported_not_raised(self):
        sweeper = PushgatewaySweeper("http://127.0.0.1:9", max_age_s=1, timeout_s=0.2, own_group=None)
        result = sweeper.sweep(Deadline.after(None))
        ((operation, error, where),) = result.failures
        assert (operation, type(error).__name__, where) == ("list_groups", "EndpointError", None)
        assert (result.deleted, result.kept) == ([], 0)

    def test_after_the_deadline_nothing_is_deleted(self):
        recorder = RecordingGateway()
        sweeper = ListedSweeper([group(1000)], recorder, max_age_s=1, timeout_s=1, own_group=None)
        result = sweeper.sweep(Deadline(time.monotonic() - 1))
        assert (recorder.requests, result.kept) == ([], 1)
        assert isinstance(result.failures[0][1], DeadlineExceededError)


class TestDeadlineAndEndpoint:
    def test_timeout_is_capped_and_expires(self):
        assert Deadline.after(None).timeout(2.0) == 2.0
        assert Deadline.after(0.5).timeout(2.0) <= 0.5
        with pytest.raises(DeadlineExceededError):
            Deadline.after(-0.1).timeout(2.0)

    def test_credentials_leave_the_url_for_a_basic_auth_header(self):
        endpoint = Endpoint.parse("https://debezium:p%40ss@connect.internal:8083/api/")
        assert endpoint.base_url == "https://connect.internal:8083/api"
        assert (endpoint.username, endpoint.password) == ("debezium", "p@ss")
        assert endpoint.authorization == "Basic ZGViZXppdW06cEBzcw=="
        assert Endpoint.parse("http://connect:8083").authorization is None


class ScriptedSource:
    """A connector source answering planned reports, one per run."""

    name = "scripted"
    endpoint = "memory"

    def __init__(self, *reports: SourceReport | Exception) -> None:
        self.reports = list(reports)

    def check(self, deadline: Deadline) -> SourceReport:
        report = self.reports.pop(0)
        if isinstance(report, Exception):
            raise report
        return report


class TestConnectorMemory:
    def test_a_connector_no_longer_seen_is_reported_0_not_left_at_its_last_value(self, make_telemetry):
        telemetry = make_telemetry()
        source = ScriptedSource(
            SourceReport({"a": True, "b": True}),
            SourceReport({"a": True}),  # b was deleted
            SourceReport(failures=(ConnectorFailure("list_connectors", OSError("refused")),), complete=False),
        )
        maintenance = Maintenance(telemetry, sources=[source])
        assert maintenance.run()["connectors"] == {"a": 1, "b": 1}
        assert maintenance.run()["connectors"] == {"a": 1, "b": 0}
        summary = maintenance.run()
        assert summary["connectors"] == {"a": 0, "b": 0}
        assert [error["operation"] for error in summary["errors"]] == ["scripted.list_connectors"]
        assert telemetry.metrics.value("cdc_connector_status", connector="a") == 0

    def test_a_source_that_raises_does_not_stop_the_others(self, make_telemetry):
        telemetry = make_telemetry()
        broken = ScriptedSource(RuntimeError("bug"))
        working = ScriptedSource(SourceReport({"c": True}))
        working.name = "working"
        summary = Maintenance(telemetry, sources=[broken, working]).run(30)
        assert summary["connectors"] == {"c": 1}
        assert [error["operation"] for error in summary["errors"]] == ["scripted.check"]
        assert telemetry.metrics.value("errors_captured_total", component="maintenance", error_type="RuntimeError") == 1
