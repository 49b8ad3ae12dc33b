"""A gRPC interop TestService on Python grpcio (C-core): a server that is not ours, for the
balancer's interop tests (tests/tests/interop.rs).

    python interop_server.py DESCRIPTOR_SET

Implements the server features of grpc/grpc doc/interop-test-descriptions.md that the cases need:
EmptyCall, UnaryCall, StreamingOutputCall, StreamingInputCall, FullDuplexCall, Echo Status, Echo
Metadata and ResponseParameters.interval_us. UnimplementedCall and UnimplementedService are left
unimplemented, as the spec wants. The standard health service answers the balancer's health watch.

The messages come from DESCRIPTOR_SET, the file descriptor set the test crate's build script
compiled from tests/proto/grpc/testing/test.proto (the same protoc run as the Rust client's code),
so no Python code generation is needed.

Binds 127.0.0.1:0 and writes one JSON object per line to stdout: first
{"event": "listening", "port": PORT}, then {"event": "call", "method": M, "peer": P} as each call
starts (the peer, the client's address and port, names the connection), and
{"event": "cancelled", "method": M} when a call's request stream fails because the client
cancelled it or its deadline passed. Serves until its standard input closes.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "grpc.testing.TestService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}
_emit_lock = threading.Lock()


def emit(**event):
    line = json.dumps(event) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def load_messages(path):
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    return message_factory.GetMessages(list(files))


class TestService:
    def __init__(self, messages):
        m = lambda name: messages[f"grpc.testing.{name}"]  # noqa: E731
        self.Empty = m("Empty")
        self.SimpleRequest = m("SimpleRequest")
        self.SimpleResponse = m("SimpleResponse")
        self.StreamingInputCallRequest = m("StreamingInputCallRequest")
        self.StreamingInputCallResponse = m("StreamingInputCallResponse")
        self.StreamingOutputCallRequest = m("StreamingOutputCallRequest")
        self.StreamingOutputCallResponse = m("StreamingOutputCallResponse")
        self.Payload = m("Payload")

    def payload(self, size):
        return self.Payload(body=bytes(size))

    @staticmethod
    def echo_metadata(context):
        """Echo Metadata: the initial key back in the initial metadata, the trailing key in the
        trailers."""
        received = dict(context.invocation_metadata() or ())
        if ECHO_INITIAL in received:
            context.send_initial_metadata(((ECHO_INITIAL, received[ECHO_INITIAL]),))
        if ECHO_TRAILING in received:
            context.set_trailing_metadata(((ECHO_TRAILING, received[ECHO_TRAILING]),))

    @staticmethod
    def echo_status(request, context):
        """Echo Status: end the call with the status the request asks for."""
        if request.HasField("response_status") and request.response_status.code != 0:
            status = request.response_status
            context.abort(CODES[status.code], status.message)

    @staticmethod
    def interval(parameters):
        if parameters.interval_us:
            time.sleep(parameters.interval_us / 1e6)

    def empty_call(self, request, context):
        emit(event="call", method="EmptyCall", peer=context.peer())
        return self.Empty()

    def unary_call(self, request, context):
        emit(event="call", method="UnaryCall", peer=context.peer())
        self.echo_metadata(context)
        self.echo_status(request, context)
        return self.SimpleResponse(payload=self.payload(request.response_size))

    def streaming_output_call(self, request, context):
        emit(event="call", method="StreamingOutputCall", peer=context.peer())
        self.echo_status(request, context)
        for parameters in request.response_parameters:
            self.interval(parameters)
            yield self.StreamingOutputCallResponse(payload=self.payload(parameters.size))

    def streaming_input_call(self, request_iterator, context):
        emit(event="call", method="StreamingInputCall", peer=context.peer())
        total = 0
        try:
            for request in request_iterator:
                total += len(request.payload.body)
        except grpc.RpcError:
            # The request stream failed: the client cancelled, or the deadline passed.
            emit(event="cancelled", method="StreamingInputCall")
            raise
        return self.StreamingInputCallResponse(aggregated_payload_size=total)

    def full_duplex_call(self, request_iterator, context):
        emit(event="call", method="FullDuplexCall", peer=context.peer())
        self.echo_metadata(context)
        try:
            for request in request_iterator:
                self.echo_status(request, context)
                for parameters in request.response_parameters:
                    self.interval(parameters)
                    yield self.StreamingOutputCallResponse(
                        payload=self.payload(parameters.size)
                    )
        except grpc.RpcError:
            emit(event="cancelled", method="FullDuplexCall")
            raise

    def handler(self):
        s = self
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "EmptyCall": grpc.unary_unary_rpc_method_handler(
                    s.empty_call, s.Empty.FromString, s.Empty.SerializeToString
                ),
                "UnaryCall": grpc.unary_unary_rpc_method_handler(
                    s.unary_call, s.SimpleRequest.FromString, s.SimpleResponse.SerializeToString
                ),
                "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
                    s.streaming_output_call,
                    s.StreamingOutputCallRequest.FromString,
                    s.StreamingOutputCallResponse.SerializeToString,
                ),
                "StreamingInputCall": grpc.stream_unary_rpc_method_handler(
                    s.streaming_input_call,
                    s.StreamingInputCallRequest.FromString,
                    s.StreamingInputCallResponse.SerializeToString,
                ),
                "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
                    s.full_duplex_call,
                    s.StreamingOutputCallRequest.FromString,
                    s.StreamingOutputCallResponse.SerializeToString,
                ),
            },
        )


def serve(descriptor_set):
    # Threads: a call that waits for its client holds one until it ends.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((TestService(load_messages(descriptor_set)).handler(),))
    # The balancer watches the whole server's health (""); watches hold no thread.
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    emit(event="listening", port=port)
    # Serve until the test (the parent) closes stdin, or dies.
    sys.stdin.read()
    server.stop(None)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: interop_server.py DESCRIPTOR_SET")
    serve(sys.argv[1])
