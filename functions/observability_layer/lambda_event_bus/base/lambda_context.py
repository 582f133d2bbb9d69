"""The Lambda context object, as the layer reads it (awslambdaric's, or a test's)."""

from __future__ import annotations

from typing import Protocol


class LambdaContext(Protocol):
    """What the layer reads from the Lambda context object (awslambdaric's or a test's)."""

    @property
    def aws_request_id(self) -> str: ...

    @property
    def function_name(self) -> str: ...

    @property
    def invoked_function_arn(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...
