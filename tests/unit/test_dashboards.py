"""The Grafana dashboards, their provisioning and infra/docker-compose.yml: every panel query is valid PromQL
(promtool), aggregates across execution environments, names catalog metrics and labels only, and falls back to 0
only where an empty answer means zero; the compose file pins its images, publishes on 127.0.0.1 only and mounts
files that exist; the collector's pipelines use components it defines."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from lambda_event_bus.telemetry.metrics import CATALOG_BY_NAME
from localbus import dashboards as dash
from localbus.dashboards import (
    DASHBOARDS,
    MAY_BE_ABSENT,
    ZERO_FALLBACK,
    Dashboard,
    load_dashboards,
    may_be_absent,
    panel_queries,
    substitute,
)
from samhost.processes import binary

INFRA = Path(__file__).resolve().parents[2] / "infra"
GRAFANA = INFRA / "grafana"
COMPOSE = INFRA / "docker-compose.yml"
COLLECTOR = INFRA / "collector" / "gateway.yaml"
EXPECTED_UIDS = {"eventbus-ingest", "eventbus-delivery", "eventbus-cdc", "eventbus-telemetry"}
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

BOARDS = load_dashboards()
QUERIES = panel_queries(BOARDS)
RAW = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def test_the_four_dashboards_load_with_their_identity():
    assert {board.uid for board in BOARDS} == EXPECTED_UIDS
    assert len({board.uid for board in BOARDS}) == len(BOARDS)
    for name, document in RAW.items():
        assert document["title"], name
        assert "eventbus" in document["tags"], name
        assert 39 <= document["schemaVersion"] < 50, name
        assert document.get("id") is None, f"{name}: a provisioned dashboard has no database id"
    assert len(QUERIES) >= 40


@pytest.mark.parametrize("name", sorted(RAW))
def test_every_panel_has_an_id_a_title_a_place_a_description_and_queries(name: str):
    panels = RAW[name]["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        where = f"{name} panel {panel['id']}"
        assert isinstance(panel["id"], int), where
        assert panel["title"].strip(), where
        assert panel["description"].strip(), where
        assert panel["type"] in {"timeseries", "stat"}, where
        assert panel["datasource"] == DATASOURCE, where
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in "hwxy"), where
        assert grid["w"] > 0, where
        assert grid["h"] > 0, where
        assert grid["x"] + grid["w"] <= 24, where
        covered = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{where} overlaps another panel"
        cells |= covered
        targets = panel["targets"]
        assert targets, where
        assert len({target["refId"] for target in targets}) == len(targets), where
        for target in targets:
            assert target["refId"], where
            assert target["expr"].strip(), where
            assert target["datasource"] == DATASOURCE, where


def test_every_query_substitutes_to_plain_promql():
    for query in QUERIES:
        assert "$" not in query.expr, query.name
        assert "[[" not in query.expr, query.name
        if "$__rate_interval" in query.template:
            assert query.expr.count("1m") == query.template.count("$__rate_interval"), query.name


def test_every_query_is_valid_promql_for_promtool(tmp_path: Path):
    """promtool has no expression check of its own: one recording rule per query, then `promtool check rules`."""
    rules = [
        {"record": f"dashboard:{q.dashboard_uid.replace('-', '_')}:panel_{q.panel_id}_{q.ref_id}", "expr": q.expr}
        for q in QUERIES
    ]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr


# --- a small PromQL reader: which selectors sit inside which aggregations and functions ---

AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
AGGREGATORS |= {"quantile"}
RANGE_FUNCTIONS = {"rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
KEYWORDS |= {"inf", "nan", "atan2"}
GROUP_LABELS = {"job", "instance", "function_name"}  # each environment's Pushgateway grouping key
KNOWN_SERIES = {"push_time_seconds", "push_failure_time_seconds", "up"}  # the Pushgateway's and Prometheus' own
TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<string>"(?:[^"\\]|\\.)*")|(?P<matchers>\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})"""
    r"""|(?P<range>\[[^\]]*\])|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<number>\d+(?:\.\d+)?(?:ms|[smhdwy])*)"""
    r"""|(?P<op>==|!=|>=|<=|[-+*/%^<>(),])"""
)
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass
class Node:
    name: str  # an aggregation's or function's name; "" for plain parentheses and the root
    by: tuple[str, ...] | None = None
    without: bool = False
    children: list[Node] = field(default_factory=list)
    selectors: list[tuple[str, str]] = field(default_factory=list)  # (metric name, its {matchers})


