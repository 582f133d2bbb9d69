"""The self-managed Kafka event source mappings that AWS would create from template.yaml, as plain values."""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from samhost.cfn import Evaluator, Physical, TemplateError, load_template

MAPPING_TYPE: Final = "AWS::Lambda::EventSourceMapping"
# The parameters under which the template declares the self-managed mappings (its Conditions keep every Kafka
# mapping off Stage=local, because LocalStack community cannot run them)
AS_ON_AWS: Final[Mapping[str, str]] = {"KafkaTriggerSource": "self-managed"}
LOCAL_STAGE, STAGE_AS_ON_AWS = "local", "dev"
# A template condition that fails the deployment on AWS: the same parameters fail here too
MISCONFIGURED_CONDITION: Final = "KafkaTriggerIsMisconfigured"

# AWS's defaults for Kafka mappings where the template leaves a property out
DEFAULT_BATCH_SIZE: Final = 100
DEFAULT_BATCHING_WINDOW_S: Final = 0.5
DEFAULT_FUNCTION_TIMEOUT_S: Final = 3.0
INFINITE: Final = -1
# "When you configure both infinite retries and an on-failure destination, Lambda automatically applies a
# maximum of 10 retry attempts" (Lambda developer guide, Kafka retry configurations)
RETRIES_WITH_DESTINATION: Final = 10


@dataclass(frozen=True)
class KafkaMapping:
    """One `AWS::Lambda::EventSourceMapping` with a `SelfManagedEventSource`, evaluated."""

    logical_id: str
    function_name: str
    function_arn: str
    function_timeout_s: float
    topic: str
    group_id: str
    bootstrap_servers: str  # comma-separated host:port, as the event's `bootstrapServers`
    batch_size: int = DEFAULT_BATCH_SIZE
    batching_window_s: float = DEFAULT_BATCHING_WINDOW_S
    starting_position: str = "LATEST"  # TRIM_HORIZON or LATEST
    max_retry_attempts: int = INFINITE
    max_record_age_s: int = INFINITE
    bisect_on_error: bool = False
    on_failure_destination: str | None = None  # an ARN
    function_response_types: tuple[str, ...] = ()

    @property
    def reports_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.function_response_types

    @property
    def auto_offset_reset(self) -> str:
        return "earliest" if self.starting_position == "TRIM_HORIZON" else "latest"

    @property
    def retry_limit(self) -> int | None:
        """Retries of a failing record before it goes to the destination; None retries until it is too old."""
        if self.max_retry_attempts != INFINITE:
            return self.max_retry_attempts
        return RETRIES_WITH_DESTINATION if self.on_failure_destination else None


def kafka_mappings(template_path: str | Path, parameters: Mapping[str, str], physical: Physical) -> list[KafkaMapping]:
    """Every self-managed Kafka mapping the template creates for `parameters` when deployed to AWS with
    KafkaTriggerSource=self-managed (a local Stage counts as dev: the template switches the mappings off there).

    `parameters` override the template's defaults (samconfig's overrides plus the live addresses, such as
    KafkaBootstrapServers); `physical` gives resource ids: "KafkaConsumerFunction" -> the deployed function's
    name, "DeadLetterQueue.Arn" -> the queue's ARN (see samhost.cfn).
    """
    template = load_template(template_path)
    values = {**parameters, **AS_ON_AWS}
    if values.get("Stage", _default(template, "Stage")) == LOCAL_STAGE:
        values["Stage"] = STAGE_AS_ON_AWS
    evaluator = Evaluator(template, values, physical=physical)
    conditions: Mapping[str, Any] = template.get("Conditions") or {}
    if MISCONFIGURED_CONDITION in conditions and evaluator.condition(MISCONFIGURED_CONDITION):
        raise TemplateError(
            f"the template refuses these parameters ({MISCONFIGURED_CONDITION} holds; see its comments):"
            f" {dict(parameters)}"
        )
    mappings = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        if resource.get("Type") != MAPPING_TYPE or "SelfManagedEventSource" not in properties:
            continue
        if not evaluator.resource_condition(logical_id):
            continue
        mapping = _mapping(evaluator, logical_id, properties)
        if mapping is not None:
            mappings.append(mapping)
    return mappings


def _default(template: Mapping[str, Any], name: str) -> str | None:
    spec = (template.get("Parameters") or {}).get(name) or {}
    default = spec.get("Default")
    return None if default is None else str(default)


