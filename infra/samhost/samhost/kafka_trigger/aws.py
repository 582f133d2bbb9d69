"""The trigger's AWS side through boto3 (which honours AWS_ENDPOINT_URL, so on the local stack all of it is
LocalStack): invoking the function, the SQS on-failure destination, and a deployed stack's physical ids."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from samhost.cfn import MissingPhysicalIdError
from samhost.kafka_trigger.batches import DeadLetter
from samhost.kafka_trigger.delivery import FunctionFailedError, InvokeResult

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs import SQSClient

# SQS's classic message limit (moto and LocalStack enforce it; AWS now takes 1 MiB)
MAX_SQS_MESSAGE_BYTES: Final = 256 * 1024
# Lambda refuses these for the payload itself: retrying the same batch cannot help, so they count as attempts
REFUSED_PAYLOAD_ERRORS: Final = frozenset(
    {"RequestTooLargeException", "RequestEntityTooLargeException", "InvalidRequestContentException"}
)


class LambdaInvoker:
    """RequestResponse invokes; botocore's own retries are off (a retried invoke runs the function twice: the
    trigger decides on retries), and the read timeout is the function's timeout plus a margin."""

    def __init__(self, *, region: str | None = None) -> None:
        self._session = boto3.session.Session(region_name=region)
        self._clients: dict[float, LambdaClient] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def _client(self, timeout_s: float) -> LambdaClient:
        with self._lock:
            if timeout_s not in self._clients:
                config = Config(
                    connect_timeout=5,
                    read_timeout=timeout_s,
                    retries={"mode": "standard", "total_max_attempts": 1},
                )
                self._clients[timeout_s] = self._session.client("lambda", config=config)
            return self._clients[timeout_s]

    def invoke(self, function_name: str, payload: bytes, *, timeout_s: float) -> InvokeResult:
        try:
            response = self._client(timeout_s).invoke(
                FunctionName=function_name, InvocationType="RequestResponse", Payload=payload
            )
        except ReadTimeoutError as error:
            raise FunctionFailedError(f"no answer within {timeout_s:.0f}s") from error
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in REFUSED_PAYLOAD_ERRORS:
                raise FunctionFailedError(str(error)) from error
            raise
        return InvokeResult(
            status_code=response["StatusCode"],
            payload=response["Payload"].read(),
            function_error=response.get("FunctionError"),
            executed_version=response.get("ExecutedVersion", "$LATEST"),
            request_id=response["ResponseMetadata"].get("RequestId", ""),
        )


class SqsDestination:
    """An SQS queue, by ARN, as the on-failure destination (its URL looked up once, with get_queue_url)."""

    def __init__(
        self, queue_arn: str, *, sqs: SQSClient | None = None, max_message_bytes: int = MAX_SQS_MESSAGE_BYTES
    ) -> None:
        parts = queue_arn.split(":")
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs":
            raise ValueError(f"not an SQS queue ARN: {queue_arn}")
        self.queue_arn = queue_arn
        self._region, self._account, self._name = parts[3], parts[4], parts[5]
        self._sqs = sqs if sqs is not None else boto3.client("sqs", region_name=self._region)
        self._url: str | None = None
        self.max_message_bytes = max_message_bytes

    def queue_url(self) -> str:
        if self._url is None:
            answer = self._sqs.get_queue_url(QueueName=self._name, QueueOwnerAWSAccountId=self._account)
            self._url = answer["QueueUrl"]
        return self._url

    def send(self, letter: DeadLetter) -> None:
        url = self.queue_url()
        for body in letter.bodies(self.max_message_bytes):
            self._sqs.send_message(QueueUrl=url, MessageBody=body)


def destination_for(arn: str | None) -> SqsDestination | None:
    if arn is None:
        return None
    if arn.startswith("arn:") and arn.split(":")[2:3] == ["sqs"]:
        return SqsDestination(arn)
    raise ValueError(f"on-failure destination {arn}: the local trigger sends to SQS queues only")


class StackResources:
    """Physical ids of a deployed stack, for samhost.cfn: "LogicalId" -> its physical id; "LogicalId.Arn" for an
    SQS queue or a Lambda function -> its ARN (asked of SQS or Lambda, once)."""

    def __init__(
        self,
        stack_name: str,
        *,
        cloudformation: CloudFormationClient | None = None,
        sqs: SQSClient | None = None,
        lambda_client: LambdaClient | None = None,
        region: str | None = None,
    ) -> None:
        self.stack_name = stack_name
        self.region = region
        self._cloudformation = cloudformation or boto3.client("cloudformation", region_name=region)
        self._sqs, self._lambda = sqs, lambda_client
        self._resources: dict[str, tuple[str, str]] | None = None
        self._attributes: dict[str, str] = {}

    def resources(self) -> dict[str, tuple[str, str]]:
        """Logical id -> (type, physical id)."""
        if self._resources is None:
            found: dict[str, tuple[str, str]] = {}
            paginator = self._cloudformation.get_paginator("list_stack_resources")
            for page in paginator.paginate(StackName=self.stack_name):
                for summary in page["StackResourceSummaries"]:
                    physical = summary.get("PhysicalResourceId")
                    if physical:
                        found[summary["LogicalResourceId"]] = (summary["ResourceType"], physical)
            self._resources = found
        return self._resources

    def __call__(self, key: str) -> str:
        logical_id, _, attribute = key.partition(".")
        if logical_id not in self.resources():
            raise MissingPhysicalIdError(f"{logical_id} is not a resource of stack {self.stack_name}")
        kind, physical = self.resources()[logical_id]
        if not attribute:
            return physical
        if attribute != "Arn":
            raise MissingPhysicalIdError(f"{key}: only Ref and the Arn attribute are looked up")
        if key not in self._attributes:
            self._attributes[key] = self._arn(kind, physical, key)
        return self._attributes[key]

    def _arn(self, kind: str, physical: str, key: str) -> str:
        if physical.startswith("arn:"):
            return physical
        if kind == "AWS::SQS::Queue":
            self._sqs = self._sqs or boto3.client("sqs", region_name=self.region)
            attributes = self._sqs.get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])
            return attributes["Attributes"]["QueueArn"]
        if kind in ("AWS::Lambda::Function", "AWS::Serverless::Function"):
            self._lambda = self._lambda or boto3.client("lambda", region_name=self.region)
            return self._lambda.get_function_configuration(FunctionName=physical)["FunctionArn"]
        raise MissingPhysicalIdError(f"{key}: no way to look up the ARN of a {kind}")
