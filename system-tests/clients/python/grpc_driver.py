"""Drives the Decision Gate gRPC API with grpcio, from stubs generated at run time.

Reads one JSON job from stdin:
  {"target": "127.0.0.1:PORT", "proto_root": ".../proto",
   "calls": [{"rpc": "Next", "request": {...}}, {"health": "service name"},
             {"reflect": "full.service.Name"}, ...]}
Requests are protobuf JSON (field names as in the .proto). Prints one JSON document with,
per call, the response as protobuf JSON (a list of messages for a server stream), the health
status name, what server reflection v1alpha (grpcio-reflection) tells without generated stubs:
{"services": [...], "file": "file defining the service", "methods": [...]}, or the error:
{"error": {"code": "NOT_FOUND", "details": ..., "kind": ...}}. The assertions live in the Rust
system tests; this script only speaks the protocol.
"""

import importlib
import json
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pool, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase)
from grpc_tools import protoc

PROTO = "decision_gate/v1/decision_gate.proto"


def generate(proto_root, out_dir):
    code = protoc.main([
        "grpc_tools.protoc", f"-I{proto_root}", f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}", PROTO,
    ])
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("decision_gate.v1.decision_gate_pb2"),
            importlib.import_module("decision_gate.v1.decision_gate_pb2_grpc"))


def to_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def reflect(channel, name):
    """Lists the services and resolves one of them, its file and its dependencies, through
    server reflection alone."""
    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    found = descriptor_pool.DescriptorPool(database).FindServiceByName(name)
    return {"services": list(services), "file": found.file.name,
            "methods": [m.name for m in found.methods]}


def main():
    job = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as out_dir:
        pb, rpc = generate(job["proto_root"], out_dir)
        service = pb.DESCRIPTOR.services_by_name["DecisionGate"]
        channel = grpc.insecure_channel(job["target"])
        stub = rpc.DecisionGateStub(channel)
        results = []
        for call in job["calls"]:
            if "health" in call:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=call["health"]))
                results.append({"health": health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)})
                continue
            try:
                if "reflect" in call:
                    results.append(reflect(channel, call["reflect"]))
                    continue
                method = service.methods_by_name[call["rpc"]]
                request = json_format.ParseDict(call["request"], getattr(pb, method.input_type.name)())
                answer = getattr(stub, call["rpc"])(request, timeout=30)
                if method.server_streaming:
                    results.append({"stream": [to_json(m) for m in answer]})
                else:
                    results.append(to_json(answer))
            except grpc.RpcError as error:
                kind = dict(error.trailing_metadata() or ()).get("dg-error-kind")
                results.append({"error": {"code": error.code().name, "details": error.details(), "kind": kind}})
        json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
