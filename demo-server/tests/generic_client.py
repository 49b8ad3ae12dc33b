"""A gRPC client that is not ours: Python grpcio calls the demo server without its proto.

    python generic_client.py HOST:PORT

1. grpc.health.v1 Check of the whole server ("") and of cloudmap.demo.v1.Demo;
2. server reflection (grpc.reflection.v1alpha, what grpcio-reflection's client speaks): the list of
   services, then the descriptors of cloudmap.demo.v1.Demo into a descriptor pool;
3. Describe, called with request/response classes built from those descriptors at runtime.

Prints one JSON object with what it saw; exits non-zero (with a traceback) on any failure.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

DEMO_SERVICE = "cloudmap.demo.v1.Demo"
TIMEOUT_SECONDS = 10


def main(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        health_status = {
            name: health_pb2.HealthCheckResponse.ServingStatus.Name(
                health.Check(
                    health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT_SECONDS
                ).status
            )
            for name in ("", DEMO_SERVICE)
        }

        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(reflection.get_services())
        pool = descriptor_pool.DescriptorPool(reflection)
        method = pool.FindServiceByName(DEMO_SERVICE).FindMethodByName("Describe")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        describe = channel.unary_unary(
            f"/{DEMO_SERVICE}/Describe",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = describe(request_class(), timeout=TIMEOUT_SECONDS)

    json.dump(
        {
            "health": health_status,
            "services": services,
            "describe_input": method.input_type.full_name,
            "describe_output": method.output_type.full_name,
            "describe": json_format.MessageToDict(
                response, preserving_proto_field_name=True
            ),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: generic_client.py HOST:PORT")
    main(sys.argv[1])
