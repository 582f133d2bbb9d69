"""What every package of the layer and every function share: configuration read from the environment, the
layer's exception base, the Lambda context, and API Gateway's shapes as plain values. Imports nothing heavy."""

from lambda_event_bus.base.env import EnvReader, redact_userinfo
from lambda_event_bus.base.exceptions import ConfigError, LayerError
from lambda_event_bus.base.http import (
    HttpRequest,
    ProxyResponse,
    normalize_http_headers,
    parse_api_gateway_event,
    problem,
)
from lambda_event_bus.base.lambda_context import LambdaContext

__all__ = [
    "ConfigError",
    "EnvReader",
    "HttpRequest",
    "LambdaContext",
    "LayerError",
    "ProxyResponse",
    "normalize_http_headers",
    "parse_api_gateway_event",
    "problem",
    "redact_userinfo",
]
