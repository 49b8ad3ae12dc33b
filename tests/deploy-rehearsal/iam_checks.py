"""The sync Lambda's AWS calls, read from its code, and IAM policy evaluation for them.

`operations_in_code` scans a service's sources (sync-lambda/src; for the xDS server,
xds-server/src and the crate's discovery module it runs): every fluent call on an AWS SDK client
(`client.register_instance()`, also through a renamed crate such as `sdk::Client` for
`use aws_sdk_servicediscovery as sdk`), and every hand-signed request (a `const SERVICE` and
`const OPERATION` pair per file, as EC2's DescribeSubnets and DescribeAvailabilityZones are). A new call therefore shows up here without
anyone editing this file; if AWS authorizes it in a way `REQUESTS` does not yet describe, or the
role does not grant it, the rehearsal fails.

`allowed` evaluates identity policies as IAM does for one request (IAM User Guide, "Policy
evaluation logic"): an explicit Deny wins, else any matching Allow; a statement matches when its
Action (case-insensitive, `*` and `?` wildcards), its Resource (case-sensitive wildcards) and
every Condition operator hold. moto's own evaluator (`moto.iam.access_control`) is not used: it
turns a failed condition of an Allow statement into a Deny of the whole request, which would make
two statements scoped to two clusters deny each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SDK crate (aws-sdk-NAME) -> IAM service prefix.
SDK_CRATES = {"servicediscovery": "servicediscovery", "ecs": "ecs", "cloudwatch": "cloudwatch",
              "ec2": "ec2"}
FLUENT_CALL = re.compile(r"\bclient\s*\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")
SDK_CLIENT = re.compile(r"aws_sdk_([a-z0-9]+)::Client\b")
# `use aws_sdk_servicediscovery as sdk;` (or `pub use`): `sdk::Client` is that crate's client.
SDK_ALIAS = re.compile(r"\buse\s+aws_sdk_([a-z0-9]+)\s+as\s+([A-Za-z_][A-Za-z0-9_]*)\s*;")
# Methods every Rust value has, never SDK operations (`client.clone()` hands a client on).
NOT_OPERATIONS = {"clone", "to_owned", "as_ref"}
CONST_STR = re.compile(r'const\s+(SERVICE|OPERATION)\s*:\s*&str\s*=\s*"([^"]+)"')
# Every SDK request ends in .send(): as many sends as calls seen, or a call hides from the scan.
SEND = re.compile(r"\.\s*send\s*\(\s*\)")


def _pascal(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def operations_in_code(src: Path | list[Path], cargo_toml: Path,
                       alias_roots: list[Path] | None = None) -> dict[str, list[str]]:
    """IAM action -> the files that call it, over the `*.rs` files of `src` (one folder or
    several). Renamed SDK crates are read from `alias_roots` (default: `src`). Raises ValueError
    where the scan cannot tell."""
    roots = [src] if isinstance(src, Path) else list(src)
    aliases: dict[str, str] = {}
    for root in alias_roots or roots:
        for path in sorted(root.rglob("*.rs")):
            for crate, alias in SDK_ALIAS.findall(path.read_text()):
                aliases[alias] = crate
    alias_client = (re.compile(r"\b(" + "|".join(map(re.escape, aliases)) + r")::Client\b")
                    if aliases else None)
    found: dict[str, list[str]] = {}
    for path in sorted(p for root in roots for p in root.rglob("*.rs")):
        text = path.read_text()
        root = next(r for r in roots if path.is_relative_to(r))
        name = str(path.relative_to(root.parent))
        calls = [c for c in FLUENT_CALL.findall(text) if c not in NOT_OPERATIONS]
        sends = len(SEND.findall(text))
        if sends != len(calls):
            raise ValueError(f"{name}: {sends} SDK requests (.send()) but {len(calls)} calls of the "
                             f"form client.operation() ({calls}): write the call so the scan sees it")
        if calls:
            crates = set(SDK_CLIENT.findall(text))
            if alias_client is not None:
                crates |= {aliases[a] for a in alias_client.findall(text)}
            if len(crates) != 1:
                raise ValueError(f"{name}: SDK calls {calls} on clients of {sorted(crates) or 'no'} "
                                 "aws_sdk crate; the scan needs exactly one per file")
            crate, = crates
            if crate not in SDK_CRATES:
                raise ValueError(f"{name}: aws_sdk_{crate} has no IAM prefix in SDK_CRATES")
            for call in calls:
                found.setdefault(f"{SDK_CRATES[crate]}:{_pascal(call)}", []).append(name)
        consts = dict(CONST_STR.findall(text))
        if "OPERATION" in consts:
            if "SERVICE" not in consts:
                raise ValueError(f"{name}: const OPERATION without const SERVICE")
            found.setdefault(f"{consts['SERVICE']}:{consts['OPERATION']}", []).append(name)
        elif "aws_sigv4" in text and "const SERVICE" in text:
            raise ValueError(f"{name}: signs requests by hand but names no const OPERATION")
    # Every SDK client the Lambda depends on must have shown its calls.
    depended = set(re.findall(r"^aws-sdk-([a-z0-9]+)(?:\.workspace)?\s*=", cargo_toml.read_text(),
                              re.M))
    if not depended:
        raise ValueError(f"no aws-sdk-* dependency found in {cargo_toml}: the scan is out of date")
    seen = {action.split(":")[0] for action in found}
    unseen = {SDK_CRATES.get(c, c) for c in depended} - seen
    if unseen:
        raise ValueError(f"aws-sdk crates {sorted(unseen)} are dependencies, but no call of theirs "
                         "was found: the scan no longer sees how they are called")
    return found


@dataclass
class Request:
    """One request as IAM authorizes it: action, resource ARN ("*" where the action has no
    resource type) and the condition context."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        context = "".join(f" {k}={v}" for k, v in self.context.items())
        return f"{self.action} on {self.resource}{context}"


