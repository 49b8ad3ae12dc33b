"""Starts moto's server on loopback for the project's tests, benchmarks and local run.

Usage: python moto_launcher.py [--host 127.0.0.1] [--port 0]

Prints one JSON line, {"port": N}, once the server accepts connections, then serves until its
standard input closes: the parent holds the other end of that pipe, so the server ends with the
parent even when the parent is killed.

Three adjustments make moto behave like AWS where the project depends on it:

1. ECS task containers carry `cpu`, `memory` and `memoryReservation` as strings, as the ECS API
   model says. moto before 5.2.5 answered numbers there, which the Rust SDK rejects ("type
   mismatch") for DescribeTasks and RunTask. Normalised here so that any moto version works.
2. ECS tasks stay in their state until StopTask, as on AWS. By default moto moves a task one
   lifecycle step further on every DescribeTasks, which makes a level-driven reader (the sync
   Lambda asks DescribeTasks for the truth) stop its own tasks.
3. Cloud Map's RegisterInstance is create-or-update on the instance ID, as on AWS. moto 5.2.5
   appends a second instance with the same ID instead, so a re-registered instance kept its old
   attributes in DiscoverInstances and GetInstance.
"""

import argparse
import json
import logging
import sys

from moto.ecs import models as ecs_models
from moto.servicediscovery import models as servicediscovery_models
from moto.moto_api import state_manager
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
