"""moto's server for the rehearsal, with the resource types its CloudFormation lacks.

moto 5.2.5's CloudFormation has no model for some of these types: it logs "No Moto CloudFormation
support" and creates nothing, so a GetAtt on them fails and nothing could be read back. For
others (AWS::ECS::TaskDefinition, AWS::ECS::Service) it has a model that drops most properties:
the task and execution roles, CPU, memory, network mode and platform of a task definition; the
launch type, network configuration and ServiceRegistries of a service. Each is created here
through moto's own service backend, with the template's properties, the way CloudFormation's
resource handler calls the service API; the rehearsal then reads them back through the service's
public API like every other resource. `ADAPTED_TYPES` is printed in the report, so nothing is
skipped silently. (moto keeps no deployment configuration for a service, and its CloudFormation
drops a security group's SecurityGroupEgress: those are not read back.)

The server runs in this process (as local-stack/moto_launcher.py runs it) because the adapters
must be registered inside moto's process.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.common_models import CloudFormationModel
from moto.awslambda.models import lambda_backends
from moto.ecs.models import ecs_backends
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.servicediscovery.models import servicediscovery_backends
from moto.sqs.models import sqs_backends
from moto.core.utils import pascal_to_camelcase, remap_nested_keys


# moto files every model under the second part of its module name (moto.SERVICE.models).
MODEL_MODULE = "rehearsal.cloudformation_adapters"


class _Adapter:
    """A created resource: its Ref value and its GetAtt attributes."""

    ATTRIBUTES: tuple[str, ...] = ()

    def __init__(self, physical_id: str, attributes: dict[str, str] | None = None):
        self._physical_id = physical_id
        self._attributes = attributes or {}

    @property
    def physical_resource_id(self) -> str:
        return self._physical_id

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRIBUTES

    def get_cfn_attribute(self, attribute_name: str) -> str:
        if attribute_name in self._attributes:
            return self._attributes[attribute_name]
        raise UnformattedGetAttTemplateException()

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def update_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the rehearsal creates stacks only")

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> None:
        return None

    def is_created(self) -> bool:
        return True


class AlarmAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    ATTRIBUTES = ("Arn",)

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        name = p.get("AlarmName", resource_name)
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name,
            namespace=p.get("Namespace"),
            metric_name=p.get("MetricName"),
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p["Period"]),
            threshold=float(p["Threshold"]),
            statistic=p.get("Statistic"),
            description=p.get("AlarmDescription"),
            dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []),
            datapoints_to_alarm=int(p["DatapointsToAlarm"]) if "DatapointsToAlarm" in p else None,
            ok_actions=p.get("OKActions", []),
            insufficient_data_actions=p.get("InsufficientDataActions", []),
            treat_missing_data=p.get("TreatMissingData"),
        )
        return cls(name, {"Arn": alarm.alarm_arn})


class QueuePolicyAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SQS::QueuePolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        backend = sqs_backends[account_id][region_name]
        for queue_url in p["Queues"]:
            backend.set_queue_attributes(queue_url.rsplit("/", 1)[-1],
                                         {"Policy": json.dumps(p["PolicyDocument"])})
        return cls(resource_name)


class EventInvokeConfigAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Lambda::EventInvokeConfig"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        config = {k: p[k] for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds",
                                    "DestinationConfig") if k in p}
        for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if key in config:
                config[key] = int(config[key])
        lambda_backends[account_id][region_name].put_function_event_invoke_config(
            p["FunctionName"], config)
        return cls(resource_name)


class HttpNamespaceAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    ATTRIBUTES = ("Id", "Arn")

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ServiceDiscovery::HttpNamespace"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        backend = servicediscovery_backends[account_id][region_name]
        backend.create_http_namespace(name=p["Name"], creator_request_id=resource_name,
                                      description=p.get("Description", ""), tags=[])
        namespace = next(n for n in backend.namespaces.values() if n.name == p["Name"])
        return cls(namespace.id, {"Id": namespace.id, "Arn": namespace.arn})


class DiscoveryServiceAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    ATTRIBUTES = ("Id", "Arn", "Name")

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ServiceDiscovery::Service"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        service = servicediscovery_backends[account_id][region_name].create_service(
            name=p.get("Name", resource_name),
            namespace_id=p.get("NamespaceId"),
            creator_request_id=resource_name,
            description=p.get("Description", ""),
            dns_config=p.get("DnsConfig"),
            health_check_config=p.get("HealthCheckConfig"),
            health_check_custom_config=p.get("HealthCheckCustomConfig"),
            tags=[],
            service_type=p.get("Type"),
        )
        return cls(service.id, {"Id": service.id, "Arn": service.arn, "Name": service.name})


def _physical_id(value: Any) -> str:
    """A Ref as moto's CloudFormation hands it over: the value, or the referenced model."""
    if isinstance(value, str):
        return value
    return getattr(value, "arn", None) or value.physical_resource_id


class TaskDefinitionAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    ATTRIBUTES = ("TaskDefinitionArn",)

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ECS::TaskDefinition"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        camel = lambda value: remap_nested_keys(value, pascal_to_camelcase)  # noqa: E731
        definition = ecs_backends[account_id][region_name].register_task_definition(
            family=p.get("Family", resource_name),
            container_definitions=camel(p.get("ContainerDefinitions", [])),
            volumes=camel(p.get("Volumes", [])),
            network_mode=p.get("NetworkMode"),
            requires_compatibilities=p.get("RequiresCompatibilities"),
            cpu=p.get("Cpu"),
            memory=p.get("Memory"),
            task_role_arn=p.get("TaskRoleArn"),
            execution_role_arn=p.get("ExecutionRoleArn"),
            runtime_platform=camel(p["RuntimePlatform"]) if "RuntimePlatform" in p else None,
        )
        return cls(definition.arn, {"TaskDefinitionArn": definition.arn})


class EcsServiceAdapter(_Adapter, CloudFormationModel):
    __module__ = MODEL_MODULE
    ATTRIBUTES = ("Name", "ServiceArn")

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ECS::Service"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        p = cloudformation_json["Properties"]
        camel = lambda value: remap_nested_keys(value, pascal_to_camelcase)  # noqa: E731
        # moto's camel-casing leaves the acronym: AwsvpcConfiguration -> awsvpcConfiguration.
        network = camel(p["NetworkConfiguration"]) if "NetworkConfiguration" in p else None
        service = ecs_backends[account_id][region_name].create_service(
            _physical_id(p["Cluster"]),
            p.get("ServiceName", resource_name),
            int(p["DesiredCount"]) if "DesiredCount" in p else None,
            task_definition_str=_physical_id(p["TaskDefinition"]),
            launch_type=p.get("LaunchType"),
            service_registries=camel(p.get("ServiceRegistries", [])),
            network_configuration=network,
            propagate_tags=p.get("PropagateTags", "NONE"),
        )
        return cls(service.arn, {"Name": service.name, "ServiceArn": service.arn})


ADAPTED_TYPES = sorted(a.cloudformation_type() for a in (
    AlarmAdapter, QueuePolicyAdapter, EventInvokeConfigAdapter, HttpNamespaceAdapter,
    DiscoveryServiceAdapter, TaskDefinitionAdapter, EcsServiceAdapter))


def start() -> tuple[ThreadedMotoServer, str]:
    """Starts moto on a free loopback port: (server, endpoint URL)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"
