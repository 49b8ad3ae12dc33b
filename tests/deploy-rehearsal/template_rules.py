"""What CloudFormation checks before it creates anything, and cfn-lint does not.

- Which intrinsic functions each section may hold. CloudFormation refuses a template at
  validation when `Rules` holds anything but rule functions and `Ref` (cfn-lint 1.5x passes
  `Fn::Join` there: cloudformation-coverage-roadmap#921, cfn-lint#3710), when `Conditions` holds
  anything but condition functions and, inside `Fn::Equals`, the value functions CloudFormation
  resolves there, and when a parameter's `Default` is not a literal.
- Parameter values against their constraints (`AllowedPattern` on each entry of a
  CommaDelimitedList, `AllowedValues`, `MinValue`/`MaxValue`), then the `Rules` with their
  functions' documented semantics. moto's CloudFormation checks neither, so the rehearsal does it
  here, on the values it then deploys.

Sources: AWS CloudFormation Template Reference, "Rule functions" (the ten `Fn::` functions below),
"Condition functions", "Parameters" (AllowedPattern applies to each value of a
CommaDelimitedList); cfn-lint's `functions/equals.json` for what `Fn::Equals` may hold.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

RULE_FUNCTIONS = {
    "Fn::And", "Fn::Contains", "Fn::EachMemberEquals", "Fn::EachMemberIn", "Fn::Equals",
    "Fn::Not", "Fn::Or", "Fn::RefAll", "Fn::ValueOf", "Fn::ValueOfAll", "Ref",
}
CONDITION_FUNCTIONS = {"Fn::And", "Fn::Equals", "Fn::Not", "Fn::Or", "Condition"}
# What `Fn::Equals` may compare inside `Conditions`: values known before any resource exists.
CONDITION_VALUE_FUNCTIONS = {
    "Ref", "Fn::FindInMap", "Fn::Sub", "Fn::Join", "Fn::Select", "Fn::Split", "Fn::Length",
    "Fn::ToJsonString",
}


class TemplateError(Exception):
    """A template CloudFormation would refuse, or parameters it would refuse."""


# ------------------------------------------------------------------------------------------------
# Loading: CloudFormation's YAML short forms (!Ref, !GetAtt a.b, ...) become their long forms.
# ------------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    pass


def _construct_tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


# ------------------------------------------------------------------------------------------------
# Functions per section
# ------------------------------------------------------------------------------------------------
def _functions_in(value: Any, path: str):
    """Yields (path, function name, argument) for every intrinsic function in `value`."""
    if isinstance(value, dict):
        if len(value) == 1:
            (key, argument), = value.items()
            if key == "Ref" or key == "Condition" or key.startswith("Fn::"):
                yield path, key, argument
                yield from _functions_in(argument, f"{path}/{key}")
                return
        for key, child in value.items():
            yield from _functions_in(child, f"{path}/{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _functions_in(child, f"{path}/{index}")


def section_function_errors(template: dict[str, Any]) -> list[str]:
    """Every function used where CloudFormation does not allow it, as readable lines."""
    errors = []
    for name, rule in (template.get("Rules") or {}).items():
        for path, function, _ in _functions_in(rule, f"Rules/{name}"):
            if function not in RULE_FUNCTIONS:
                errors.append(f"{path}: {function} is not a rule function (allowed: "
                              f"{', '.join(sorted(RULE_FUNCTIONS))})")
    for name, condition in (template.get("Conditions") or {}).items():
        errors.extend(_condition_errors(condition, f"Conditions/{name}"))
    for name, parameter in (template.get("Parameters") or {}).items():
        if "Default" in parameter:
            for path, function, _ in _functions_in(parameter["Default"], f"Parameters/{name}/Default"):
                errors.append(f"{path}: {function} in a parameter default (only literals)")
    return errors


def _condition_errors(value: Any, path: str) -> list[str]:
    if not (isinstance(value, dict) and len(value) == 1):
        return [f"{path}: a condition must be one condition function, not {value!r}"]
    (function, argument), = value.items()
    if function not in CONDITION_FUNCTIONS:
        return [f"{path}: {function} is not a condition function"]
    if function == "Condition":
        return []
    if function == "Fn::Equals":
        errors = []
        for inner_path, inner, _ in _functions_in(argument, f"{path}/Fn::Equals"):
            if inner not in CONDITION_VALUE_FUNCTIONS:
                errors.append(f"{inner_path}: {inner} cannot be compared in Conditions")
        return errors
    errors = []
    for index, child in enumerate(argument if isinstance(argument, list) else [argument]):
        errors.extend(_condition_errors(child, f"{path}/{function}/{index}"))
    return errors


# ------------------------------------------------------------------------------------------------
# Parameter constraints and Rules
# ------------------------------------------------------------------------------------------------
def resolve_parameters(template: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    """The parameter values CloudFormation would use: given values over defaults, checked against
    their constraints. Lists become Python lists (an empty list parameter is [""])."""
    declared = template.get("Parameters") or {}
    unknown = set(given) - set(declared)
    if unknown:
        raise TemplateError(f"parameters not in the template: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            raw = given[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no value and no default")
        raw = str(raw)
        kind = spec.get("Type", "String")
        entries = raw.split(",") if kind == "CommaDelimitedList" else [raw]
        what = spec.get("ConstraintDescription")
        if "AllowedPattern" in spec:
            for entry in entries:
                # CloudFormation matches the whole value (each entry of a list).
                if re.fullmatch(spec["AllowedPattern"], entry) is None:
                    raise TemplateError(
                        f"parameter {name}: {entry!r} does not match AllowedPattern"
                        + (f" ({what})" if what else ""))
        if "AllowedValues" in spec:
            allowed = [str(v) for v in spec["AllowedValues"]]
            for entry in entries:
                if entry not in allowed:
                    raise TemplateError(f"parameter {name}: {entry!r} is not one of {allowed}")
        if kind == "Number":
            try:
                number = float(raw)
            except ValueError as error:
                raise TemplateError(f"parameter {name}: {raw!r} is not a number") from error
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise TemplateError(f"parameter {name}: {raw} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise TemplateError(f"parameter {name}: {raw} is above MaxValue {spec['MaxValue']}")
        values[name] = entries if kind == "CommaDelimitedList" else raw
    return values


def check_rules(template: dict[str, Any], values: dict[str, Any]) -> None:
    """Raises TemplateError with the first failing assertion's description, as CloudFormation
    refuses the stack operation."""
    for name, rule in (template.get("Rules") or {}).items():
        if "RuleCondition" in rule and not _rule_value(rule["RuleCondition"], values):
            continue
        for assertion in rule.get("Assertions", []):
            if not _rule_value(assertion["Assert"], values):
                raise TemplateError(
                    f"rule {name}: {assertion.get('AssertDescription', 'assertion failed')}")


def _rule_value(expression: Any, values: dict[str, Any]) -> Any:
    if isinstance(expression, (str, bool, int, float)):
        return expression
    if isinstance(expression, list):
        return [_rule_value(item, values) for item in expression]
    if not (isinstance(expression, dict) and len(expression) == 1):
        raise TemplateError(f"not a rule expression: {expression!r}")
    (function, argument), = expression.items()
    if function == "Ref":
        if argument not in values:
            raise TemplateError(f"Rules can only Ref parameters, not {argument}")
        return values[argument]
    args = [_rule_value(a, values) for a in argument] if isinstance(argument, list) else None
    if function == "Fn::Equals":
        return _as_text(args[0]) == _as_text(args[1])
    if function == "Fn::Not":
        return not _truth(args[0])
    if function == "Fn::And":
        return all(_truth(a) for a in args)
    if function == "Fn::Or":
        return any(_truth(a) for a in args)
    if function == "Fn::Contains":
        return _as_text(args[1]) in [_as_text(v) for v in _as_list(args[0])]
    if function == "Fn::EachMemberEquals":
        return all(_as_text(v) == _as_text(args[1]) for v in _as_list(args[0]))
    if function == "Fn::EachMemberIn":
        allowed = [_as_text(v) for v in _as_list(args[1])]
        return all(_as_text(v) in allowed for v in _as_list(args[0]))
    # Fn::RefAll, Fn::ValueOf and Fn::ValueOfAll read AWS-specific parameter types, which this
    # template does not use: refuse rather than guess.
    raise TemplateError(f"{function} is not evaluated by the rehearsal")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _as_text(value: Any) -> Any:
    """What Fn::Equals compares: a list as CloudFormation joins it, a boolean as "true"."""
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return value


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TemplateError(f"a rule function needs a condition here, not {value!r}")
