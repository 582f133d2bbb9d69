"""The whole bus on this machine, no Docker: the local stack (hoststack) with the bus's webhook receiver, and the
bus deployed to it (SAM, with the subscriptions and topics the local stage needs).

    python -m localbus.stack up       # servers + LocalStack + the webhook receiver, in the background
    python -m localbus.stack deploy   # sam build + samlocal deploy (samconfig.toml's `local`)
    python -m localbus.stack status   # each piece: state, address, pid, log file; the API once deployed
    python -m localbus.stack hold otlp 10   # keep a piece down for 10 s (a fault, by hand)
    python -m localbus.stack down     # stop everything `up` started, by PID

What the stack is and how it is supervised: hoststack.commands. The bus adds its webhook receiver (the local
subscribers' endpoint: it checks the bus's HMAC signatures and records each delivery) and, on deploy, the SQS
queue, the signing secret and the subscriptions (localbus.wiring).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from hoststack import commands
from hoststack.commands import Row, down, print_status
from hoststack.state import DEFAULT_STATE_DIR, StackError, StackState, current
from samhost.deploy import Deployment, build, deploy, samconfig_parameters, samconfig_stack_name, source_digest

from localbus.wiring import create_topics, local_parameters, prepare_targets

__all__ = ["deploy_stack", "down", "print_status", "status", "up"]

EXTRAS = ("webhook=localbus.webhook:stack_receiver",)


def up(state_dir: Path = DEFAULT_STATE_DIR, extras: Sequence[str] = ()) -> StackState:
    """Start the stack with the bus's webhook receiver (and any other `extras`) in the background, or return the
    running one."""
    return commands.up(state_dir, (*EXTRAS, *extras))


def deploy_stack(
    state_dir: Path = DEFAULT_STATE_DIR,
    extra_parameters: dict[str, str] | None = None,
    *,
    built_template: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> Deployment:
    """sam build (unless `built_template` is given), then deploy to the running stack; records the deployment so
    the supervisor starts the trigger. `say` is given each step's progress (what it does, then how long it took)."""
    state = current(state_dir)
    if state is None:
        raise StackError("the local stack is not running: start it with `make up` (or `make demo`)")
    webhook = state.pieces.get("webhook")
    if webhook is None:
        raise StackError(
            "the running stack has no webhook receiver (was it started by `python -m hoststack up`?): "
            "`make stop`, then `make up`"
        )
    digest = source_digest()
    if built_template is None:
        with _step(say, "sam build (the layer and four functions; cached after the first time)"):
            built_template = build(state_dir / "sam-build")
    with _step(say, "the local subscribers (SQS queue, webhook secret, subscriptions parameter) and the topics"):
        targets = prepare_targets(state.localstack_url, webhook.address, webhook.secret)
        parameters = {**local_parameters(state, targets), **(extra_parameters or {})}
        create_topics(state.address("kafka"), {**samconfig_parameters(), **parameters})
    with _step(say, f"samlocal deploy of {samconfig_stack_name()} to LocalStack"):
        deployment = deploy(state.localstack_url, built_template, parameters, stack_name=samconfig_stack_name())
    with _step(say, "the Kafka trigger for the new deployment"):
        commands.record_deployment(state_dir, deployment, targets=asdict(targets), source_digest=digest)
    return deployment


@contextlib.contextmanager
def _step(say: Callable[[str], None] | None, what: str) -> Iterator[None]:
    started = time.perf_counter()
    if say is not None:
        say(f"==> {what}")
    yield
    if say is not None:
        say(f"    done in {time.perf_counter() - started:.1f} s")


def api_url(deployment: Deployment) -> str:
    """The bus's REST API stage on LocalStack's execute-api data plane (this stack's port, not 4566)."""
    api_id, stage = deployment.outputs["EventBusApiId"], deployment.parameters["Stage"]
    return f"{deployment.endpoint_url}/_aws/execute-api/{api_id}/{stage}"


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[Row]:
    """Each piece's row, and the API's address once the bus is deployed."""
    rows = commands.status(state_dir)
    state = current(state_dir)
    if state is not None and state.deployment:
        outputs = state.deployment["outputs"]
        stage = state.deployment["parameters"]["Stage"]
        api = f"{state.localstack_url}/_aws/execute-api/{outputs['EventBusApiId']}/{stage}"
        rows.append(Row("api", "deployed", api, 0, str(Path(state.state_dir) / "logs" / "lambda")))
    return rows


def main(argv: list[str] | None = None) -> int:
    commands_ = ("up", "deploy", "status", "down", "hold")
    args = commands.parser("python -m localbus.stack", commands_, __doc__.splitlines()[0]).parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    try:
        if args.command == "up":
            up(state_dir, args.extra)
        elif args.command == "deploy":
            deployment = deploy_stack(state_dir, say=lambda line: print(line, flush=True))
            print(f"deployed {deployment.stack_name} in {deployment.seconds:.1f} s; API at {api_url(deployment)}")
            return 0
        elif args.command != "status":
            return commands.run(args)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_status(status(state_dir), state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
