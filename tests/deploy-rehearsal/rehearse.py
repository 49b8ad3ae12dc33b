"""Deploy rehearsal of template.yaml, offline: what `sam deploy` would meet, short of AWS itself.

For the template, and then for mutated copies of it that must fail:

1. the functions each section may hold (Rules, Conditions, parameter defaults), before and after
   the SAM transform (template_rules.py);
2. the ARN list parameters' patterns: empty and real ARNs pass, bare names and IDs do not;
3. parameter constraints and Rules for three parameter sets: the defaults (refused by the Rules,
   as CloudFormation refuses them: the function must manage something), the demo set (the xDS
   server off) and a production set (demo off, two clusters, two services in a private DNS
   namespace, an alarm topic, the xDS server on in that namespace's VPC);
4. the SAM transform with aws-sam-translator (what CloudFormation runs for `sam deploy`), and
   cfn-lint on the translated template;
5. a deploy of each set into moto's CloudFormation, then reading back what was deployed:
   - the EventBridge rule's pattern, matched by moto's EventBridge matcher against
     the ECS events in sync-lambda/tests/fixtures: every Task State Change of a configured
     cluster matches; other clusters, look-alike ARNs, other ECS event types and non-ECS events
     do not;
   - the function role's policies against every AWS operation the Lambda's code calls
     (iam_checks.py reads them from sync-lambda/src), the Route 53 actions Cloud Map needs in DNS
     namespaces, and the service's own writes (logs, the on-failure queue); no role of the stack
     grants a write on "*";
   - the queues (14 days), their policies (exactly their rule), the alarms and their actions,
     the async invoke settings and the outputs;
   - the xDS server, when on: its ECS service (Fargate, the subnets, registered in Cloud Map as
     "xds" in the namespace with A records), its task definition, its security group (18000 from
     the client CIDR only), its log group, and its task role against the AWS operations of its
     code (xds-server/src and client-sdk/src/discovery, which it runs): those and nothing else.
     When off, none of its resources exist.

Mutated copies of the code prove the operation scan: a new SDK call the role does not grant fails.

A new resource goes through the same checks without changes here: every resource of the
translated template must be created, every role of the stack must grant no write on "*", every
queue must keep 14 days and have an alarm. The xDS server's role gets its call list as the
Lambda's does: `iam_checks.operations_in_code` over its sources, `REQUESTS` for how AWS
authorizes each call.

Usage: rehearse.py [--template PATH] [--no-mutations]
Prints one line per check and ends with "rehearsal: N passed, N failed"; exits non-zero on any
failure.
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

# Region and account of the ECS events the tests carry; moto's default account is the same.
REGION = "eu-central-1"
ACCOUNT = "123456789012"
# The owner of a Cloud Map namespace shared with ACCOUNT through AWS RAM.
SHARING_ACCOUNT = "111122223333"
os.environ.update({"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "rehearsal",
                   "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_EC2_METADATA_DISABLED": "true"})

import boto3  # noqa: E402
import requests  # noqa: E402
from moto.events.models import EventPattern  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402

# The translator's usage metrics go nowhere here; its reminder to publish them is noise.
logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)

import iam_checks  # noqa: E402
import moto_stack  # noqa: E402
from iam_checks import Request  # noqa: E402
from template_rules import (TemplateError, check_rules, load_template,  # noqa: E402
                            resolve_parameters, section_function_errors)

FIXTURES = ROOT / "sync-lambda" / "tests" / "fixtures"
CODE_BUCKET, CODE_KEY = "rehearsal-artifacts", "sync-lambda.zip"
FOURTEEN_DAYS = "1209600"
CLUSTER = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/"


class Failure(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------
@dataclass
class Report:
    fail_fast: bool = False
    indent: str = ""
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def check(self, name: str, body: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            result = body()
        except (Failure, TemplateError, ValueError) as error:
            self._fail(name, str(error))
            return None
        except Exception:  # noqa: BLE001 - an unexpected error is a failed check, shown whole
            self._fail(name, traceback.format_exc())
            return None
        self.passed += 1
        print(f"{self.indent}ok    {name} ({time.monotonic() - started:.1f} s)", flush=True)
        return result

    def _fail(self, name: str, why: str) -> None:
        self.failed.append(name)
        print(f"{self.indent}FAIL  {name}\n{self.indent}      "
              + why.strip().replace("\n", f"\n{self.indent}      "), flush=True)
        if self.fail_fast:
            raise StopRun(name)


class StopRun(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# AWS (moto) clients
# ------------------------------------------------------------------------------------------------
class Aws:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(service, endpoint_url=self.endpoint,
                                                  region_name=REGION)
        return self._clients[service]

    def __getattr__(self, service: str) -> Any:
        """aws.ecs, aws.sqs, ...: one client per service (`lambda` is a keyword: client())."""
        if service.startswith("_"):
            raise AttributeError(service)
        return self.client(service)

    def reset(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=30).raise_for_status()


# ------------------------------------------------------------------------------------------------
# Parameter sets
# ------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """What a deployed set manages, known independently of the template."""

    clusters: list[str]
    services: list[str]
    # service ARN -> hosted zone ID, for the services in DNS namespaces
    dns_zones: dict[str, str]
    alarm_topic: str | None
    # Where the xDS server was asked to run (XdsServer=on), else None.
    xds: XdsTarget | None = None


@dataclass
class XdsTarget:
    cluster: str
    vpc: str
    subnets: list[str]
    namespace_id: str
    namespace_name: str
    client_cidr: str
    image: str
    architecture: str


def demo_set(aws: Aws) -> tuple[dict[str, str], Callable[[dict[str, str]], Target]]:
    params = {
        "DeployDemo": "true",
        "DemoServerImage": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/demo-server:rehearsal",
        "DemoClientImage": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/demo-client:rehearsal",
    }

    def target(outputs: dict[str, str]) -> Target:
        return Target([outputs["DemoClusterArn"]], [outputs["DemoDiscoveryServiceArn"]], {}, None,
                      xds=None)

    return params, target


def production_set(aws: Aws) -> tuple[dict[str, str], Callable[[dict[str, str]], Target]]:
    """Demo off; the clusters of the ECS fixtures (prod, legacy); two services in a private DNS
    namespace, as ECS service discovery creates them, and one in a namespace another account
    shares; an SNS topic for the alarms; the xDS server
    on, in the prod cluster, in two subnets (two zones) of the namespace's VPC."""
    clusters = [aws.ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
                for name in ("prod", "legacy")]
    vpc = aws.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [aws.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24",
                                     AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
               for i, zone in ((1, "a"), (2, "b"))]
    aws.servicediscovery.create_private_dns_namespace(Name="internal.example", Vpc=vpc)
    namespace = next(n for n in aws.servicediscovery.list_namespaces()["Namespaces"]
                     if n["Name"] == "internal.example")
    zone = aws.servicediscovery.get_namespace(Id=namespace["Id"])["Namespace"]["Properties"][
        "DnsProperties"]["HostedZoneId"]
    # AWS answers the bare ID; moto prefixes Route 53's "/hostedzone/".
    zone = zone.rsplit("/", 1)[-1]
    services = []
    for name in ("orders", "payments"):
        services.append(aws.servicediscovery.create_service(
            Name=name, NamespaceId=namespace["Id"],
            DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 10}], "RoutingPolicy": "MULTIVALUE"},
            HealthCheckCustomConfig={"FailureThreshold": 1})["Service"]["Arn"])
    # A service of a namespace another account shares through AWS RAM: it lives in the owner's
    # account, and the Lambda names it by that ARN (an HTTP namespace: no hosted zone).
    shared = f"arn:aws:servicediscovery:{REGION}:{SHARING_ACCOUNT}:service/srv-sharedbyowner001"
    services.append(shared)
    topic = aws.sns.create_topic(Name="cloudmap-sync-alarms")["TopicArn"]
    xds = XdsTarget(cluster=clusters[0], vpc=vpc, subnets=subnets, namespace_id=namespace["Id"],
                    namespace_name="internal.example", client_cidr="10.0.0.0/16",
                    image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cloudmap-xds:rehearsal",
                    architecture="ARM64")
    params = {
        "DeployDemo": "false",
        "ClusterArns": ",".join(clusters),
        "CloudMapServiceArns": ",".join(services),
        "DnsHostedZoneArns": f"arn:aws:route53:::hostedzone/{zone}",
        "AlarmTopicArn": topic,
        "XdsServer": "on",
        "XdsServerImage": xds.image,
        "XdsClusterArn": xds.cluster,
        "XdsVpcId": vpc,
        "XdsSubnetIds": ",".join(subnets),
        "XdsNamespaceId": xds.namespace_id,
        "XdsClientCidr": xds.client_cidr,
    }
    return params, lambda outputs: Target(clusters, services,
                                          {s: zone for s in services if s != shared}, topic,
                                          xds=xds)


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------
def sam_translate(template: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """What CloudFormation's AWS::Serverless transform makes of the template for these values.
    The local CodeUri becomes an S3 location, as `sam deploy` uploads it."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"

    class NoManagedPolicies:  # the template names no SAM policy templates or managed policies
        def load(self) -> dict[str, str]:
            return {}

    return transform(template, dict(params), NoManagedPolicies())


def cfn_lint(translated: dict[str, Any]) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rehearsal-translated-{os.getpid()}.json"
    path.write_text(json.dumps(translated))
    try:
        # W2001 "parameter not used": the transform resolves AsyncRetryAttempts and
        # AsyncMaxEventAgeSeconds into EventInvokeConfig with the stack's values, as it does on
        # every create and update.
        result = subprocess.run(
            [str(Path(sys.executable).parent / "cfn-lint"), "--regions", REGION,
             "--ignore-checks", "W2001", "--", str(path)],
            capture_output=True, text=True, check=False)
    finally:
        path.unlink(missing_ok=True)
    expect(result.returncode == 0, f"cfn-lint on the translated template:\n{result.stdout}"
           f"{result.stderr}")


def upload_code(aws: Aws) -> None:
    aws.s3.create_bucket(Bucket=CODE_BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": REGION})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bootstrap", "the rehearsal never invokes the function\n")
    aws.s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=archive.getvalue())


def deploy(aws: Aws, name: str, translated: dict[str, Any], params: dict[str, str]) -> dict:
    upload_code(aws)
    aws.cloudformation.create_stack(
        StackName=name, TemplateBody=json.dumps(translated),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
    stack = aws.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    expect(stack["StackStatus"] == "CREATE_COMPLETE",
           f"{name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    resources = aws.cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    by_id = {r["LogicalResourceId"]: r for r in resources}
    # Every resource whose condition holds was created (moto skips types it lacks silently).
    missing = [logical for logical in translated["Resources"] if logical not in by_id
               and _condition_holds(translated, translated["Resources"][logical], params)]
    expect(not missing, f"not created: {missing}")
    return {"stack": stack, "resources": by_id,
            "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}}


def _condition_holds(translated: dict[str, Any], resource: dict[str, Any],
                     params: dict[str, str]) -> bool:
    if "Condition" not in resource:
        return True
    values = resolve_parameters(translated, params)
    return _eval_condition(translated["Conditions"][resource["Condition"]], translated, values)


def _eval_condition(expr: Any, template: dict[str, Any], values: dict[str, Any]) -> Any:
    if isinstance(expr, (str, int, float)):
        return str(expr)
    if isinstance(expr, list):
        return [_eval_condition(e, template, values) for e in expr]
    (fn, arg), = expr.items()
    if fn == "Ref":
        return values[arg]
    if fn == "Condition":
        return _eval_condition(template["Conditions"][arg], template, values)
    a = [_eval_condition(x, template, values) for x in arg] if isinstance(arg, list) else arg
    if fn == "Fn::Equals":
        return a[0] == a[1]
    if fn == "Fn::Not":
        return not a[0]
    if fn == "Fn::And":
        return all(a)
    if fn == "Fn::Or":
        return any(a)
    if fn == "Fn::Join":
        return a[0].join(a[1])
    raise Failure(f"the rehearsal does not evaluate {fn} in Conditions")


# ------------------------------------------------------------------------------------------------
# Read-back checks
# ------------------------------------------------------------------------------------------------
def _resources_of(deployed: dict, kind: str) -> list[dict]:
    return [r for r in deployed["resources"].values() if r["ResourceType"] == kind]


def _fixtures() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}


def check_event_pattern(aws: Aws, deployed: dict, target: Target) -> str:
    rules = [aws.events.describe_rule(Name=r["PhysicalResourceId"])
             for r in _resources_of(deployed, "AWS::Events::Rule")]
    patterned = [r for r in rules if r.get("EventPattern")]
    expect(len(patterned) == 1, f"expected one rule with an event pattern, found {len(patterned)}")
    rule = patterned[0]
    pattern = rule["EventPattern"]

    # moto 5.2.5 answers TestEventPattern with nothing (its backend raises NotImplementedError),
    # so the read-back pattern goes to the matcher moto's EventBridge routes PutEvents with.
    matcher = EventPattern.load(pattern)

    def matches(event: dict) -> bool:
        return matcher.matches_event(event)

    fixtures = _fixtures()
    task_changes = {n: e for n, e in fixtures.items()
                    if e["source"] == "aws.ecs" and e["detail-type"] == "ECS Task State Change"}
    expect(len(task_changes) >= 5, f"too few Task State Change fixtures: {sorted(task_changes)}")
    problems = []

    def with_cluster(event: dict, cluster: str) -> dict:
        event = copy.deepcopy(event)
        event["detail"]["clusterArn"] = cluster
        return event

    positives = 0
    for cluster in target.clusters:
        for name, event in task_changes.items():
            positives += 1
            if not matches(with_cluster(event, cluster)):
                problems.append(f"{name} of configured cluster {cluster} does not match")
    # Events of the clusters the fixtures name, as they are, when those clusters are configured.
    for name, event in task_changes.items():
        configured = event["detail"]["clusterArn"] in target.clusters
        if matches(event) != configured:
            problems.append(f"{name} as recorded ({event['detail']['clusterArn']}) "
                            f"{'does not match' if configured else 'matches'}")
    negatives = 0
    for cluster in target.clusters:
        name_only = cluster.rsplit("/", 1)[-1]
        look_alikes = [
            CLUSTER + "staging",
            cluster + "-2", cluster + "/", cluster[:-1], cluster.upper(), name_only,
            cluster.replace(f":{ACCOUNT}:", ":210987654321:"),
            cluster.replace(f":{REGION}:", ":us-east-1:"),
            cluster.replace(":cluster/", ":service/"),
        ]
        for other in look_alikes:
            for name, event in task_changes.items():
                negatives += 1
                if matches(with_cluster(event, other)):
                    problems.append(f"{name} of {other} matches (configured: {cluster})")
        for name, event in fixtures.items():
            if name in task_changes:
                continue
            negatives += 1
            if matches(with_cluster(event, cluster) if "detail" in event else event):
                problems.append(f"{name} ({event['source']} / {event['detail-type']}) matches")
        base = next(iter(task_changes.values()))
        for detail_type in ("ECS Container Instance State Change", "ECS Deployment State Change",
                            "ECS Service Action", "ECS Task State Changes"):
            negatives += 1
            event = with_cluster(base, cluster)
            event["detail-type"] = detail_type
            if matches(event):
                problems.append(f"a {detail_type!r} event of {cluster} matches")
        for source in ("aws.ec2", "custom.ecs", "aws.events"):
            negatives += 1
            event = with_cluster(base, cluster)
            event["source"] = source
            if matches(event):
                problems.append(f"a Task State Change from source {source} matches")
    expect(not problems, "\n".join(problems))
    # The rule targets the function, with the retry policy and its own dead-letter queue.
    targets = aws.events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    function_arn = deployed["outputs"]["SyncFunctionArn"]
    expect([t["Arn"] for t in targets] == [function_arn], f"targets: {targets}")
    return f"{positives} matching, {negatives} not"


def _queue_arn(aws: Aws, url: str) -> str:
    return aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]


def check_queues(aws: Aws, deployed: dict) -> str:
    queues = [r["PhysicalResourceId"] for r in _resources_of(deployed, "AWS::SQS::Queue")]
    expect(len(queues) >= 3, f"queues: {queues}")
    problems = []
    for url in queues:
        attributes = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"]
        if attributes.get("MessageRetentionPeriod") != FOURTEEN_DAYS:
            problems.append(f"{url} keeps messages {attributes.get('MessageRetentionPeriod')} s")
    # Each rule's dead-letter queue admits exactly that rule, and nothing else.
    dead_letter_queues = set()
    for rule in _resources_of(deployed, "AWS::Events::Rule"):
        name = rule["PhysicalResourceId"]
        rule_arn = aws.events.describe_rule(Name=name)["Arn"]
        for target in aws.events.list_targets_by_rule(Rule=name)["Targets"]:
            queue_arn = target.get("DeadLetterConfig", {}).get("Arn")
            if not queue_arn:
                problems.append(f"rule {name}: target {target['Id']} has no dead-letter queue")
                continue
            url = next((u for u in queues if _queue_arn(aws, u) == queue_arn), None)
            if url is None:
                problems.append(f"rule {name}: dead-letter queue {queue_arn} is not the stack's")
                continue
            dead_letter_queues.add(url)
            policy = json.loads(aws.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["Policy"])["Attributes"].get("Policy", "{}"))
            send = Request("sqs:SendMessage", queue_arn, {"aws:SourceArn": rule_arn,
                                                          "aws:PrincipalService": "events"})
            statements = policy.get("Statement", [])
            if not (len(statements) == 1
                    and statements[0].get("Principal") == {"Service": "events.amazonaws.com"}
                    and iam_checks.allowed([policy], send)):
                problems.append(f"{url}: the policy does not admit exactly rule {rule_arn}: "
                                f"{json.dumps(policy)}")
            for other in [arn for arn in _rule_arns(aws, deployed) if arn != rule_arn] + [
                    rule_arn + "-other"]:
                if iam_checks.allowed([policy], Request("sqs:SendMessage", queue_arn,
                                                        {"aws:SourceArn": other})):
                    problems.append(f"{url}: the policy admits {other} too")
    expect(not problems, "\n".join(problems))
    return f"{len(queues)} queues, {len(dead_letter_queues)} with rule policies"


def _rule_arns(aws: Aws, deployed: dict) -> list[str]:
    return [aws.events.describe_rule(Name=r["PhysicalResourceId"])["Arn"]
            for r in _resources_of(deployed, "AWS::Events::Rule")]


def check_alarms(aws: Aws, deployed: dict, target: Target) -> str:
    alarms = aws.cloudwatch.describe_alarms()["MetricAlarms"]
    names = {r["PhysicalResourceId"] for r in _resources_of(deployed, "AWS::CloudWatch::Alarm")}
    alarms = [a for a in alarms if a["AlarmName"] in names]
    expected_actions = [target.alarm_topic] if target.alarm_topic else []
    problems = []

    def find(namespace: str, metric: str, dimension: str, value: str) -> dict | None:
        for alarm in alarms:
            if (alarm.get("Namespace"), alarm.get("MetricName")) == (namespace, metric) and \
                    {"Name": dimension, "Value": value} in alarm.get("Dimensions", []):
                return alarm
        problems.append(f"no alarm on {namespace} {metric} of {value}")
        return None

    watched = []
    for queue in _resources_of(deployed, "AWS::SQS::Queue"):
        name = queue["PhysicalResourceId"].rsplit("/", 1)[-1]
        watched.append(find("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", name))
    function_name = deployed["resources"]["SyncFunction"]["PhysicalResourceId"]
    for metric in ("Errors", "Throttles"):
        watched.append(find("AWS/Lambda", metric, "FunctionName", function_name))
    for alarm in filter(None, watched):
        if alarm["ComparisonOperator"] != "GreaterThanOrEqualToThreshold" or \
                alarm["Threshold"] != 1.0:
            problems.append(f"{alarm['AlarmName']}: fires at {alarm['ComparisonOperator']} "
                            f"{alarm['Threshold']}, not at the first message or error")
        for kind in ("AlarmActions", "OKActions"):
            if alarm.get(kind, []) != expected_actions:
                problems.append(f"{alarm['AlarmName']}: {kind} {alarm.get(kind)}, "
                                f"expected {expected_actions}")
    expect(not problems, "\n".join(problems))
    return f"{len(watched)} alarms, actions {expected_actions or 'none'}"


def check_async_settings(aws: Aws, deployed: dict, values: dict[str, Any]) -> None:
    function = deployed["resources"]["SyncFunction"]["PhysicalResourceId"]
    config = aws.client("lambda").get_function_event_invoke_config(FunctionName=function)
    queue_url = deployed["outputs"]["FailedInvocationsQueueUrl"]
    destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    expect(destination == _queue_arn(aws, queue_url),
           f"on-failure destination {destination}, expected the failed-invocations queue")
    expect(str(config.get("MaximumRetryAttempts")) == str(values["AsyncRetryAttempts"]),
           f"MaximumRetryAttempts {config.get('MaximumRetryAttempts')}")
    # The outputs name the stack's queues.
    urls = {r["PhysicalResourceId"] for r in _resources_of(deployed, "AWS::SQS::Queue")}
    for output in ("FailedInvocationsQueueUrl", "TaskStateChangeDeadLetterQueueUrl",
                   "ReconcileDeadLetterQueueUrl"):
        expect(deployed["outputs"].get(output) in urls,
               f"output {output} = {deployed['outputs'].get(output)} is not a queue of the stack")


# The xDS server's own sources, and the crate's discovery module whose Cloud Map source it runs
# (its SDK dependency is the crate's; `sdk` is the crate's name for aws_sdk_servicediscovery).
XDS_SOURCES = [ROOT / "xds-server" / "src", ROOT / "client-sdk" / "src" / "discovery"]


def xds_operations() -> dict[str, list[str]]:
    return iam_checks.operations_in_code(XDS_SOURCES, ROOT / "client-sdk" / "Cargo.toml",
                                         alias_roots=[ROOT / "client-sdk" / "src"])


def check_xds_server(aws: Aws, deployed: dict, target: Target,
                     operations: dict[str, list[str]]) -> str:
    xds = target.xds
    if xds is None:
        present = sorted(r for r in deployed["resources"] if r.startswith("Xds"))
        outputs = sorted(o for o in deployed["outputs"] if o.startswith("Xds"))
        expect(not present and not outputs,
               f"XdsServer=off, yet created: {present}, outputs: {outputs}")
        return "off: no xDS server resources"
    outputs = deployed["outputs"]
    problems: list[str] = []

    def same(what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            problems.append(f"{what}: {actual!r}, expected {expected!r}")

    services = aws.ecs.describe_services(cluster=xds.cluster,
                                         services=[outputs["XdsServerServiceArn"]])["services"]
    expect(len(services) == 1, f"the xDS ECS service is not in {xds.cluster}: {services}")
    service = services[0]
    same("launch type", service.get("launchType"), "FARGATE")
    same("desired count", service.get("desiredCount"), 2)
    network = service.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
    same("subnets", sorted(network.get("subnets", [])), sorted(xds.subnets))
    same("public IP", network.get("assignPublicIp"), "DISABLED")
    groups = network.get("securityGroups", [])
    same("security groups", len(groups), 1)
    # Registered in Cloud Map as "xds" in the given namespace, with A records (DNS for clients).
    registry = outputs["XdsDiscoveryServiceArn"]
    same("service registries", [r.get("registryArn") for r in service.get("serviceRegistries", [])],
         [registry])
    discovery = aws.servicediscovery.get_service(Id=registry.rsplit("/", 1)[-1])["Service"]
    same("Cloud Map service name", discovery["Name"], "xds")
    same("Cloud Map namespace", discovery.get("NamespaceId"), xds.namespace_id)
    same("DNS records", discovery.get("DnsConfig", {}).get("DnsRecords"), [{"Type": "A", "TTL": 10}])
    # Reachable on 18000 from the client CIDR, and from nowhere else.
    for group in aws.ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]:
        same("security group VPC", group["VpcId"], xds.vpc)
        ingress = [(p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"),
                    sorted(r["CidrIp"] for r in p.get("IpRanges", [])),
                    p.get("Ipv6Ranges", []), p.get("UserIdGroupPairs", []),
                    p.get("PrefixListIds", []))
                   for p in group["IpPermissions"]]
        same("ingress", ingress, [("tcp", 18000, 18000, [xds.client_cidr], [], [], [])])
    definition = aws.ecs.describe_task_definition(
        taskDefinition=service["taskDefinition"])["taskDefinition"]
    same("compatibilities", definition.get("requiresCompatibilities"), ["FARGATE"])
    same("network mode", definition.get("networkMode"), "awsvpc")
    same("CPU, memory", (definition.get("cpu"), definition.get("memory")), ("256", "512"))
    same("architecture", definition.get("runtimePlatform", {}).get("cpuArchitecture"),
         xds.architecture)
    containers = definition["containerDefinitions"]
    same("containers", [c["name"] for c in containers], ["cloudmap-xds"])
    container = containers[0]
    same("image", container.get("image"), xds.image)
    same("ports", [(p.get("containerPort"), p.get("protocol")) for p in
                   container.get("portMappings", [])], [(18000, "tcp")])
    environment = {e["name"]: e["value"] for e in container.get("environment", [])}
    same("CLOUDMAP_XDS_LISTEN", environment.get("CLOUDMAP_XDS_LISTEN"), "0.0.0.0:18000")
    same("AWS_REGION", environment.get("AWS_REGION"), REGION)
    log_group = deployed["resources"]["XdsLogGroup"]["PhysicalResourceId"]
    same("log group", container.get("logConfiguration", {}).get("options", {}).get(
        "awslogs-group"), log_group)
    retention = next((g.get("retentionInDays") for g in aws.logs.describe_log_groups(
        logGroupNamePrefix=log_group)["logGroups"] if g["logGroupName"] == log_group), None)
    if retention is None:
        problems.append(f"log group {log_group} keeps logs forever")

    # The task role: every operation of the server's code, for any service in any namespace
    # (clients name them), and nothing else at all.
    task_policies = _role_policies(aws, definition["taskRoleArn"].rsplit("/", 1)[-1])
    granted = 0
    for action in sorted(operations):
        if action not in REQUESTS:
            problems.append(f"{action} (called in {', '.join(operations[action])}): the rehearsal "
                            "does not know how AWS authorizes it; add it to REQUESTS")
            continue
        for name in ("orders." + xds.namespace_name, "anything.another-namespace"):
            granted += 1
            if not iam_checks.allowed(task_policies, REQUESTS[action](name)):
                problems.append(f"task role: not granted: {REQUESTS[action](name)}")
    called = {a.lower() for a in operations}
    for policy in task_policies:
        for statement in iam_checks._as_list(policy.get("Statement", [])):
            if statement.get("Effect") != "Allow":
                continue
            if "NotAction" in statement:
                problems.append("task role: NotAction in an Allow")
            for action in iam_checks._as_list(statement.get("Action", [])):
                if action.lower() not in called:
                    problems.append(f"task role grants {action}, which the server's code never "
                                    f"calls ({', '.join(sorted(operations))} only)")
    # The execution role: the image's repository and the server's own log group.
    execution = _role_policies(aws, definition["executionRoleArn"].rsplit("/", 1)[-1])
    stream = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group}:log-stream:cloudmap-xds/x/1"
    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/cloudmap-xds"
    for request in (Request("logs:CreateLogStream", stream), Request("logs:PutLogEvents", stream),
                    Request("ecr:GetAuthorizationToken", "*"),
                    Request("ecr:BatchGetImage", repository),
                    Request("ecr:GetDownloadUrlForLayer", repository)):
        if not iam_checks.allowed(execution, request):
            problems.append(f"execution role: not granted: {request}")
    other = deployed["resources"]["SyncLogGroup"]["PhysicalResourceId"]
    if iam_checks.allowed(execution, Request(
            "logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{other}:log-stream:x")):
        problems.append("execution role writes to another log group")
    expect(not problems, "\n".join(problems))
    return (f"service, task definition, security group, Cloud Map service; task role: "
            f"{', '.join(sorted(operations))} ({granted} requests) and nothing else")


# How AWS authorizes each operation the Lambda calls (Service Authorization Reference): the
# resource ARN ("*" where the action has no resource type) and condition keys, for one managed
# cluster or service. A call found in the code but missing here fails the rehearsal.
def _task(cluster: str) -> str:
    return cluster.replace(":cluster/", ":task/") + "/0123456789abcdef0123456789abcdef"


def _ecs_service(cluster: str) -> str:
    return cluster.replace(":cluster/", ":service/") + "/orders"


def _discover(operation: str, name: str) -> Request:
    service, _, namespace = name.partition(".")
    return Request(f"servicediscovery:{operation}", "*", {
        "servicediscovery:NamespaceName": namespace, "servicediscovery:ServiceName": service})


REQUESTS: dict[str, Callable[[str], Request]] = {
    "servicediscovery:RegisterInstance":
        lambda s: Request("servicediscovery:RegisterInstance", s, {"servicediscovery:ServiceArn": s}),
    "servicediscovery:DeregisterInstance":
        lambda s: Request("servicediscovery:DeregisterInstance", s,
                          {"servicediscovery:ServiceArn": s}),
    "servicediscovery:GetInstance":
        lambda s: Request("servicediscovery:GetInstance", "*", {"servicediscovery:ServiceArn": s}),
    "servicediscovery:ListInstances":
        lambda s: Request("servicediscovery:ListInstances", "*",
                          {"servicediscovery:ServiceArn": s}),
    "ecs:DescribeTasks": lambda c: Request("ecs:DescribeTasks", _task(c), {"ecs:cluster": c}),
    "ecs:DescribeServices":
        lambda c: Request("ecs:DescribeServices", _ecs_service(c), {"ecs:cluster": c}),
    "ecs:ListTasks": lambda c: Request("ecs:ListTasks", "*", {"ecs:cluster": c}),
    "ecs:ListServices": lambda c: Request("ecs:ListServices", "*", {"ecs:cluster": c}),
    "cloudwatch:GetMetricData": lambda _: Request("cloudwatch:GetMetricData", "*"),
    "ec2:DescribeSubnets": lambda _: Request("ec2:DescribeSubnets", "*"),
    "ec2:DescribeAvailabilityZones": lambda _: Request("ec2:DescribeAvailabilityZones", "*"),
    # The xDS server's reads, for one SERVICE.NAMESPACE: no resource type, only the namespace and
    # service name keys.
    "servicediscovery:DiscoverInstances": lambda name: _discover("DiscoverInstances", name),
    "servicediscovery:DiscoverInstancesRevision":
        lambda name: _discover("DiscoverInstancesRevision", name),
    # `--owner-account detect` (a namespace shared through AWS RAM): no resource type.
    "servicediscovery:ListNamespaces": lambda _: Request("servicediscovery:ListNamespaces", "*"),
}
# What each prefix's calls are scoped to: the managed services, the managed clusters, or nothing.
SCOPE = {"servicediscovery": "services", "ecs": "clusters", "cloudwatch": None, "ec2": None}
# Cloud Map API permissions reference: what RegisterInstance and DeregisterInstance also need in a
# public or private DNS namespace (records in the namespace's hosted zone; Route 53 health checks).
DNS_NAMESPACE_ACTIONS = {
    "servicediscovery:RegisterInstance": ["route53:GetHealthCheck", "route53:CreateHealthCheck",
                                          "route53:UpdateHealthCheck",
                                          "route53:ChangeResourceRecordSets"],
    "servicediscovery:DeregisterInstance": ["route53:GetHealthCheck", "route53:DeleteHealthCheck",
                                            "route53:UpdateHealthCheck",
                                            "route53:ChangeResourceRecordSets"],
}


def _route53_request(action: str, zone: str) -> Request:
    if action == "route53:ChangeResourceRecordSets":
        return Request(action, f"arn:aws:route53:::hostedzone/{zone}")
    if action == "route53:CreateHealthCheck":
        return Request(action, "*")
    return Request(action, "arn:aws:route53:::healthcheck/abcdef11-2222-3333-4444-555555fedcba")


def _policy_document(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        try:
            document = json.loads(document)
        except json.JSONDecodeError:
            # moto 5.2.5 keeps the inline policies CloudFormation gives a role as Python objects
            # and answers GetRolePolicy with their repr: a literal, read as one.
            document = ast.literal_eval(document)
    # moto's CloudFormation leaves a statement that resolved to AWS::NoValue in the list as
    # None; CloudFormation removes it.
    statements = document.get("Statement", [])
    if isinstance(statements, list):
        document = {**document, "Statement": [st for st in statements if st is not None]}
    return document


def _role_policies(aws: Aws, role_name: str) -> list[dict[str, Any]]:
    policies = []
    for name in aws.iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        document = aws.iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        policies.append(_policy_document(document))
    for attached in aws.iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        policy = aws.iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = aws.iam.get_policy_version(PolicyArn=attached["PolicyArn"],
                                             VersionId=policy["DefaultVersionId"])
        policies.append(_policy_document(version["PolicyVersion"]["Document"]))
    return policies


def check_iam(aws: Aws, deployed: dict, target: Target, operations: dict[str, list[str]]) -> str:
    function = aws.client("lambda").get_function(
        FunctionName=deployed["resources"]["SyncFunction"]["PhysicalResourceId"])
    role_name = function["Configuration"]["Role"].rsplit("/", 1)[-1]
    policies = _role_policies(aws, role_name)
    problems = []
    granted = denied = 0

    def need(request: Request, why: str) -> None:
        nonlocal granted
        granted += 1
        if not iam_checks.allowed(policies, request):
            problems.append(f"not granted: {request} ({why})")

    def refuse(request: Request, why: str) -> None:
        nonlocal denied
        denied += 1
        if iam_checks.allowed(policies, request):
            problems.append(f"granted beyond what is managed: {request} ({why})")

    other_service = f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/srv-notmanaged000000"
    other_cluster = CLUSTER + "not-managed"
    for action, files in sorted(operations.items()):
        if action not in REQUESTS:
            problems.append(f"{action} (called in {', '.join(files)}): the rehearsal does not know "
                            "how AWS authorizes it; add it to REQUESTS")
            continue
        scope = SCOPE.get(action.split(":")[0], "unknown")
        where = f"called in {', '.join(sorted(set(files)))}"
        if scope == "services":
            for service in target.services:
                need(REQUESTS[action](service), where)
                if action in DNS_NAMESPACE_ACTIONS and service in target.dns_zones:
                    for dependent in DNS_NAMESPACE_ACTIONS[action]:
                        need(_route53_request(dependent, target.dns_zones[service]),
                             f"Cloud Map {action} in a DNS namespace")
            refuse(REQUESTS[action](other_service), "a service not managed")
        elif scope == "clusters":
            for cluster in target.clusters:
                need(REQUESTS[action](cluster), where)
            refuse(REQUESTS[action](other_cluster), "a cluster not managed")
        elif scope is None:
            need(REQUESTS[action](""), where)
        else:
            problems.append(f"{action}: no scope for prefix {action.split(':')[0]} in SCOPE")
    if target.dns_zones:
        refuse(_route53_request("route53:ChangeResourceRecordSets", "ZNOTMANAGED00000"),
               "a hosted zone not listed in DnsHostedZoneArns")
    # What the Lambda service does with the function's role: logs, the on-failure destination.
    log_group = deployed["resources"]["SyncLogGroup"]["PhysicalResourceId"]
    stream = (f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group}:log-stream:"
              "2026/12/04/[$LATEST]0123456789abcdef")
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        need(Request(action, stream), "the function's logs")
    need(Request("sqs:SendMessage",
                 _queue_arn(aws, deployed["outputs"]["FailedInvocationsQueueUrl"])),
         "the on-failure destination")
    expect(not problems, "\n".join(problems))
    return f"{len(operations)} operations from the code; {granted} requests granted, {denied} refused"


def check_no_write_on_everything(aws: Aws, deployed: dict) -> str:
    roles = _resources_of(deployed, "AWS::IAM::Role")
    problems = []
    for role in roles:
        for problem in iam_checks.writes_on_everything(
                _role_policies(aws, role["PhysicalResourceId"])):
            problems.append(f"{role['LogicalResourceId']}: {problem}")
    expect(not problems, "\n".join(problems))
    return f"{len(roles)} roles"


# ------------------------------------------------------------------------------------------------
# The rehearsal of one template
# ------------------------------------------------------------------------------------------------
def check_parameter_patterns(template: dict[str, Any]) -> None:
    arn = {
        "ClusterArns": (CLUSTER + "prod", ["prod", "cluster/prod", CLUSTER + "prod "]),
        "CloudMapServiceArns": (
            f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/srv-e4anhexample0004",
            ["srv-e4anhexample0004", "orders",
             f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:namespace/ns-e4anhexample0004"]),
        "DnsHostedZoneArns": ("arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ",
                              ["Z0123456789ABCDEFGHIJ", "/hostedzone/Z0123456789ABCDEFGHIJ"]),
        "AlarmTopicArn": (f"arn:aws:sns:{REGION}:{ACCOUNT}:cloudmap-sync-alarms",
                          ["cloudmap-sync-alarms"]),
    }
    base = {"DeployDemo": "true", "DemoServerImage": "image"}
    lists = [n for n, p in template["Parameters"].items() if p.get("Type") == "CommaDelimitedList"
             and "Arns" in n]
    unchecked = set(lists) - set(arn)
    expect(not unchecked, f"ARN list parameters without a case here: {sorted(unchecked)}")
    for name, (good, bad) in arn.items():
        resolve_parameters(template, {**base, name: ""})
        resolve_parameters(template, {**base, name: good})
        for value in bad:
            try:
                resolve_parameters(template, {**base, name: value})
            except TemplateError:
                continue
            raise Failure(f"{name}={value!r} is accepted: it would deploy and never match")


def rehearse(template_text: str, aws: Aws, report: Report, lint: bool, src: Path) -> None:
    template = load_template(template_text)
    operations = report.check("the Lambda's AWS operations, read from sync-lambda/src", lambda:
                              iam_checks.operations_in_code(src,
                                                            ROOT / "sync-lambda" / "Cargo.toml"))
    if operations is None:
        raise StopRun("no operations")
    print(f"{report.indent}      {', '.join(sorted(operations))}")
    server_operations = report.check("the xDS server's AWS operations, read from xds-server/src "
                                     "and client-sdk/src/discovery", xds_operations)
    if server_operations is None:
        raise StopRun("no operations")
    print(f"{report.indent}      {', '.join(sorted(server_operations))}")

    def sections() -> None:
        errors = section_function_errors(template)
        expect(not errors, "\n".join(errors))

    report.check("template: only allowed functions in Rules, Conditions, parameter defaults",
                 sections)
    report.check("parameters: ARN lists take ARNs or nothing (bare names refused)",
                 lambda: check_parameter_patterns(template))

    def defaults_refused() -> None:
        try:
            check_rules(template, resolve_parameters(template, {}))
        except TemplateError as error:
            expect("ClusterArns must name at least one cluster" in str(error),
                   f"refused for another reason: {error}")
            return
        raise Failure("every parameter at its default passes the Rules (managing nothing)")

    report.check("default parameters: refused by the Rules before anything is created",
                 defaults_refused)

    def contradictions_refused() -> None:
        cluster = CLUSTER + "prod"
        service = f"arn:aws:servicediscovery:{REGION}:{ACCOUNT}:service/srv-e4anhexample0004"
        valid = {"ClusterArns": cluster, "CloudMapServiceArns": service}
        check_rules(template, resolve_parameters(template, valid))
        xds_place = {"XdsServer": "on", "XdsServerImage": "cloudmap-xds", "XdsClusterArn": cluster,
                     "XdsVpcId": "vpc-0123456789abcdef0",
                     "XdsSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
                     "XdsNamespaceId": "ns-e4anhexample0004", "XdsClientCidr": "10.0.0.0/16"}
        check_rules(template, resolve_parameters(template, {**valid, **xds_place}))
        for change, reason in (
            ({"ClusterArns": f"{cluster},"}, "ClusterArns has an empty entry"),
            ({"CloudMapServiceArns": f"{service},,{service}"},
             "CloudMapServiceArns has an empty entry"),
            ({"Route53ForDnsNamespaces": "false",
              "DnsHostedZoneArns": "arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ"},
             "DnsHostedZoneArns is only used with Route53ForDnsNamespaces=true"),
            ({"XdsServer": "on"}, "XdsServerImage is required when XdsServer=on"),
            ({**xds_place, "XdsSubnetIds": ""},
             "XdsSubnetIds must name the server's subnets when XdsServer=on"),
            ({**xds_place, "XdsSubnetIds": "subnet-0123456789abcdef0,"},
             "XdsSubnetIds has an empty entry"),
            ({**xds_place, "XdsClientCidr": ""}, "XdsClientCidr is required when XdsServer=on"),
        ):
            try:
                check_rules(template, resolve_parameters(template, {**valid, **change}))
            except TemplateError as error:
                expect(reason in str(error), f"{change}: refused for another reason: {error}")
                continue
            raise Failure(f"{change} passes the Rules ({reason!r} expected)")

    report.check("Rules: stray commas, hosted zones without Route 53, an xDS server without its "
                 "place refused",
                 contradictions_refused)

    for set_name, make in (("demo", demo_set), ("production", production_set)):
        aws.reset()
        params, targets_of = make(aws)
        prefix = f"{set_name}: "
        values = report.check(prefix + "parameter constraints and Rules", lambda: (
            v := resolve_parameters(template, params), check_rules(template, v), v)[2])
        if values is None:
            continue
        translated = report.check(prefix + "SAM transform (aws-sam-translator)",
                                  lambda: sam_translate(template, params))
        if translated is None:
            continue

        def translated_sections() -> None:
            errors = section_function_errors(translated)
            expect(not errors, "\n".join(errors))

        report.check(prefix + "translated: only allowed functions in Rules, Conditions, defaults",
                     translated_sections)
        if lint:
            report.check(prefix + "translated: cfn-lint", lambda: cfn_lint(translated))
        deployed = report.check(prefix + "deploy into moto's CloudFormation",
                                lambda: deploy(aws, f"cloudmap-sync-{set_name}", translated,
                                               params))
        if deployed is None:
            continue
        target = targets_of(deployed["outputs"])
        for name, body in (
            ("event pattern vs the ECS fixtures (moto's EventBridge matcher)",
             lambda: check_event_pattern(aws, deployed, target)),
            ("function role vs the code's AWS operations",
             lambda: check_iam(aws, deployed, target, operations)),
            ("no role grants a write on *", lambda: check_no_write_on_everything(aws, deployed)),
            ("queues keep 14 days; dead-letter queues admit exactly their rule",
             lambda: check_queues(aws, deployed)),
            ("alarms on every queue, errors and throttles",
             lambda: check_alarms(aws, deployed, target)),
            ("async invoke settings and outputs",
             lambda: check_async_settings(aws, deployed, values)),
            ("xDS server: service, Cloud Map registration, task definition, security group, roles",
             lambda: check_xds_server(aws, deployed, target, server_operations)),
        ):
            detail = report.check(prefix + name, body)
            if detail:
                print(f"{report.indent}      {detail}")


# ------------------------------------------------------------------------------------------------
# Mutated copies of the template: each must fail, at the check that guards against it.
# ------------------------------------------------------------------------------------------------
def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise Failure(f"the mutation's anchor is not in the template exactly once: {old!r}")
    return text.replace(old, new)


def _drop_register_instance(text: str) -> str:
    return _replace_once(
        _replace_once(text,
                      "Sid: WriteListedServiceInstances\n                  Effect: Allow\n"
                      "                  Action: [servicediscovery:RegisterInstance, ",
                      "Sid: WriteListedServiceInstances\n                  Effect: Allow\n"
                      "                  Action: ["),
        "Sid: WriteDemoServiceInstances\n                  Effect: Allow\n"
        "                  Action: [servicediscovery:RegisterInstance, ",
        "Sid: WriteDemoServiceInstances\n                  Effect: Allow\n"
        "                  Action: [")


def _new_cloud_map_call(src: Path) -> None:
    """A Cloud Map call the role does not grant, added to the Lambda's code."""
    path = src / "aws" / "cloudmap.rs"
    path.write_text(path.read_text() + """
impl CloudMap {
    async fn mark_unhealthy(&self, service_id: &str, instance_id: &str) {
        let _ = self
            .client
            .update_instance_custom_health_status()
            .service_id(service_id)
            .instance_id(instance_id)
            .send()
            .await;
    }
}
""")


def _unchanged(text: str) -> str:
    return text


MUTATIONS: list[tuple[str, Callable[[str], str], tuple[str, ...]]] = [
    ("misspelled detail-type",
     lambda t: _replace_once(t, "detail-type: [ECS Task State Change]",
                             "detail-type: [ECS Task Status Change]"),
     ("event pattern",)),
    ("a policy without servicediscovery:RegisterInstance", _drop_register_instance,
     ("function role",)),
    ("Fn::Join back in Rules",
     lambda t: _replace_once(t, '      - Assert: !Not [!Contains [!Ref ClusterArns, ""]]\n',
                             '      - Assert: !Not [!Equals [!Join ["", !Ref ClusterArns], ""]]\n'),
     ("template: only allowed functions",)),
    ("ClusterArns accepts a bare cluster name (no AllowedPattern)",
     lambda t: _replace_once(
         t, "  ClusterArns:\n    Type: CommaDelimitedList\n    Default: \"\"\n"
            "    AllowedPattern: ^(arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/"
            "[A-Za-z0-9_-]{1,255})?$\n",
         "  ClusterArns:\n    Type: CommaDelimitedList\n    Default: \"\"\n"),
     ("parameters: ARN lists",)),
    ("the xDS server's task role granted servicediscovery:*",
     lambda t: _replace_once(
         t, "- Sid: DiscoverInstances\n                Effect: Allow\n"
            "                Action: [servicediscovery:DiscoverInstances, "
            "servicediscovery:DiscoverInstancesRevision]\n",
         "- Sid: DiscoverInstances\n                Effect: Allow\n"
         "                Action: servicediscovery:*\n"),
     ("no role grants a write on *", "xDS server")),
    ("the xDS server reachable from anywhere on 18000",
     lambda t: _replace_once(
         t, "          CidrIp: !Ref XdsClientCidr\n          Description: ADS (xDS)",
         "          CidrIp: 0.0.0.0/0\n          Description: ADS (xDS)"),
     ("xDS server",)),
    ("a bare cluster name as the ClusterArns default",
     lambda t: _replace_once(
         t, "  ClusterArns:\n    Type: CommaDelimitedList\n    Default: \"\"\n",
         "  ClusterArns:\n    Type: CommaDelimitedList\n    Default: prod\n"),
     ("parameters: ARN lists", "default parameters")),
]
# Mutated copies of the Lambda's code, with the template unchanged.
CODE_MUTATIONS: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("a new Cloud Map call in sync-lambda/src that the role does not grant", _new_cloud_map_call,
     ("function role",)),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    parser.add_argument("--no-mutations", action="store_true",
                        help="rehearse the template only, not its mutated copies")
    args = parser.parse_args()
    started = time.monotonic()
    text = args.template.read_text()
    server, endpoint = moto_stack.start()
    aws = Aws(endpoint)
    print(f"rehearsal: {args.template} against moto at {endpoint}")
    print("rehearsal: moto's CloudFormation lacks these types, or drops properties the checks "
          "read back; created through moto's own services instead: "
          f"{', '.join(moto_stack.ADAPTED_TYPES)}")
    report = Report()
    try:
        src = ROOT / "sync-lambda" / "src"
        try:
            rehearse(text, aws, report, lint=True, src=src)
        except StopRun:
            pass
        mutations = [(name, mutate, None, expected) for name, mutate, expected in MUTATIONS] + [
            (name, _unchanged, mutate_code, expected)
            for name, mutate_code, expected in CODE_MUTATIONS]
        for name, mutate, mutate_code, expected in [] if args.no_mutations else mutations:
            print(f"mutation: {name} (must fail at: {' or '.join(expected)})")
            mutant_report = Report(fail_fast=True, indent="    ")
            with tempfile.TemporaryDirectory() as scratch:
                mutant_src = src
                if mutate_code is not None:
                    mutant_src = Path(scratch) / "src"
                    shutil.copytree(src, mutant_src)
                    mutate_code(mutant_src)
                try:
                    rehearse(mutate(text), aws, mutant_report, lint=False, src=mutant_src)
                except StopRun:
                    pass
                except Failure as error:
                    report.check(f"mutation {name!r} fails", lambda e=error: expect(False, str(e)))
                    continue
                first = mutant_report.failed[0] if mutant_report.failed else None

                def verdict(first=first, expected=expected) -> None:
                    expect(first is not None, "the rehearsal passed the mutated template")
                    expect(any(e in first for e in expected),
                           f"it failed, but at {first!r}, not where it should")

                report.check(f"mutation {name!r} fails", verdict)
    finally:
        server.stop()
    print(f"rehearsal: {time.monotonic() - started:.1f} s")
    if report.failed:
        print("rehearsal: failed checks:\n  " + "\n  ".join(report.failed))
    print(f"rehearsal: {report.passed} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