def tokenize(expression: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(expression):
        match = TOKEN.match(expression, position)
        if match is None:
            raise ValueError(f"cannot read {expression[position:]!r}")
        if match.lastgroup != "space":
            tokens.append((str(match.lastgroup), match.group()))
        position = match.end()
    return tokens


def parse(expression: str) -> Node:
    tokens = tokenize(expression)
    root = Node("")
    stack, pending, closed = [root], None, None
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in {"by", "without", "on", "ignoring", "group_left", "group_right"}:
            labels: tuple[str, ...] = ()
            if following == "(":
                end = next(j for j in range(i, len(tokens)) if tokens[j][1] == ")")
                labels = tuple(token for token_kind, token in tokens[i + 2 : end] if token_kind == "ident")
                i = end
            if text in {"by", "without"}:
                aggregation = pending if pending is not None else closed  # `sum by (x) (...)` or `sum(...) by (x)`
                assert aggregation is not None, expression
                assert aggregation.name in AGGREGATORS, expression
                aggregation.by, aggregation.without = (labels, False) if text == "by" else (None, True)
        elif text == "(":
            node = pending or Node("")
            pending = None
            stack[-1].children.append(node)
            stack.append(node)
        elif text == ")":
            closed = stack.pop()
            assert stack, f"unbalanced parentheses: {expression}"
        elif kind == "ident" and (following == "(" or (text in AGGREGATORS and following in {"by", "without"})):
            pending = Node(text)
        elif kind == "ident" and text.lower() not in KEYWORDS:
            matchers = ""
            if i + 1 < len(tokens) and tokens[i + 1][0] == "matchers":
                matchers, i = following, i + 1
            stack[-1].selectors.append((text, matchers))
        elif kind == "matchers":
            raise AssertionError(f"a selector without a metric name: {expression}")
        i += 1
    assert stack == [root], f"unbalanced parentheses: {expression}"
    return root


def walk(node: Node, path: tuple[Node, ...] = ()) -> Iterator[tuple[Node | tuple[str, str], tuple[Node, ...]]]:
    """Every node and selector below `node`, each with the nodes enclosing it (outermost first)."""
    here = (*path, node)
    for selector in node.selectors:
        yield selector, here
    for child in node.children:
        yield child, here
        yield from walk(child, here)


def selectors_below(node: Node) -> list[tuple[str, str]]:
    return [item for item, _ in walk(node) if isinstance(item, tuple)]


def metric_labels(name: str) -> set[str]:
    """The labels a series of `name` carries in Prometheus. KeyError: neither a catalog metric nor a known
    Pushgateway series; ValueError: a histogram queried by its bare name."""
    if name in KNOWN_SERIES:
        return set(GROUP_LABELS)
    for suffix in ("_bucket", "_count", "_sum"):
        base = name.removesuffix(suffix)
        if base != name and base in CATALOG_BY_NAME and CATALOG_BY_NAME[base].kind == "histogram":
            return {*CATALOG_BY_NAME[base].labels, *GROUP_LABELS, *({"le"} if suffix == "_bucket" else ())}
    spec = CATALOG_BY_NAME[name]
    if spec.kind == "histogram":
        raise ValueError(f"{name} is a histogram: query its _bucket, _count or _sum series")
    return {*spec.labels, *GROUP_LABELS}


def aggregation_problems(expression: str) -> list[str]:
    """What breaks the dashboards' rules: a selector or rate() outside an aggregation, histogram_quantile over
    buckets not summed by le, buckets outside histogram_quantile."""
    problems = []
    for item, path in walk(parse(expression)):
        names = [node.name for node in path]
        if isinstance(item, tuple):
            if not set(names) & AGGREGATORS:
                problems.append(f"{item[0]} is not aggregated across environments")
            if item[0].endswith("_bucket"):
                if "histogram_quantile" not in names:
                    problems.append(f"{item[0]} outside histogram_quantile")
                else:
                    inner = path[names.index("histogram_quantile") :]
                    if not any(node.name == "sum" and node.by and "le" in node.by for node in inner):
                        problems.append(f"{item[0]}: histogram_quantile needs sum by (le, ...) of its buckets")
        elif item.name in RANGE_FUNCTIONS and not set(names) & AGGREGATORS:
            problems.append(f"{item.name}() is not inside an aggregation")
        elif item.name in AGGREGATORS and item.without:
            problems.append(f"{item.name} without (...): aggregate by named labels")
    return problems


def label_problems(expression: str) -> list[str]:
    """Metric names outside the catalog (and the Pushgateway's own series), and labels their series do not carry,
    in a selector's matchers or an aggregation's `by`."""
    problems = []
    for item, _ in walk(parse(expression)):
        if isinstance(item, tuple):
            name, matchers = item
            try:
                known = metric_labels(name)
            except KeyError:
                problems.append(f"{name} is neither in the catalog nor a Pushgateway series")
                continue
            except ValueError as error:
                problems.append(str(error))
                continue
            used = MATCHER_LABEL.findall(QUOTED.sub('""', matchers))
            problems += [f"{name} has no label {label}" for label in used if label not in known]
        elif item.name in AGGREGATORS and item.by:
            for name, _ in selectors_below(item):
                try:
                    missing = set(item.by) - metric_labels(name)
                except (KeyError, ValueError):
                    continue  # reported with the selector
                problems += [f"{item.name} by ({label}) over {name}, which has no such label" for label in missing]
    return problems


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("rate(http_requests_total[1m])", "not aggregated"),
        ("sum(http_requests_total) + http_requests_total", "not aggregated"),
        ("histogram_quantile(0.99, sum by (endpoint) (rate(http_request_duration_seconds_bucket[1m])))", "by (le"),
        ("histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[1m]))", "not aggregated"),
        ("sum(rate(http_request_duration_seconds_bucket[1m]))", "outside histogram_quantile"),
        ("sum without (instance) (rate(http_requests_total[1m]))", "without"),
    ],
)
def test_the_aggregation_check_catches_per_environment_queries(expression: str, problem: str):
    assert any(problem in found for found in aggregation_problems(expression)), aggregation_problems(expression)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("sum(rate(http_request_total[1m]))", "neither in the catalog"),
        ('sum(rate(http_requests_total{code="500"}[1m]))', "no label code"),
        ("sum by (topic) (rate(http_requests_total[1m]))", "no such label"),
        ("histogram_quantile(0.9, sum by (le, table) (rate(kafka_consumer_lag_seconds_bucket[1m])))", "no such label"),
        ("sum(rate(cdc_lag_seconds[1m]))", "is a histogram"),
    ],
)
def test_the_label_check_catches_names_the_catalog_does_not_have(expression: str, problem: str):
    assert any(problem in found for found in label_problems(expression)), label_problems(expression)


