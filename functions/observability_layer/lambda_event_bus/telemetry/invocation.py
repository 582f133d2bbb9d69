"""The invocation being handled in this execution environment: ids that logs and errors carry."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True)
class Invocation:
    request_id: str | None = None
    correlation_id: str | None = None
    function_arn: str | None = None
    cold_start: bool = False


_current: ContextVar[Invocation | None] = ContextVar("observability_invocation", default=None)


def current_invocation() -> Invocation | None:
    return _current.get()


def set_invocation(invocation: Invocation | None) -> Token[Invocation | None]:
    """Make `invocation` current; pass the token to `reset_invocation` when it ends."""
    return _current.set(invocation)


def reset_invocation(token: Token[Invocation | None]) -> None:
    _current.reset(token)
