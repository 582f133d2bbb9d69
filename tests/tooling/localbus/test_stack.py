"""The bus's stack commands on a stack they cannot use."""

from __future__ import annotations

import json
import os

import pytest
from hoststack.state import StackError
from localbus import stack
from samhost.processes import start_time


def test_deploy_to_a_stack_without_the_webhook_receiver_says_how_to_start_one(tmp_path):
    """A stack started by `python -m hoststack up` has no webhook: the deploy stops before building, in one line."""
    me = os.getpid()  # a live "supervisor"
    supervisor = {"name": "supervisor", "pid": me, "start_time": start_time(me), "address": "", "log": ""}
    pieces = {name: {**supervisor, "name": name, "address": "http://127.0.0.1:9"} for name in ("localstack", "kafka")}
    (tmp_path / "state.json").write_text(
        json.dumps({"state_dir": str(tmp_path), "supervisor": supervisor, "pieces": pieces})
    )
    with pytest.raises(StackError, match=r"no webhook receiver .* `make stop`, then `make up`"):
        stack.deploy_stack(tmp_path)
    assert not (tmp_path / "sam-build").exists()
