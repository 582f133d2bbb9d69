"""Invoke a function deployed to the running local stack: samhost.invoke with the stack's LocalStack as its
endpoint (AWS_ENDPOINT_URL or --endpoint still win).

    python -m hoststack.invoke FUNCTION EVENT [--stack-name NAME]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from samhost import invoke

from hoststack.state import DEFAULT_STATE_DIR, current


def stack_endpoint(environ: Mapping[str, str], state_dir: Path | None = None) -> str | None:
    """AWS_ENDPOINT_URL, else the running stack's LocalStack (LOCALBUS_STATE_DIR names its folder), else None."""
    if environ.get("AWS_ENDPOINT_URL"):
        return environ["AWS_ENDPOINT_URL"]
    state = current(state_dir or Path(environ.get("LOCALBUS_STATE_DIR") or DEFAULT_STATE_DIR))
    return state.localstack_url if state is not None and "localstack" in state.pieces else None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    endpoint = stack_endpoint(os.environ)
    given = any(argument == "--endpoint" or argument.startswith("--endpoint=") for argument in arguments)
    return invoke.main([*arguments, "--endpoint", endpoint] if endpoint and not given else arguments)


if __name__ == "__main__":
    sys.exit(main())
