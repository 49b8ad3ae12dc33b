"""Starts moto's server on loopback for the project's tests, benchmarks and local run.

Usage: python moto_launcher.py [--host 127.0.0.1] [--port 0]

Prints one JSON line, {"port": N}, once the server accepts connections, then serves until its
standard input closes: the parent holds the other end of that pipe, so the server ends with the
parent even when the parent is killed.

These adjustments make moto behave like AWS where the project depends on it:

1. ECS task containers carry `cpu`, `memory` and `memoryReservation` as strings, as the ECS API
   model says. moto before 5.2.5 answered numbers there, which the Rust SDK rejects ("type
   mismatch") for DescribeTasks and RunTask. Normalised here so that any moto version works.
2. ECS tasks stay in their state until StopTask, as on AWS. By default moto moves a task one
   lifecycle step further on every DescribeTasks, which makes a level-driven reader (the sync
   Lambda asks DescribeTasks for the truth) stop its own tasks.
3. Cloud Map's RegisterInstance is create-or-update on the instance ID, as on AWS. moto 5.2.5
   appends a second instance with the same ID instead, so a re-registered instance kept its old
   attributes in DiscoverInstances and GetInstance.
4. ECS ListTasks with `serviceName` lists only that service's tasks, as on AWS. moto 5.2.5
   ignores the filter and lists every task of the cluster. Service tasks carry the group
   `service:NAME` (on AWS and in tests that start them with RunTask), so that is the filter.
5. CloudWatch speaks Smithy RPC v2 CBOR (`POST /service/GraniteServiceVersion20100801/operation/
   NAME`, CBOR bodies), which current AWS SDKs (the Rust SDK among them) use and moto 5.2.5 does
   not route (404). Such requests are translated to CloudWatch's JSON protocol, which moto serves,
   and the answers back to CBOR.
6. Cloud Map takes a service's ID or its ARN as `ServiceId` (GetInstance, ListInstances,
   RegisterInstance, DeregisterInstance and the other instance and service operations; the ARN
   is what names a service in a namespace shared from another account). moto 5.2 looks services
   up by ID only. An ARN of moto's own account and region is read as its ID here; any other ARN
   stays unknown (ServiceNotFound), as a service of an account that shares nothing with the
   caller.
"""

import argparse
import base64
import gzip
import io
import json
import logging
import re
import struct
import sys

from moto.ecs import models as ecs_models
from moto.servicediscovery import models as servicediscovery_models
from moto.moto_api import state_manager
from moto.moto_server import threaded_moto_server
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

# "manual" progression advances a model after this many DescribeTasks calls: never, in practice.
NEVER = 2**62


def keep_container_numbers_as_strings() -> None:
    original_init = ecs_models.Container.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        for field in ("cpu", "memory", "memory_reservation"):
            value = getattr(self, field, None)
            if value is not None and not isinstance(value, str):
                setattr(self, field, str(value))

    ecs_models.Container.__init__ = init


def keep_tasks_in_their_state() -> None:
    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": NEVER}
    )


def register_instance_replaces() -> None:
    backend = servicediscovery_models.ServiceDiscoveryBackend
    original_register = backend.register_instance

    def register_instance(self, service_id, instance_id, *args, **kwargs):
        service = self.get_service(service_id)
        service.instances = [i for i in service.instances if i.instance_id != instance_id]
        return original_register(self, service_id, instance_id, *args, **kwargs)

    backend.register_instance = register_instance


def service_arns_name_services() -> None:
    backend = servicediscovery_models.ServiceDiscoveryBackend

    def service_id_of(self, service_id):
        if isinstance(service_id, str) and service_id.startswith("arn:"):
            parts = service_id.split(":", 5)
            if (len(parts) == 6 and parts[2] == "servicediscovery"
                    and parts[3] == self.region_name and parts[4] == self.account_id
                    and parts[5].startswith("service/")):
                return parts[5][len("service/"):]
        return service_id

    def by_id(original):
        def method(self, service_id, *args, **kwargs):
            return original(self, service_id_of(self, service_id), *args, **kwargs)

        return method

    for name in ("get_service", "update_service", "get_service_attributes",
                 "update_service_attributes", "delete_service_attributes", "register_instance",
                 "deregister_instance", "list_instances", "get_instance",
                 "get_instances_health_status", "update_instance_custom_health_status"):
        setattr(backend, name, by_id(getattr(backend, name)))


def list_tasks_filters_by_service() -> None:
    backend = ecs_models.EC2ContainerServiceBackend
    original_list_tasks = backend.list_tasks

    def list_tasks(self, *args, **kwargs):
        names = ["cluster_str", "container_instance", "family", "started_by", "service_name"]
        service_name = kwargs.get("service_name")
        if service_name is None and len(args) > names.index("service_name"):
            service_name = args[names.index("service_name")]
        tasks = original_list_tasks(self, *args, **kwargs)
        if service_name:
            name = service_name.rsplit("/", 1)[-1]
            tasks = [t for t in tasks if t.group == f"service:{name}"]
        return tasks

    backend.list_tasks = list_tasks


CBOR_OPERATION = re.compile(r"^/service/(GraniteServiceVersion20100801)/operation/(\w+)$")
# Response members that are timestamps (CBOR tag 1) or doubles in CloudWatch's model.
CBOR_TIMESTAMPS = {"Timestamps", "Timestamp", "StartTime", "EndTime", "LastModified",
                   "StateUpdatedTimestamp", "AlarmConfigurationUpdatedTimestamp",
                   "StateTransitionedTimestamp"}