def _mapping(evaluator: Evaluator, logical_id: str, properties: Mapping[str, Any]) -> KafkaMapping | None:
    def value(name: str, default: object = None) -> Any:  # noqa: ANN401 - a property's evaluated value
        return evaluator.evaluate(properties[name]) if name in properties else default

    if not _flag(value("Enabled", default=True)):
        return None
    topics = value("Topics", [])
    if len(topics) != 1:
        raise TemplateError(f"{logical_id}: a Kafka mapping takes exactly one topic, got {topics!r}")
    # CloudFormation spells the key KafkaBootstrapServers; Lambda's API, KAFKA_BOOTSTRAP_SERVERS
    named = (value("SelfManagedEventSource") or {}).get("Endpoints") or {}
    endpoints = named.get("KafkaBootstrapServers") or named.get("KAFKA_BOOTSTRAP_SERVERS") or []
    if not endpoints:
        raise TemplateError(f"{logical_id}: no SelfManagedEventSource.Endpoints.KafkaBootstrapServers")
    group_id = (value("SelfManagedKafkaEventSourceConfig") or {}).get("ConsumerGroupId")
    if not group_id:
        raise TemplateError(f"{logical_id}: no SelfManagedKafkaEventSourceConfig.ConsumerGroupId")
    function_name = str(value("FunctionName"))
    destination = ((value("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    return KafkaMapping(
        logical_id=logical_id,
        function_name=function_name,
        function_arn=_function_arn(evaluator, function_name),
        function_timeout_s=_function_timeout(evaluator, properties.get("FunctionName")),
        topic=str(topics[0]),
        group_id=str(group_id),
        bootstrap_servers=",".join(str(endpoint).strip() for endpoint in endpoints),
        batch_size=int(value("BatchSize", DEFAULT_BATCH_SIZE)),
        batching_window_s=float(value("MaximumBatchingWindowInSeconds", DEFAULT_BATCHING_WINDOW_S)),
        starting_position=str(value("StartingPosition", "LATEST")),
        max_retry_attempts=int(value("MaximumRetryAttempts", INFINITE)),
        max_record_age_s=int(value("MaximumRecordAgeInSeconds", INFINITE)),
        bisect_on_error=_flag(value("BisectBatchOnFunctionError", default=False)),
        on_failure_destination=str(destination) if destination else None,
        function_response_types=tuple(str(kind) for kind in value("FunctionResponseTypes", [])),
    )


def _flag(value: object) -> bool:
    return value is True or str(value).lower() == "true"


def _function_arn(evaluator: Evaluator, function_name: str) -> str:
    if function_name.startswith("arn:"):
        return function_name
    pseudo = evaluator.pseudo
    return (
        f"arn:{pseudo['AWS::Partition']}:lambda:{pseudo['AWS::Region']}:{pseudo['AWS::AccountId']}"
        f":function:{function_name}"
    )


def _function_timeout(evaluator: Evaluator, function_name: object) -> float:
    """The function's Timeout (its own, else the template's Globals), which bounds how long an invoke waits."""
    if isinstance(function_name, dict) and set(function_name) == {"Ref"}:
        resources = evaluator.template.get("Resources") or {}
        function = resources.get(str(function_name["Ref"]).removesuffix(".Alias")) or {}
        if "Timeout" in (function.get("Properties") or {}):
            return float(evaluator.evaluate(function["Properties"]["Timeout"]))
    globals_timeout = ((evaluator.template.get("Globals") or {}).get("Function") or {}).get("Timeout")
    return DEFAULT_FUNCTION_TIMEOUT_S if globals_timeout is None else float(evaluator.evaluate(globals_timeout))


def samconfig_parameters(path: str | Path, config_env: str = "local") -> dict[str, str]:
    """The `parameter_overrides` of a samconfig.toml environment's deploy command, as a dict."""
    config = tomllib.loads(Path(path).read_text())
    overrides = config.get(config_env, {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
    items = shlex.split(overrides) if isinstance(overrides, str) else [str(item) for item in overrides]
    parameters = {}
    for item in items:
        name, separator, value = item.partition("=")
        if not separator:
            raise TemplateError(f"{path} [{config_env}]: parameter override {item!r} is not Name=Value")
        parameters[name] = value
    return parameters
