"""The Kafka trigger's command line: read the mappings from the template, poll until SIGTERM or SIGINT.

    python -m samhost.kafka_trigger --template template.yaml \
        --samconfig samconfig.toml --config-env local \
        --parameters-json '{"KafkaBootstrapServers": "127.0.0.1:9092"}' \
        (--physical-json '{"KafkaConsumerFunction": "<name>", "DeadLetterQueue.Arn": "<arn>"}' | --stack-name NAME)

or `--config trigger.json`, a JSON object with the same keys in snake case (template, samconfig, config_env,
parameters, physical, stack_name, region, log_level, and the consumers' session_timeout_ms and
heartbeat_interval_ms: 6000 and 1000 by default); flags given on the line win. Parameters: the template's
defaults, then samconfig's parameter_overrides, then `parameters`. Logs go to stderr, one line per batch.
Exits 0 when stopped (with no self-managed Kafka mapping for the parameters it says so and idles until then);
2 when the arguments or the template's parameters are wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from samhost.cfn import Physical, TemplateError
from samhost.kafka_trigger.aws import LambdaInvoker, StackResources, destination_for
from samhost.kafka_trigger.mappings import kafka_mappings, samconfig_parameters
from samhost.kafka_trigger.poller import PollerSettings, start_pollers

logger = logging.getLogger("samhost.kafka_trigger")

# ManagedProcess.stop sends SIGKILL 10 s after SIGTERM: finish the invokes in flight within that
SHUTDOWN_GRACE_S = 8.0


@dataclass(frozen=True)
class TriggerConfig:
    template: Path
    parameters: Mapping[str, str] = field(default_factory=dict)
    physical: Mapping[str, str] = field(default_factory=dict)
    stack_name: str | None = None
    region: str | None = None
    log_level: str = "INFO"
    session_timeout_ms: int = PollerSettings.session_timeout_ms
    heartbeat_interval_ms: int = PollerSettings.heartbeat_interval_ms

    def physical_ids(self) -> Physical:
        return StackResources(self.stack_name, region=self.region) if self.stack_name else self.physical


def parse_config(argv: Sequence[str] | None = None) -> TriggerConfig:
    parser = argparse.ArgumentParser(prog="python -m samhost.kafka_trigger", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="JSON file with the settings below (flags win)")
    parser.add_argument("--template", type=Path)
    parser.add_argument("--samconfig", type=Path, help="samconfig.toml whose parameter_overrides apply")
    parser.add_argument("--config-env", help="samconfig environment (default: local)")
    parser.add_argument("--parameters-json", help="JSON object of template parameters")
    parser.add_argument("--physical-json", help='JSON object: "LogicalId" or "LogicalId.Arn" -> physical id')
    parser.add_argument("--stack-name", help="look physical ids up in this deployed stack instead")
    parser.add_argument("--region")
    parser.add_argument("--log-level")
    args = parser.parse_args(argv)
    try:
        file: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
        given = {
            "template": args.template,
            "samconfig": args.samconfig,
            "config_env": args.config_env,
            "parameters": json.loads(args.parameters_json) if args.parameters_json else None,
            "physical": json.loads(args.physical_json) if args.physical_json else None,
            "stack_name": args.stack_name,
            "region": args.region,
            "log_level": args.log_level,
        }
    except (OSError, ValueError) as error:
        parser.error(str(error))
    settings = {**file, **{key: value for key, value in given.items() if value is not None}}
    if not settings.get("template"):
        parser.error("--template (or `template` in --config) is required")
    parameters: dict[str, str] = {}
    if settings.get("samconfig"):
        parameters.update(samconfig_parameters(settings["samconfig"], settings.get("config_env") or "local"))
    parameters.update({str(key): str(value) for key, value in (settings.get("parameters") or {}).items()})
    return TriggerConfig(
        template=Path(settings["template"]),
        parameters=parameters,
        physical={str(key): str(value) for key, value in (settings.get("physical") or {}).items()},
        stack_name=settings.get("stack_name"),
        region=settings.get("region") or parameters.get("AWS::Region"),
        log_level=str(settings.get("log_level") or "INFO").upper(),
        session_timeout_ms=int(settings.get("session_timeout_ms") or PollerSettings.session_timeout_ms),
        heartbeat_interval_ms=int(settings.get("heartbeat_interval_ms") or PollerSettings.heartbeat_interval_ms),
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(threadName)s %(message)s", stream=sys.stderr
    )
    try:
        mappings = kafka_mappings(config.template, config.parameters, config.physical_ids())
        destinations = {mapping.logical_id: destination_for(mapping.on_failure_destination) for mapping in mappings}
    except (TemplateError, ValueError, BotoCoreError, ClientError) as error:  # ClientError: no such stack
        logger.error("cannot read the Kafka mappings: %s", error)  # noqa: TRY400 - one line, no traceback
        return 2
    if not mappings:
        # idle until stopped rather than exit: a supervisor that restarts a trigger which exited would loop
        logger.warning(
            "%s declares no self-managed Kafka mapping for these parameters: nothing to poll", config.template
        )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "%s: stopping (invokes in flight finish, undone records stay uncommitted)", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    settings = PollerSettings(
        session_timeout_ms=config.session_timeout_ms, heartbeat_interval_ms=config.heartbeat_interval_ms
    )
    threads = start_pollers(
        mappings,
        LambdaInvoker(region=config.region),
        lambda mapping: destinations[mapping.logical_id],
        settings=settings,
        stop=stop,
    )
    while not stop.wait(0.5):
        pass
    # the invokes in flight finish within the grace period, else their daemon threads are left behind
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if stuck:
        logger.warning("left behind in an invoke: %s (their records stay uncommitted)", ", ".join(stuck))
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
