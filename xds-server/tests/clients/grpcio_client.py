#!/usr/bin/env python3
"""A grpcio (C-core) xDS client for the control plane's end-to-end tests.

    python grpcio_client.py --target xds:///SERVICE.NAMESPACE (--calls N | --until-file PATH)
                            [--concurrency C] [--deadline-ms D] [--ready-timeout-s S]
                            [--rpc health|describe] [--pause-ms P] [--metadata KEY=VALUE]...
                            [--ready-file PATH] [--idle] [--lb-policy NAME] [--warmup-ms W]
                            [--authority NAME]

gRPC itself reads the xDS bootstrap from GRPC_XDS_BOOTSTRAP (a file) or
GRPC_XDS_BOOTSTRAP_CONFIG (the JSON); nothing here touches it. The client waits until the
channel is ready (the xDS resolver resolved and a backend connected), then makes unary calls
from C concurrent workers, back to back (or P ms apart): either N calls in all, or until PATH
exists (for drain tests). At the end it prints one JSON line on stdout:

    {"grpcio": "1.85.1", "ok": n, "failed": n, "codes": {"UNAVAILABLE": n},
     "first_error": "UNAVAILABLE: ..." | null, "serving": {"SERVING": n}}

`codes` counts the failed calls by status code (so ok + sum(codes) = ok + failed); `serving`
counts the successful calls by the ServingStatus they answered.

The calls are grpc.health.v1.Health/Check (service "") by default. With `--rpc describe` they
are the demo server's cloudmap.demo.v1.Demo/Describe, whose answer names the task that served
it; its request and response classes come from the server's reflection service at start (no
generated code). The summary then also has, per task ID, the calls it served, its zone and when
it last answered (Unix milliseconds), and the successful calls' latency percentiles:

    "tasks": {"TASK_ID": {"zone": "eu-central-1c", "calls": n, "last_unix_ms": t}},
    "latency_us": {"p50": n, "p90": n, "p99": n}

`--metadata` adds a request header to every call (the demo server's network emulation reads
`demo-client-zone`). `--ready-file` is created once the channel is ready, before the first call.
`--idle` (with `--until-file`) makes no calls at all: a connected xDS client that only counts as
a caller in its zone (the control plane spreads a zone's calls by where its callers are).
`--warmup-ms` leaves out of the summary the calls that start in the first W ms after the
channel is ready (connections, caches); `measured_s` says how long the counted part lasted.
`--lb-policy` sets the channel's policy for a non-xDS target (e.g. `round_robin` over an
`ipv4:` address list or a `dns:///` name; grpcio's default there is `pick_first`).
`--authority` sets the calls' `:authority` (grpcio sends an `ipv4:` list's whole address list,
commas included, which HTTP/2 servers such as hyper reject as malformed).

Exit status: 0 when it ran (failed calls included: the caller judges them), 2 for bad
arguments, 3 when the channel was not ready within the ready timeout, 1 for anything else.
"""

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_NOT_READY = 3
DEMO_SERVICE = "cloudmap.demo.v1.Demo"


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def header(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return (key.lower(), value)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Make grpc.health.v1.Health/Check calls over xDS and print a JSON summary."
    )
    parser.add_argument("--target", required=True, help="e.g. xds:///echo.prod.internal")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--calls", type=positive, help="make this many calls in all")
    mode.add_argument("--until-file", metavar="PATH", help="keep calling until PATH exists")
    parser.add_argument("--concurrency", type=positive, default=1, help="workers (default 1)")
    parser.add_argument(
        "--deadline-ms", type=positive, default=5000, help="per-call deadline (default 5000)"
    )
    parser.add_argument(
        "--ready-timeout-s",
        type=positive,
        default=30,
        help="how long to wait for the channel to be ready (default 30)",
    )
    parser.add_argument(
        "--rpc",
        choices=("health", "describe"),
        default="health",
        help="grpc.health.v1.Health/Check (default) or cloudmap.demo.v1.Demo/Describe",
    )
    parser.add_argument(
        "--pause-ms", type=int, default=0, help="each worker's pause between calls (default 0)"
    )
    parser.add_argument(
        "--metadata",
        type=header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a request header on every call (repeat for more)",
    )
    parser.add_argument("--ready-file", metavar="PATH", help="created once the channel is ready")
    parser.add_argument(
        "--idle",
        action="store_true",
        help="with --until-file: connect, make no calls, wait until PATH exists",
    )
    parser.add_argument(
        "--warmup-ms",
        type=int,
        default=0,
        help="calls starting in the first W ms after ready are not counted (default 0)",
    )
    parser.add_argument(
        "--authority", metavar="NAME", help="the calls' :authority (default: from the target)"
    )
    parser.add_argument(
        "--lb-policy",
        metavar="NAME",
        help="the channel's load-balancing policy for a non-xDS target (e.g. round_robin)",
    )
    args = parser.parse_args(argv)
    if args.warmup_ms < 0:
        parser.error(f"argument --warmup-ms: {args.warmup_ms} must be 0 or more")
    if args.pause_ms < 0:
        parser.error(f"argument --pause-ms: {args.pause_ms} must be 0 or more")
    if args.idle and args.until_file is None:
        parser.error("--idle needs --until-file")
    return args


