#!/usr/bin/env python3
"""An out-of-process Sluice adapter in Python: proof that the plugin protocol
(proto/sluice/adapter/v1/adapter.proto) is language-neutral.

It fronts a toy "in-house registry" kept in memory: instances are registered per
service; after a deregister, consumers keep using an instance for --drain-ms (the
registry's own propagation delay), after a register it becomes visible after
--ready-ms. A real plugin would call its registry's API where this one edits a dict.

    pip install grpcio grpcio-tools
    python3 plugin.py --port 7070 [--drain-ms 200] [--ready-ms 100]

The gRPC stubs are generated from the .proto at start-up (into a cache directory), so
the only inputs are this file and the repository's proto/ directory.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO = "sluice/adapter/v1/adapter.proto"


def load_stubs():
    from grpc_tools import protoc

    out = os.path.join(tempfile.gettempdir(), "sluice-python-plugin-stubs-%d" % os.getuid())
    os.makedirs(out, exist_ok=True)
    rc = protoc.main(["protoc", "-I" + PROTO_ROOT, "--python_out=" + out, "--grpc_python_out=" + out, PROTO])
    if rc != 0:
        sys.exit("protoc failed on %s" % os.path.join(PROTO_ROOT, PROTO))
    sys.path.insert(0, out)
    from sluice.adapter.v1 import adapter_pb2, adapter_pb2_grpc

    return adapter_pb2, adapter_pb2_grpc


pb, pb_grpc = load_stubs()
import grpc  # noqa: E402  (after the stubs, which import it too)


class Registry:
    """The toy in-house registry: (service, ip, port) -> (state, since)."""

    def __init__(self, drain_s, ready_s):
        self.lock = threading.Lock()
        self.entries = {}
        self.drain_s = drain_s
        self.ready_s = ready_s

    def put(self, key):
        with self.lock:
            state, _ = self.entries.get(key, ("absent", 0))
            if state in ("registered", "serving"):
                return
            self.entries[key] = ("registered", time.monotonic())

    def remove(self, key):
        with self.lock:
            state, _ = self.entries.get(key, ("absent", 0))
            if state in ("absent", "draining"):
                return
            self.entries[key] = ("draining", time.monotonic())

    def look(self, key):
        with self.lock:
            state, since = self.entries.get(key, ("absent", 0))
        age = time.monotonic() - since
        if state == "registered":
            if age >= self.ready_s:
                return pb.SERVING, "listed, visible to consumers for %.0f ms" % ((age - self.ready_s) * 1000), 0
            return pb.REGISTERED, "listed, propagating", int((self.ready_s - age) * 1000)
        if state == "draining":
            if age >= self.drain_s:
                return pb.DRAINED, "delisted %.0f ms ago; consumers refreshed" % (age * 1000), 0
            return pb.DRAINING, "delisted, consumers may still hold it", int((self.drain_s - age) * 1000)
        return pb.DRAINED, "never listed", 0


class Plugin(pb_grpc.AdapterPluginServicer):
    def __init__(self, registry):
        self.registry = registry

    @staticmethod
    def key(request, context):
        t = request.target
        service = t.params.get("service")
        if not service:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "target.params.service is required (the registry service name)")
        if not t.ip or not (0 < t.port < 65536):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "target needs an ip and a port")
        return (service, t.ip, t.port)

    def Describe(self, request, context):
        return pb.DescribeResponse(protocol_version="v1", name="python-inhouse-registry", kind="rpc", required_params=["service"])

    def Register(self, request, context):
        self.registry.put(self.key(request, context))
        return pb.Empty()

    def Deregister(self, request, context):
        self.registry.remove(self.key(request, context))
        return pb.Empty()

    def Observe(self, request, context):
        state, evidence, remaining = self.registry.look(self.key(request, context))
        return pb.Observation(state=state, evidence=evidence, remaining_ms=remaining)

    def Health(self, request, context):
        return pb.Empty()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--drain-ms", type=int, default=200)
    ap.add_argument("--ready-ms", type=int, default=100)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_AdapterPluginServicer_to_server(Plugin(Registry(args.drain_ms / 1000, args.ready_ms / 1000)), server)
    server.add_insecure_port("127.0.0.1:%d" % args.port)
    server.start()
    print("plugin listening on 127.0.0.1:%d" % args.port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
