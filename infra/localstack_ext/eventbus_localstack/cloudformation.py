"""Where LocalStack's CloudFormation engine differs from AWS in a way the bus's template meets, made right.

List parameters on update and delete: the engine turns a `CommaDelimitedList` (or `List<...>`) parameter's value
into a list only for the template being deployed (`after`), not for the deployed one (`before`). Deleting or
updating a stack then evaluates its conditions with the list as a plain string, and any `Fn::Join` or
`Fn::Select` over it fails ("Invalid arguments list definition for Fn::Join"), leaving the stack
DELETE_FAILED. AWS resolves both sides alike; so does this patch, installed when LocalStack starts
(the `localstack.hooks.on_infra_start` entry point).
"""

from __future__ import annotations

import re
from typing import Any

from localstack.runtime import hooks

LIST_TYPE = re.compile(r"CommaDelimitedList|List<[^>]+>")


@hooks.on_infra_start()  # type: ignore[untyped-decorator]  # LocalStack is untyped
def resolve_deployed_list_parameters() -> None:
    from localstack.services.cloudformation.engine.v2.change_set_model_preproc import ChangeSetModelPreproc
    from localstack.utils.patch import patch

    @patch(ChangeSetModelPreproc.visit_node_parameter)  # type: ignore[untyped-decorator]
    def visit_node_parameter(original: Any, self: Any, node_parameter: Any) -> Any:  # noqa: ANN401 - LocalStack's
        delta = original(self, node_parameter)
        type_before = self.visit(node_parameter.type_).before
        if isinstance(delta.before, str) and isinstance(type_before, str) and LIST_TYPE.fullmatch(type_before):
            delta.before = [item.strip() for item in delta.before.split(",")]
        return delta