class Tally:
    """Call outcomes, shared by the workers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.codes = {}
        self.serving = {}
        self.first_error = None
        self.tasks = None
        self.latencies_us = []
        # Calls that start before this (time.monotonic()) are the warm-up: not counted.
        self.counting_from = 0.0
        self.counted_until = None

    def success(self, status):
        with self.lock:
            self.ok += 1
            self.serving[status] = self.serving.get(status, 0) + 1

    def served(self, task_id, zone, latency_us):
        """A Describe call answered by `task_id`, now."""
        now_ms = int(time.time() * 1000)
        with self.lock:
            self.ok += 1
            self.serving["SERVING"] = self.serving.get("SERVING", 0) + 1
            if self.tasks is None:
                self.tasks = {}
            task = self.tasks.setdefault(task_id, {"zone": zone, "calls": 0, "last_unix_ms": 0})
            task["calls"] += 1
            task["last_unix_ms"] = max(task["last_unix_ms"], now_ms)
            self.latencies_us.append(latency_us)

    def failure(self, error):
        code = error.code().name
        with self.lock:
            self.failed += 1
            self.codes[code] = self.codes.get(code, 0) + 1
            if self.first_error is None:
                self.first_error = f"{code}: {error.details()}"

    def summary(self, rpc):
        ended = self.counted_until if self.counted_until is not None else time.monotonic()
        summary = {
            "measured_s": round(max(0.0, ended - self.counting_from), 3),
            "grpcio": grpc.__version__,
            "ok": self.ok,
            "failed": self.failed,
            "codes": self.codes,
            "first_error": self.first_error,
            "serving": self.serving,
        }
        if rpc == "describe":
            summary["tasks"] = self.tasks or {}
            ordered = sorted(self.latencies_us)
            summary["latency_us"] = {
                name: percentile(ordered, q) for name, q in (("p50", 50), ("p90", 90), ("p99", 99))
            }
        return summary


def percentile(ordered, q):
    """The nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    rank = max(1, -(-q * len(ordered) // 100))
    return ordered[rank - 1]


class Budget:
    """Hands out the N calls to the workers; with until_file, calls until that file exists."""

    def __init__(self, calls, until_file):
        self.lock = threading.Lock()
        self.left = calls
        self.until_file = until_file

    def take(self):
        if self.until_file is not None:
            return not os.path.exists(self.until_file)
        with self.lock:
            if self.left == 0:
                return False
            self.left -= 1
            return True


def health_call(channel, metadata, deadline_s):
    """One Health/Check; returns a function that records its outcome in a Tally."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")

    def call(tally):
        response = stub.Check(request, timeout=deadline_s, metadata=metadata)
        tally.success(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    return call


def describe_call(channel, metadata, deadline_s):
    """One Demo/Describe, with the classes the server's reflection describes."""
    # Imported here: only this mode needs protobuf's runtime classes and the reflection client.
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(DEMO_SERVICE).FindMethodByName("Describe")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    describe = channel.unary_unary(
        f"/{DEMO_SERVICE}/Describe",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    request = request_class()

    def call(tally):
        started = time.perf_counter_ns()
        response = describe(request, timeout=deadline_s, metadata=metadata)
        latency_us = (time.perf_counter_ns() - started) // 1000
        tally.served(response.task.task_id, response.task.zone, latency_us)

    return call


class Discard:
    """Where the warm-up's outcomes go."""

    def success(self, status):
        pass

    def served(self, task_id, zone, latency_us):
        pass

    def failure(self, error):
        pass


def worker(call, budget, tally, pause_s):
    discard = Discard()
    while budget.take():
        into = tally if time.monotonic() >= tally.counting_from else discard
        try:
            call(into)
        except grpc.RpcError as error:
            into.failure(error)
        if pause_s > 0:
            time.sleep(pause_s)


def not_ready(stub, args):
    """Why the channel is not ready: one call without waiting shows the resolver's or the
    connection's error (e.g. a missing bootstrap), which a bare timeout would hide."""
    try:
        stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        detail = "a probe call succeeded just after the timeout"
    except grpc.RpcError as error:
        detail = f"{error.code().name}: {error.details()}"
    bootstrap = os.environ.get("GRPC_XDS_BOOTSTRAP")
    if bootstrap is None and "GRPC_XDS_BOOTSTRAP_CONFIG" not in os.environ:
        bootstrap = "unset (set GRPC_XDS_BOOTSTRAP to a bootstrap file)"
    print(
        f"grpcio_client: channel to {args.target} not ready within {args.ready_timeout_s} s "
        f"(GRPC_XDS_BOOTSTRAP: {bootstrap}); last error: {detail}",
        file=sys.stderr,
    )


def main(argv):
    args = parse_args(argv)
    options = [] if args.lb_policy is None else [("grpc.lb_policy_name", args.lb_policy)]
    if args.authority is not None:
        options.append(("grpc.default_authority", args.authority))
    with grpc.insecure_channel(args.target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            grpc.channel_ready_future(channel).result(timeout=args.ready_timeout_s)
        except grpc.FutureTimeoutError:
            not_ready(stub, args)
            return EXIT_NOT_READY
        deadline_s = args.deadline_ms / 1000
        metadata = tuple(args.metadata)
        tally = Tally()
        if args.idle:
            if args.ready_file is not None:
                open(args.ready_file, "w").close()
            while not os.path.exists(args.until_file):
                time.sleep(0.05)
            print(json.dumps(tally.summary(args.rpc)), flush=True)
            return 0
        make = describe_call if args.rpc == "describe" else health_call
        call = make(channel, metadata, deadline_s)
        if args.ready_file is not None:
            open(args.ready_file, "w").close()
        tally.counting_from = time.monotonic() + args.warmup_ms / 1000
        budget = Budget(args.calls, args.until_file)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            runs = [
                pool.submit(worker, call, budget, tally, args.pause_ms / 1000)
                for _ in range(args.concurrency)
            ]
            # A worker that raised something other than an RpcError re-raises here: the run is
            # not trustworthy, so it ends non-zero with the traceback rather than a summary.
            for run in runs:
                run.result()
        tally.counted_until = time.monotonic()
    print(json.dumps(tally.summary(args.rpc)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