def _wildcard(pattern: str, value: str, case_sensitive: bool) -> bool:
    # Only * and ? are wildcards in IAM (fnmatch would also read [..] as classes).
    regex = "(?s:" + "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r")\Z"
    return re.match(regex, value, 0 if case_sensitive else re.I) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, str]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    if key not in context:
        return if_exists
    actual = context[key]
    patterns = [str(v) for v in _as_list(expected)]
    if base in ("StringEquals", "ArnEquals"):
        return actual in patterns
    if base in ("StringLike", "ArnLike"):
        return any(_wildcard(p, actual, True) for p in patterns)
    if base == "StringEqualsIgnoreCase":
        return actual.lower() in [p.lower() for p in patterns]
    if base in ("StringNotEquals", "ArnNotEquals"):
        return actual not in patterns
    if base in ("StringNotLike", "ArnNotLike"):
        return not any(_wildcard(p, actual, True) for p in patterns)
    raise ValueError(f"condition operator {operator} is not evaluated by the rehearsal")


def _statement_matches(statement: dict[str, Any], request: Request) -> bool:
    if "NotAction" in statement:
        if any(_wildcard(a, request.action, False) for a in _as_list(statement["NotAction"])):
            return False
    elif not any(_wildcard(a, request.action, False) for a in _as_list(statement["Action"])):
        return False
    if "NotResource" in statement:
        if any(_wildcard(r, request.resource, True) for r in _as_list(statement["NotResource"])):
            return False
    elif not any(_wildcard(r, request.resource, True)
                 for r in _as_list(statement.get("Resource", []))):
        return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, expected in keys.items():
            if not _condition_holds(operator, key, expected, request.context):
                return False
    return True


def allowed(policies: list[dict[str, Any]], request: Request) -> bool:
    allow = False
    for policy in policies:
        for statement in _as_list(policy.get("Statement", [])):
            if _statement_matches(statement, request):
                if statement["Effect"] == "Deny":
                    return False
                allow = True
    return allow


# Reads by IAM's access levels (List, Read): the verbs AWS names them with. Anything else, and any
# action wildcard that reaches beyond these verbs, counts as a write.
READ_VERBS = ("Get", "List", "Describe", "Discover", "BatchGet", "Search", "Lookup")
# Writes that support no resource-level permission (Service Authorization Reference): "*" is the
# narrowest grant there is.
WRITES_WITHOUT_RESOURCE_TYPES = {
    "route53:CreateHealthCheck": "Route 53 CreateHealthCheck has no resource type",
}


def is_write(action: str) -> bool:
    _, _, name = action.partition(":")
    if "*" in name or "?" in name:
        prefix = re.split(r"[*?]", name, maxsplit=1)[0]
        return not any(prefix.startswith(v) and prefix != "" for v in READ_VERBS)
    return not name.startswith(READ_VERBS)


def writes_on_everything(policies: list[dict[str, Any]]) -> list[str]:
    """Allowed write actions whose Resource is "*" (or NotAction / NotResource, which grant more
    than they name), except the writes AWS cannot scope."""
    problems = []
    for policy in policies:
        for statement in _as_list(policy.get("Statement", [])):
            if statement.get("Effect") != "Allow":
                continue
            if "NotAction" in statement or "NotResource" in statement:
                problems.append(f"{statement.get('Sid', '?')}: NotAction/NotResource in an Allow")
                continue
            if "*" not in _as_list(statement.get("Resource", [])):
                continue
            for action in _as_list(statement["Action"]):
                if is_write(action) and action not in WRITES_WITHOUT_RESOURCE_TYPES:
                    problems.append(f"{statement.get('Sid', '?')}: {action} on *")
    return problems
