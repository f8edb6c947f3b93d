"""Runtime-built protobuf definitions for grpc.health.v1 (Debian ships no grpc_health module).

Built like echo_pb.py, from a FileDescriptorProto registered in the default pool. Equivalent .proto:

    syntax = "proto3";
    package grpc.health.v1;
    message HealthCheckRequest { string service = 1; }
    message HealthCheckResponse {
      enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
      ServingStatus status = 1;
    }
    service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""

from google.protobuf import descriptor_pb2, message_factory

PACKAGE = "grpc.health.v1"
SERVICE = PACKAGE + ".Health"
FILE_NAME = "grpc/health/v1/health.proto"
CHECK_PATH = f"/{SERVICE}/Check"

_F = descriptor_pb2.FieldDescriptorProto
STATUS_NAMES = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]


def _build():
    fdp = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    req = fdp.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="service")
    resp = fdp.message_type.add(name="HealthCheckResponse")
    enum = resp.enum_type.add(name="ServingStatus")
    for number, name in enumerate(STATUS_NAMES):
        enum.value.add(name=name, number=number)
    resp.field.add(name="status", number=1, type=_F.TYPE_ENUM, label=_F.LABEL_OPTIONAL, json_name="status",
                   type_name=f".{PACKAGE}.HealthCheckResponse.ServingStatus")
    svc = fdp.service.add(name="Health")
    svc.method.add(name="Check", input_type=f".{PACKAGE}.HealthCheckRequest",
                   output_type=f".{PACKAGE}.HealthCheckResponse")
    return fdp


FILE_DESCRIPTOR_PROTO = _build()
_classes = message_factory.GetMessages([FILE_DESCRIPTOR_PROTO])
HealthCheckRequest = _classes[f"{PACKAGE}.HealthCheckRequest"]
HealthCheckResponse = _classes[f"{PACKAGE}.HealthCheckResponse"]
