"""`python -m hoststack.invoke`: samhost.invoke pointed at the running stack's LocalStack."""

from __future__ import annotations

import json
import os

from hoststack.invoke import stack_endpoint
from samhost.processes import start_time


def test_aws_endpoint_url_then_the_running_stacks_localstack(tmp_path):
    me = os.getpid()  # a live "supervisor": the endpoint comes only from a running stack
    supervisor = {"name": "supervisor", "pid": me, "start_time": start_time(me), "address": "", "log": ""}
    localstack = {**supervisor, "name": "localstack", "address": "http://127.0.0.1:41234"}
    state = {"state_dir": str(tmp_path), "supervisor": supervisor, "pieces": {"localstack": localstack}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert stack_endpoint({"AWS_ENDPOINT_URL": "http://h:1"}, tmp_path) == "http://h:1"
    assert stack_endpoint({}, tmp_path) == "http://127.0.0.1:41234"
    assert stack_endpoint({"LOCALBUS_STATE_DIR": str(tmp_path)}) == "http://127.0.0.1:41234"
    assert stack_endpoint({}, tmp_path / "no-stack") is None
    gone = {**state, "supervisor": {**supervisor, "start_time": (start_time(me) or 0) + 1}}  # pid reused since
    (tmp_path / "state.json").write_text(json.dumps(gone))
    assert stack_endpoint({}, tmp_path) is None
    (tmp_path / "state.json").write_text("{half")
    assert stack_endpoint({}, tmp_path) is None
