"""`sam build`, then `samlocal deploy` of template.yaml to the local stack, with samconfig.toml's `local` environment.

The parameters are samconfig.toml's `local` parameter_overrides, then the caller's own (the live addresses of
the stack's servers, say, whose ports are chosen at start). LocalStack cannot update a REST API in place ("Unable to
update resource type AWS::ApiGateway::RestApi"), so an existing stack is deleted and created again: on the local
stack a deploy is always a fresh create (about 35 s, most of it samlocal waiting on CloudFormation's events).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

from samhost.kafka_trigger import mappings
from samhost.venvs import REPO

if TYPE_CHECKING:
    from mypy_boto3_apigateway import APIGatewayClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient

TEMPLATE = REPO / "template.yaml"
SAMCONFIG = REPO / "samconfig.toml"
REGION = "us-east-1"
ACCESS_KEY = "test"  # LocalStack's default credentials (its account 000000000000)


class DeployError(RuntimeError):
    """sam build or deploy failed; the message carries the tool's own output."""


@overload
def aws_client(
    service: Literal["apigateway"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> APIGatewayClient: ...
@overload
def aws_client(
    service: Literal["cloudformation"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> CloudFormationClient: ...
@overload
def aws_client(
    service: Literal["lambda"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> LambdaClient: ...
@overload
def aws_client(
    service: Literal["logs"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> CloudWatchLogsClient: ...
@overload
def aws_client(
    service: Literal["secretsmanager"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> SecretsManagerClient: ...
@overload
def aws_client(
    service: Literal["sqs"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> SQSClient: ...
@overload
def aws_client(
    service: Literal["ssm"], endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120
) -> SSMClient: ...
@overload
def aws_client(service: str, endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120) -> Any: ...  # noqa: ANN401 - services without stubs here


def aws_client(service: str, endpoint_url: str, *, attempts: int = 3, read_timeout: float = 120) -> Any:
    """A boto3 client for the local stack (LocalStack's default account and region). `attempts=1` for calls that
    must not be repeated behind the caller's back (a Lambda Invoke that timed out may still have run).

    Not localstack-client: its sessions take AWS_ENDPOINT_URL over the host they are given, and a developer's
    own AWS_ENDPOINT_URL would then send the demo and the tests to another LocalStack than this stack's."""
    retries: Any = {"total_max_attempts": attempts, "mode": "standard"}
    config = Config(retries=retries, connect_timeout=5, read_timeout=read_timeout)
    name: Any = service
    return boto3.client(
        name,
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=config,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=ACCESS_KEY,
    )


def sam_binary(name: str = "sam") -> str:
    """`sam` or `samlocal` from the SAM venv the Makefile makes (SAM_CLI names `sam` elsewhere)."""
    folder = Path(os.environ["SAM_CLI"]).parent if os.environ.get("SAM_CLI") else REPO / ".venv-sam" / "bin"
    binary = folder / name
    if not binary.exists():
        raise DeployError(f"{binary} is missing: run `make setup`")
    return str(binary)


def sam_environment(endpoint_url: str | None = None) -> dict[str, str]:
    """`sam build` without a container needs the runtime's own interpreter first on PATH: this venv's is 3.13."""
    python_bin = os.environ.get("PYTHON313_BIN") or str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}", "SAM_CLI_TELEMETRY": "0"}
    env["DISABLE_DEPRECATION_NOTICE"] = "1"
    if endpoint_url:
        env.update({"AWS_ENDPOINT_URL": endpoint_url, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION})
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ACCESS_KEY})
        env.pop("AWS_PROFILE", None)
    return env


def run(argv: list[str], env: Mapping[str, str], what: str, timeout: float = 540) -> str:
    result = subprocess.run(  # the SAM CLI, from our own venv
        argv, cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise DeployError(f"{what} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def build(build_dir: Path) -> Path:
    """`sam build` (no container) into build_dir; returns the built template."""
    argv = [sam_binary(), "build", "--template-file", str(TEMPLATE), "--build-dir", str(build_dir)]
    run([*argv, "--base-dir", str(REPO)], sam_environment(), "sam build")
    return build_dir / "template.yaml"


def source_digest() -> str:
    """What a deploy is made of (the template, samconfig.toml and every function's and the layer's files): a
    deployment records it, so a changed source is deployed again and an unchanged one is not."""
    digest = hashlib.sha256()
    files = [TEMPLATE, SAMCONFIG, *sorted((REPO / "functions").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def samconfig_parameters(config_env: str = "local") -> dict[str, str]:
    """The environment's parameter_overrides from samconfig.toml, as a dict."""
    return mappings.samconfig_parameters(SAMCONFIG, config_env)


def samconfig_stack_name(config_env: str = "local") -> str:
    config = tomllib.loads(SAMCONFIG.read_text())
    return str(config[config_env]["global"]["parameters"]["stack_name"])


@dataclass(frozen=True)
class Deployment:
    stack_name: str
    endpoint_url: str
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id
    parameters: dict[str, str]
    seconds: float


def delete_stack(endpoint_url: str, stack_name: str, timeout: float = 120) -> None:
    cloudformation = aws_client("cloudformation", endpoint_url)
    try:
        cloudformation.describe_stacks(StackName=stack_name)
    except cloudformation.exceptions.ClientError:
        return
    cloudformation.delete_stack(StackName=stack_name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
        except cloudformation.exceptions.ClientError:
            return
        if status == "DELETE_COMPLETE":
            return
        if status == "DELETE_FAILED":
            raise DeployError(f"deleting {stack_name} failed")
        time.sleep(0.5)
    raise DeployError(f"deleting {stack_name} took more than {timeout:.0f} s")


def deploy(
    endpoint_url: str,
    built_template: Path,
    parameters: Mapping[str, str],
    *,
    config_env: str = "local",
    stack_name: str | None = None,
) -> Deployment:
    """Deploy the built template with samlocal; samconfig's parameters first, then `parameters`."""
    stack_name = stack_name or samconfig_stack_name(config_env)
    merged = {**samconfig_parameters(config_env), **parameters}
    started = time.perf_counter()
    delete_stack(endpoint_url, stack_name)
    overrides = [f"{key}={value}" for key, value in merged.items()]
    run(
        [
            sam_binary("samlocal"),
            "deploy",
            "--template-file",
            str(built_template),
            "--config-file",
            str(SAMCONFIG),
            "--config-env",
            config_env,
            "--stack-name",
            stack_name,
            "--region",
            REGION,
            "--no-fail-on-empty-changeset",
            "--parameter-overrides",
            *overrides,
        ],
        sam_environment(endpoint_url),
        "samlocal deploy",
    )
    cloudformation = aws_client("cloudformation", endpoint_url)
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    resources = {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for resource in cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    }
    return Deployment(stack_name, endpoint_url, outputs, resources, merged, time.perf_counter() - started)
