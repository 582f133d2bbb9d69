"""Read a CloudFormation (SAM) template the way CloudFormation would for given parameters, without AWS: the YAML
short-form tags, parameter values, Conditions and the intrinsic functions resource properties use.

The local stack uses it to run what LocalStack (community) cannot, such as the Kafka event source mappings,
from the very template that deploys them on AWS (see samhost.kafka_trigger).

- `load_template(path)` reads YAML with `!Ref`, `!Sub`, `!If` ... (kept in their long form, `{"Fn::Sub": ...}`)
  and plain YAML anchors and aliases. Timestamps stay strings, as CloudFormation reads them.
- `Evaluator(template, parameters, physical=...)` resolves parameters (template defaults overridden by the given
  strings; `CommaDelimitedList` and `List<...>` become lists, items space-trimmed; `AllowedValues` checked),
  pseudo parameters (`AWS::Region`, `AWS::AccountId`, ...: override them with keys of the same name in
  `parameters`), Conditions (memoised) and `evaluate(node)` for Ref, Fn::Select, Fn::Split, Fn::Join, Fn::Sub (both
  forms), Fn::If, Fn::Equals, Fn::And, Fn::Or, Fn::Not, Condition, Fn::GetAtt, Fn::FindInMap, Fn::Base64 and
  AWS::NoValue (dropped from lists and objects).
- Resources have no physical ids here: `physical` supplies them, a mapping or a callable from `"LogicalId"` (what
  `Ref` returns) or `"LogicalId.Attribute"` (what `Fn::GetAtt` returns). A mapping may give an ARN under the bare
  logical id for `Fn::GetAtt X.Arn`. Ids are asked for only when a value needs them: a branch `Fn::If` does not
  take never asks.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "NO_VALUE",
    "Evaluator",
    "MissingPhysicalIdError",
    "Physical",
    "TemplateError",
    "UnsupportedIntrinsicError",
    "load_template",
]

Physical = Callable[[str], str] | Mapping[str, str]

DEFAULT_PSEUDO_PARAMETERS: Final[Mapping[str, str]] = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "000000000000",  # LocalStack's default account
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "local",
}

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(Exception):
    """The template cannot be evaluated as given (names the parameter, condition or function)."""


class UnsupportedIntrinsicError(TemplateError):
    """An intrinsic function this evaluator does not implement."""


class MissingPhysicalIdError(TemplateError):
    """A value needs a resource's physical id or attribute that `physical` does not supply."""


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = _NoValue()


# libyaml's parser when PyYAML has it: this project's template reads in ~12 ms instead of ~100 ms
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TemplateLoader(_SafeLoader):  # type: ignore[misc,valid-type]  # a base chosen at run time
    """SafeLoader with CloudFormation's short-form tags; dates and times stay strings."""


_TemplateLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _long_form(loader: _TemplateLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # !GetAtt Resource.Attribute
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _long_form)


