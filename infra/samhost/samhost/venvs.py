"""Where the local stack's interpreters live: the Lambda runtime's (awslambdaric + boto3, as in Lambda's python3.13
image) and LocalStack's. `make` creates both; the variables point elsewhere when a developer keeps their own."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


class MissingVenvError(RuntimeError):
    """A virtual environment the local stack needs is not there; the message says how to make it."""


def _python(variable: str, default: Path, make_target: str) -> Path:
    python = Path(os.environ.get(variable) or default)
    if not os.access(python, os.X_OK):
        raise MissingVenvError(f"{python} is missing: run `make {make_target}` (or set {variable})")
    return python


def lambda_python() -> Path:
    """The interpreter that runs functions in the host executor's sandboxes (LOCALBUS_LAMBDA_PYTHON)."""
    return _python("LOCALBUS_LAMBDA_PYTHON", REPO / ".venv-lambda" / "bin" / "python", "setup")


def localstack_python() -> Path:
    """LocalStack's own interpreter, with the project's plugins installed (LOCALSTACK_PYTHON)."""
    return _python("LOCALSTACK_PYTHON", REPO / ".venv-localstack" / "bin" / "python", "setup")