def test_well_formed_queries_pass_both_checks():
    good = [
        'sum by (job) (rate(http_requests_total{status=~"5.."}[1m])) / sum by (job) (rate(http_requests_total[1m]))',
        "histogram_quantile(0.99, sum(rate(cdc_lag_seconds_bucket[1m])) by (le, table))",
        "time() - max by (job) (push_time_seconds)",
    ]
    for expression in good:
        assert aggregation_problems(expression) == [], expression
        assert label_problems(expression) == [], expression


@pytest.mark.parametrize("query", QUERIES, ids=[query.name for query in QUERIES])
def test_every_query_aggregates_across_environments(query: dash.PanelQuery):
    assert aggregation_problems(query.expr) == [], query.expr


@pytest.mark.parametrize("query", QUERIES, ids=[query.name for query in QUERIES])
def test_every_query_uses_catalog_metrics_and_labels(query: dash.PanelQuery):
    assert label_problems(query.expr) == [], query.expr


def test_queries_over_series_a_healthy_bus_may_not_create_fall_back_to_zero():
    """The rule of localbus.dashboards' docstring: those panels show 0, not "No data", so that the end-to-end check
    (every panel answers after demo traffic) holds on a healthy bus."""
    flagged = [query for query in QUERIES if may_be_absent(query.expr)]
    assert flagged, "the dashboards show no failure counter at all"
    missing = [query.name for query in flagged if not ZERO_FALLBACK.search(query.expr)]
    assert missing == []
    covered = {name for query in flagged for name in MAY_BE_ABSENT if name in query.expr}
    assert covered == MAY_BE_ABSENT, f"failure series without a panel: {MAY_BE_ABSENT - covered}"