def load_template(path: str | Path) -> dict[str, Any]:
    loaded = yaml.load(Path(path).read_text(), Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(loaded, dict):
        raise TemplateError(f"{path} is not a template (no top-level mapping)")
    return loaded


def _lookup_physical(physical: Physical | None, key: str) -> str:
    if physical is None:
        raise MissingPhysicalIdError(f"{key} needs a physical id and none were given")
    if callable(physical):
        return physical(key)
    if key in physical:
        return physical[key]
    logical, _, attribute = key.partition(".")
    # a caller that knows only ARNs may list them under the bare logical id
    if attribute == "Arn" and physical.get(logical, "").startswith("arn:"):
        return physical[logical]
    raise MissingPhysicalIdError(f"no physical id given for {key}")


def _text(value: object, where: str) -> str:
    """A scalar as CloudFormation sees it: a string (YAML may have read 1 as int, true as bool)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


class Evaluator:
    """Parameters, Conditions and intrinsic functions of one template for one set of parameter values."""

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str] | None = None,
        *,
        physical: Physical | None = None,
    ) -> None:
        given = dict(parameters or {})
        self.template = template
        self.pseudo = {**DEFAULT_PSEUDO_PARAMETERS, **{k: v for k, v in given.items() if k.startswith("AWS::")}}
        self.pseudo.setdefault(
            "AWS::StackId",
            "arn:{}:cloudformation:{}:{}:stack/{}/local".format(
                *(self.pseudo[key] for key in ("AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName"))
            ),
        )
        self.parameters = self._resolve_parameters({k: v for k, v in given.items() if not k.startswith("AWS::")})
        self._physical = physical
        self._conditions: dict[str, bool] = {}
        self._evaluating: list[str] = []

    # parameters

    def _resolve_parameters(self, given: Mapping[str, str]) -> dict[str, str | list[str]]:
        declared: Mapping[str, Any] = self.template.get("Parameters") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TemplateError(f"parameters not in the template: {', '.join(unknown)}")
        resolved: dict[str, str | list[str]] = {}
        for name, spec in declared.items():
            if name in given:
                raw = given[name]
            elif "Default" in spec:
                default = spec["Default"]
                raw = ",".join(_text(item, name) for item in default) if isinstance(default, list) else default
                raw = _text(raw, f"parameter {name}")
            else:
                raise TemplateError(f"parameter {name} has no default and no value was given")
            allowed = spec.get("AllowedValues")
            if allowed is not None and raw not in [_text(value, name) for value in allowed]:
                raise TemplateError(f"parameter {name}={raw!r} is not one of {allowed}")
            kind = str(spec.get("Type", "String"))
            is_list = kind == "CommaDelimitedList" or kind.startswith("List<")
            resolved[name] = [item.strip() for item in raw.split(",")] if is_list else raw
        return resolved

    # conditions

    def condition(self, name: str) -> bool:
        if name in self._conditions:
            return self._conditions[name]
        conditions: Mapping[str, Any] = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"condition {name} is not in the template")
        if name in self._evaluating:
            raise TemplateError(f"conditions refer to each other in a loop: {' -> '.join([*self._evaluating, name])}")
        self._evaluating.append(name)
        try:
            value = self.evaluate(conditions[name])
        finally:
            self._evaluating.pop()
        if not isinstance(value, bool):
            raise TemplateError(f"condition {name} is not a boolean: {value!r}")
        self._conditions[name] = value
        return value

    def resource_condition(self, logical_id: str) -> bool:
        """Whether CloudFormation would create the resource (its Condition holds, or it has none)."""
        resource = self.resource(logical_id)
        name = resource.get("Condition")
        return True if name is None else self.condition(str(name))

    def resource(self, logical_id: str) -> Mapping[str, Any]:
        resources: Mapping[str, Any] = self.template.get("Resources") or {}
        if logical_id not in resources:
            raise TemplateError(f"resource {logical_id} is not in the template")
        resource: Mapping[str, Any] = resources[logical_id]
        return resource

    # values

    def evaluate(self, node: object) -> Any:  # noqa: ANN401 - any template value
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, argument),) = node.items()
                if key == "Ref":
                    return self.ref(_text(self.evaluate(argument), "Ref"))
                if key == "Condition" and isinstance(argument, str):
                    return self.condition(argument)
                if isinstance(key, str) and key.startswith("Fn::"):
                    return self._function(key, argument)
            evaluated = {key: self.evaluate(value) for key, value in node.items()}
            return {key: value for key, value in evaluated.items() if value is not NO_VALUE}
        if isinstance(node, list):
            return [value for value in (self.evaluate(item) for item in node) if value is not NO_VALUE]
        return node

    def ref(self, name: str) -> Any:  # noqa: ANN401 - a parameter is a string or a list
        if name == "AWS::NoValue":
            return NO_VALUE
        if name == "AWS::NotificationARNs":
            return []
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        resources = self.template.get("Resources") or {}
        if name in resources:
            return _lookup_physical(self._physical, name)
        function, _, suffix = name.partition(".")
        if suffix == "Alias" and function in resources:
            return self._alias(function)
        raise TemplateError(f"Ref {name}: no such parameter, pseudo parameter or resource")

    def _alias(self, function: str) -> str:
        """SAM's `Ref Function.Alias`: the function qualified by its AutoPublishAlias (`name:alias`, which Lambda's
        Invoke takes as a function name)."""
        properties = self.resource(function).get("Properties") or {}
        alias = properties.get("AutoPublishAlias")
        if alias is None:
            alias = ((self.template.get("Globals") or {}).get("Function") or {}).get("AutoPublishAlias")
        if alias is None:
            raise TemplateError(f"Ref {function}.Alias: {function} has no AutoPublishAlias")
        return f"{_lookup_physical(self._physical, function)}:{_text(self.evaluate(alias), 'AutoPublishAlias')}"

    def get_att(self, logical_id: str, attribute: str) -> str:
        self.resource(logical_id)
        return _lookup_physical(self._physical, f"{logical_id}.{attribute}")

    def _function(self, name: str, argument: object) -> Any:  # noqa: ANN401, PLR0911, PLR0912 - one branch per function
        if name == "Fn::If":
            condition, when_true, when_false = self._arguments(name, argument, 3)
            return self.evaluate(when_true if self.condition(_text(condition, name)) else when_false)
        if name == "Fn::Equals":
            left, right = (self.evaluate(value) for value in self._arguments(name, argument, 2))
            if isinstance(left, list) or isinstance(right, list):
                return bool(left == right)
            return _text(left, name) == _text(right, name)
        if name in ("Fn::And", "Fn::Or"):
            if not isinstance(argument, list) or not 2 <= len(argument) <= 10:
                raise TemplateError(f"{name} takes 2 to 10 conditions, got {argument!r}")
            values = (self._boolean(name, item) for item in argument)
            return all(values) if name == "Fn::And" else any(values)
        if name == "Fn::Not":
            (condition,) = self._arguments(name, argument, 1)
            return not self._boolean(name, condition)
        if name == "Fn::Select":
            index, items = (self.evaluate(value) for value in self._arguments(name, argument, 2))
            if not isinstance(items, list):
                raise TemplateError(f"Fn::Select needs a list, got {items!r}")
            position = int(_text(index, name))
            if not 0 <= position < len(items):
                raise TemplateError(f"Fn::Select index {position} is out of range for {items!r}")
            return items[position]
        if name == "Fn::Split":
            delimiter, source = (self.evaluate(value) for value in self._arguments(name, argument, 2))
            return _text(source, name).split(_text(delimiter, name))
        if name == "Fn::Join":
            delimiter, items = (self.evaluate(value) for value in self._arguments(name, argument, 2))
            if not isinstance(items, list):
                raise TemplateError(f"Fn::Join needs a list, got {items!r}")
            return _text(delimiter, name).join(_text(item, name) for item in items)
        if name == "Fn::Sub":
            return self._sub(argument)
        if name == "Fn::GetAtt":
            logical_id, attribute = (self.evaluate(value) for value in self._arguments(name, argument, 2))
            return self.get_att(_text(logical_id, name), _text(attribute, name))
        if name == "Fn::FindInMap":
            map_name, top, second = (_text(self.evaluate(value), name) for value in self._arguments(name, argument, 3))
            try:
                return self.template["Mappings"][map_name][top][second]
            except (KeyError, TypeError) as missing:
                raise TemplateError(f"Fn::FindInMap: no {map_name}/{top}/{second}") from missing
        if name == "Fn::Base64":
            return base64.b64encode(_text(self.evaluate(argument), name).encode()).decode()
        if name == "Fn::ToJsonString":
            return json.dumps(self.evaluate(argument), separators=(",", ":"))
        raise UnsupportedIntrinsicError(f"{name} is not supported by this evaluator")

    def _arguments(self, name: str, argument: object, count: int) -> list[Any]:
        if not isinstance(argument, list) or len(argument) != count:
            raise TemplateError(f"{name} takes a list of {count} values, got {argument!r}")
        return argument

    def _boolean(self, name: str, node: object) -> bool:
        value = self.evaluate(node)
        if not isinstance(value, bool):
            raise TemplateError(f"{name}: expected a condition, got {value!r}")
        return value

    def _sub(self, argument: object) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
            text = _text(self.evaluate(argument[0]), "Fn::Sub")
            variables = {key: self.evaluate(value) for key, value in argument[1].items()}
        else:
            raise TemplateError(f"Fn::Sub takes a string or [string, {{variables}}], got {argument!r}")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} writes ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return _text(variables[name], f"Fn::Sub ${{{name}}}")
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return _text(self.ref(name), f"Fn::Sub ${{{name}}}")

        return _SUB_VARIABLE.sub(replace, text)
