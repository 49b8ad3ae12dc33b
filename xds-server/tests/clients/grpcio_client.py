#!/usr/bin/env python3
"""A grpcio (C-core) xDS client for the control plane's end-to-end tests.

    python grpcio_client.py --target xds:///SERVICE.NAMESPACE (--calls N | --until-file PATH)
                            [--concurrency C] [--deadline-ms D] [--ready-timeout-s S]

gRPC itself reads the xDS bootstrap from GRPC_XDS_BOOTSTRAP (a file) or
GRPC_XDS_BOOTSTRAP_CONFIG (the JSON); nothing here touches it. The client waits until the
channel is ready (the xDS resolver resolved and a backend connected), then makes unary
grpc.health.v1.Health/Check calls (service "") from C concurrent workers, back to back:
either N calls in all, or until PATH exists (for drain tests). At the end it prints one JSON
line on stdout:

    {"ok": n, "failed": n, "codes": {"UNAVAILABLE": n}, "first_error": "UNAVAILABLE: ..." | null,
     "serving": {"SERVING": n}}

`codes` counts the failed calls by status code (so ok + sum(codes) = ok + failed); `serving`
counts the successful calls by the ServingStatus they answered.

Exit status: 0 when it ran (failed calls included: the caller judges them), 2 for bad
arguments, 3 when the channel was not ready within the ready timeout, 1 for anything else.
"""

import argparse
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_NOT_READY = 3


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


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
    return parser.parse_args(argv)


class Tally:
    """Call outcomes, shared by the workers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.codes = {}
        self.serving = {}
        self.first_error = None

    def success(self, response):
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        with self.lock:
            self.ok += 1
            self.serving[status] = self.serving.get(status, 0) + 1

    def failure(self, error):
        code = error.code().name
        with self.lock:
            self.failed += 1
            self.codes[code] = self.codes.get(code, 0) + 1
            if self.first_error is None:
                self.first_error = f"{code}: {error.details()}"

    def summary(self):
        return {
            "ok": self.ok,
            "failed": self.failed,
            "codes": self.codes,
            "first_error": self.first_error,
            "serving": self.serving,
        }


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


def worker(stub, budget, tally, deadline_s):
    request = health_pb2.HealthCheckRequest(service="")
    while budget.take():
        try:
            tally.success(stub.Check(request, timeout=deadline_s))
        except grpc.RpcError as error:
            tally.failure(error)


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
    with grpc.insecure_channel(args.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            grpc.channel_ready_future(channel).result(timeout=args.ready_timeout_s)
        except grpc.FutureTimeoutError:
            not_ready(stub, args)
            return EXIT_NOT_READY
        budget = Budget(args.calls, args.until_file)
        tally = Tally()
        deadline_s = args.deadline_ms / 1000
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            runs = [
                pool.submit(worker, stub, budget, tally, deadline_s)
                for _ in range(args.concurrency)
            ]
            # A worker that raised something other than an RpcError re-raises here: the run is
            # not trustworthy, so it ends non-zero with the traceback rather than a summary.
            for run in runs:
                run.result()
    print(json.dumps(tally.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