def test_the_catalog_metrics_each_dashboard_is_about_are_on_it():
    by_uid = {
        board.uid: " ".join(target.expr for panel in board.panels for target in panel.targets) for board in BOARDS
    }
    wanted = {
        "eventbus-ingest": ["http_requests_total", "http_request_duration_seconds_bucket", "events_produced_total"],
        "eventbus-delivery": ["events_consumed_total", "deliveries_total", "kafka_consumer_lag_seconds_bucket"],
        "eventbus-cdc": ["cdc_events_total", "cdc_lag_seconds_bucket", "cdc_connector_status"],
        "eventbus-telemetry": ["telemetry_export_failures_total", "telemetry_flush_duration_seconds_bucket"],
    }
    for uid, names in wanted.items():
        assert [name for name in names if name not in by_uid[uid]] == [], uid
    assert "count by (job) (push_time_seconds" in by_uid["eventbus-telemetry"]
    assert "time() - max by (job) (push_time_seconds" in by_uid["eventbus-telemetry"]


# --- the module's substitution ---


def test_substitution_covers_grafanas_forms_and_refuses_unknown_variables():
    values = {"job": ".*", "__rate_interval": "1m"}
    assert substitute('rate(x{job=~"$job"}[$__rate_interval])', values) == 'rate(x{job=~".*"}[1m])'
    assert substitute('x{job=~"${job}"}[${__rate_interval}]', values) == 'x{job=~".*"}[1m]'
    assert substitute('x{job=~"${job:regex}"} [[job]]', values) == 'x{job=~".*"} .*'
    with pytest.raises(KeyError, match="nope"):
        substitute("x[$nope]", values)


def test_queries_take_the_variables_defaults_and_overrides():
    telemetry = next(board for board in BOARDS if board.uid == "eventbus-telemetry")
    assert telemetry.variables == {"job": ".*"}, "All is the default, and its allValue matches every job"
    chosen = panel_queries([telemetry], variables={"job": "event-bus-ingest"}, rate_interval="5m", time_range="2h")
    assert all('job=~".*"' not in query.expr for query in chosen)
    assert any('{job=~"event-bus-ingest"}[5m]' in query.expr for query in chosen)
    assert any("[2h]" in query.expr for query in chosen)


def test_load_dashboards_reads_a_folder_flattening_rows(tmp_path: Path):
    target = {"refId": "A", "expr": "sum(rate(x_total[$__interval])) * $__range_s"}
    document = {
        "uid": "u",
        "title": "T",
        "templating": {"list": [{"name": "v", "type": "custom", "current": {"value": "a"}}]},
        "panels": [
            {"id": 1, "type": "row", "title": "row", "panels": [{"id": 2, "title": "inner", "targets": [target]}]},
            {"id": 3, "type": "text", "title": "no query"},
        ],
    }
    (tmp_path / "one.json").write_text(json.dumps(document))
    (board,) = load_dashboards(tmp_path)
    assert isinstance(board, Dashboard)
    assert [panel.id for panel in board.panels] == [2]
    assert board.variables == {"v": "a"}
    (query,) = panel_queries(tmp_path, interval="30s", time_range="1h")
    assert query.expr == "sum(rate(x_total[30s])) * 3600"
    with pytest.raises(FileNotFoundError):
        load_dashboards(tmp_path / "missing")


def test_an_all_default_without_all_value_is_refused(tmp_path: Path):
    variable = {"name": "job", "type": "query", "includeAll": True, "current": {"value": ["$__all"]}}
    (tmp_path / "one.json").write_text(json.dumps({"uid": "u", "title": "T", "templating": {"list": [variable]}}))
    with pytest.raises(ValueError, match="allValue"):
        load_dashboards(tmp_path)


def test_the_command_lists_every_query(capsys: pytest.CaptureFixture[str]):
    assert dash.main([]) == 0
    assert capsys.readouterr().out.count("\n    ") == len(QUERIES)