CBOR_DOUBLES = {"Values", "Value", "Threshold", "Sum", "Average", "Minimum", "Maximum",
                "SampleCount"}


def cbor_decode(data: bytes):
    """Decodes one CBOR item (RFC 8949): what AWS SDKs send. Tag 1 becomes epoch seconds."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos:pos + n]
        if len(chunk) != n:
            raise ValueError("truncated CBOR")
        pos += n
        return chunk

    def argument(info: int):
        if info < 24:
            return info
        if info in (24, 25, 26, 27):
            return int.from_bytes(take(1 << (info - 24)), "big")
        if info == 31:
            return None  # indefinite length
        raise ValueError(f"bad CBOR additional info {info}")

    def item():
        initial = take(1)[0]
        major, info = initial >> 5, initial & 31
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info in (22, 23):
                return None
            if info == 25:
                return struct.unpack(">e", take(2))[0]
            if info == 26:
                return struct.unpack(">f", take(4))[0]
            if info == 27:
                return struct.unpack(">d", take(8))[0]
            if info == 31:
                return StopIteration
            raise ValueError(f"bad CBOR simple value {info}")
        length = argument(info)
        if major == 0:
            return length
        if major == 1:
            return -1 - length
        if major in (2, 3):
            if length is None:
                parts = []
                while (part := item()) is not StopIteration:
                    parts.append(part)
                return (b"" if major == 2 else "").join(parts)
            raw = take(length)
            return raw if major == 2 else raw.decode("utf-8")
        if major == 4:
            out = []
            while length is None or len(out) < length:
                value = item()
                if value is StopIteration:
                    break
                out.append(value)
            return out
        if major == 5:
            out = {}
            while length is None or len(out) < length:
                key = item()
                if key is StopIteration:
                    break
                out[key] = item()
            return out
        if major == 6:
            return item()  # tag 1 (epoch time) and others: the value itself
        raise ValueError(f"bad CBOR major type {major}")

    return item() if data else {}


def cbor_encode(value, key=None) -> bytes:
    """Encodes JSON-like data as CBOR, with the members CloudWatch models as timestamps
    tagged (tag 1) and its doubles as floats."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if length < 1 << (8 * size):
                return bytes([major << 5 | info]) + length.to_bytes(size, "big")
        raise ValueError("CBOR length too large")

    if key in CBOR_TIMESTAMPS and not isinstance(value, (list, dict)):
        return b"\xc1" + cbor_encode(float(value))
    if key in CBOR_TIMESTAMPS and isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor_encode(v, key) for v in value)
    if key in CBOR_DOUBLES and isinstance(value, (int, float)) and not isinstance(value, bool):
        return b"\xfb" + struct.pack(">d", float(value))
    if key in CBOR_DOUBLES and isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor_encode(v, key) for v in value)
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return head(3, len(raw)) + raw
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor_encode(v) for v in value)
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(
            cbor_encode(k) + cbor_encode(v, k) for k, v in value.items()
        )
    raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def cloudwatch_speaks_cbor() -> None:
    base = threaded_moto_server.DomainDispatcherApplication

    class Dispatcher(base):
        def __call__(self, environ, start_response):
            match = CBOR_OPERATION.match(environ.get("PATH_INFO", ""))
            if not match:
                return super().__call__(environ, start_response)
            target, operation = match.groups()
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            if "gzip" in environ.get("HTTP_CONTENT_ENCODING", ""):
                # SDKs compress large PutMetricData bodies.
                body = gzip.decompress(body)
            params = cbor_decode(body)
            payload = json.dumps(
                params,
                default=lambda b: base64.b64encode(b).decode() if isinstance(b, bytes) else str(b),
            ).encode()
            environ = dict(environ)
            environ.pop("HTTP_CONTENT_ENCODING", None)
            environ.update({
                "PATH_INFO": "/",
                "CONTENT_TYPE": "application/x-amz-json-1.0",
                "CONTENT_LENGTH": str(len(payload)),
                "HTTP_X_AMZ_TARGET": f"{target}.{operation}",
                "wsgi.input": io.BytesIO(payload),
            })
            answer = {}

            def capture(status, headers, exc_info=None):
                answer["status"] = status
                return lambda _data: None

            raw = b"".join(super().__call__(environ, capture))
            result = json.loads(raw) if raw.strip() else {}
            if isinstance(result, dict) and "__type" in result:
                # Smithy error codes carry no namespace.
                result["__type"] = str(result["__type"]).rsplit("#", 1)[-1]
            encoded = cbor_encode(result)
            start_response(answer.get("status", "500 Internal Server Error"), [
                ("Content-Type", "application/cbor"),
                ("smithy-protocol", "rpc-v2-cbor"),
                ("Content-Length", str(len(encoded))),
            ])
            return [encoded]

    threaded_moto_server.DomainDispatcherApplication = Dispatcher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args()
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    keep_container_numbers_as_strings()
    keep_tasks_in_their_state()
    register_instance_replaces()
    service_arns_name_services()
    list_tasks_filters_by_service()
    cloudwatch_speaks_cbor()

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(json.dumps({"port": port}), flush=True)

    # Serve until the parent closes our stdin (or dies).
    while sys.stdin.read(65536):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
