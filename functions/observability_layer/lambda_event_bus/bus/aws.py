"""AWS clients for the bus's functions, from botocore alone.

`boto3.client(...)` is a thin layer over botocore's session, but importing boto3 also loads its resource factory
and s3transfer: ~55 ms and ~2 MiB of every cold start, for nothing the bus uses (no resources, no transfers).
These clients are botocore's own, from one session per process: they honour AWS_ENDPOINT_URL, the region and the
credentials of the environment exactly as boto3's do.

The session's data loader is botocore's, but for one thing: before loading a service's model, botocore lists every
service it ships (~450 directories, for the model and again for its endpoint rules: ~12 ms of each cold start) to
check the name. Here only the services asked for are looked up; an unknown one is still an UnknownServiceError.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Literal, overload

from lambda_event_bus.telemetry import snapstart

__all__ = ["client", "fast_config"]

if TYPE_CHECKING:
    from botocore.config import Config
    from botocore.loaders import Loader
    from botocore.session import Session
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kafkaconnect import KafkaConnectClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient

_session: Session | None = None
_lock = threading.Lock()
# every live client made here: their connections are closed before a SnapStart snapshot (weakly held: a client
# dropped by its owner is not kept alive for this)
_clients: weakref.WeakSet[Any] = weakref.WeakSet()


def _close_connections() -> None:
    """Before a snapshot: a restored environment must not reuse (or share) a connection made during init."""
    for made in list(_clients):
        made.close()  # botocore opens a new connection on the next call


@overload
def client(service: Literal["dynamodb"], config: Config | None = None) -> DynamoDBClient: ...


@overload
def client(service: Literal["sqs"], config: Config | None = None) -> SQSClient: ...


@overload
def client(service: Literal["sns"], config: Config | None = None) -> SNSClient: ...


@overload
def client(service: Literal["ssm"], config: Config | None = None) -> SSMClient: ...


@overload
def client(service: Literal["secretsmanager"], config: Config | None = None) -> SecretsManagerClient: ...


@overload
def client(service: Literal["kafkaconnect"], config: Config | None = None) -> KafkaConnectClient: ...


@overload
def client(service: str, config: Config | None = None) -> Any: ...  # noqa: ANN401 - services without stubs


def client(service: str, config: Config | None = None) -> Any:
    """A botocore client for `service` (creating clients is not thread-safe in botocore: one at a time)."""
    global _session  # noqa: PLW0603 - one botocore session per process, as boto3's default session
    with _lock:
        if _session is None:
            import botocore.session

            _session = botocore.session.get_session()
            _session.register_component("data_loader", _loader(_session.get_config_variable("data_path")))
            snapstart.register(_close_connections, lambda: None)
        made = _session.create_client(service, config=config)
        _clients.add(made)
        return made


def _loader(data_path: str | None) -> Loader:
    """botocore's loader for the session's data path (AWS_DATA_PATH), listing only the services asked for."""
    import os

    from botocore.exceptions import DataNotFoundError, UnknownServiceError
    from botocore.loaders import Loader

    class AskedServicesLoader(Loader):
        def __init__(self, **kwargs: Any) -> None:  # noqa: ANN401 - botocore's own keywords
            super().__init__(**kwargs)
            self._asked: set[str] = set()

        def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:  # noqa: ANN401
            self._asked.add(service_name)
            try:
                return super().load_service_model(service_name, type_name, api_version)
            except UnknownServiceError:  # the error names every service botocore knows, as its own does
                known = Loader.list_available_services(self, type_name)
                raise UnknownServiceError(service_name=service_name, known_service_names=", ".join(known)) from None

        def list_available_services(self, type_name: str) -> list[str]:
            """The services asked for so far that have this type of data (botocore lists them all)."""
            found = []
            for name in sorted(self._asked):
                try:
                    self.list_api_versions(name, type_name)
                except DataNotFoundError:
                    continue
                found.append(name)
            return found

    if data_path is None:
        return AskedServicesLoader()
    paths = [os.path.expanduser(os.path.expandvars(path)) for path in data_path.split(os.pathsep)]
    return AskedServicesLoader(extra_search_paths=paths)


def fast_config(connect_timeout: float, read_timeout: float, max_attempts: int = 2) -> Config:
    """Timeouts and retries that fit inside an invocation (botocore's defaults are 60 s and 5 legacy retries)."""
    from botocore.config import Config

    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
    )
