"""Runtime-built protobuf definitions for the portico.test.Echo test service.

No protoc is available, so the .proto is expressed as a FileDescriptorProto and
registered in the default descriptor pool. Equivalent .proto:

    syntax = "proto3";
    package portico.test;
    message EchoRequest {
      string message = 1; int32 count = 2; int32 interval_ms = 3; int32 size = 4;
      int32 status_code = 5; string status_message = 6; int32 delay_ms = 7;
      string id = 8; bytes payload = 9; bool fail_after_messages = 10;
      bool with_details = 11;
    }
    message EchoResponse {
      string message = 1; int32 index = 2; bytes payload = 3;
      map<string, string> headers = 4;
    }
    message CancelQuery { string id = 1; }
    message CancelInfo { bool cancelled = 1; bool finished = 2; bool seen = 3; }
    service Echo {
      rpc Unary(EchoRequest) returns (EchoResponse) { option idempotency_level = NO_SIDE_EFFECTS; }
      rpc ServerStream(EchoRequest) returns (stream EchoResponse);
      rpc ClientStream(stream EchoRequest) returns (EchoResponse);
      rpc Bidi(stream EchoRequest) returns (stream EchoResponse);
      rpc CancelStatus(CancelQuery) returns (CancelInfo);
    }
    service EchoJson { the same methods }   // served with the JSON codec (echo_server.py)

Unary is marked side-effect free so that Connect clients may call it with GET (connect-web's useHttpGet).
"""

from google.protobuf import descriptor_pb2, message_factory

PACKAGE = "portico.test"
SERVICE = PACKAGE + ".Echo"
FILE_NAME = "portico/test/echo.proto"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _INT32, _BYTES, _BOOL, _MESSAGE = (
    _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_MESSAGE)

# (method name, request, response, client streaming, server streaming)
METHODS = [
    ("Unary", "EchoRequest", "EchoResponse", False, False),
    ("ServerStream", "EchoRequest", "EchoResponse", False, True),
    ("ClientStream", "EchoRequest", "EchoResponse", True, False),
    ("Bidi", "EchoRequest", "EchoResponse", True, True),
    ("CancelStatus", "CancelQuery", "CancelInfo", False, False),
]


def _message(fdp, name, fields):
    msg = fdp.message_type.add(name=name)
    for number, (fname, ftype) in enumerate(fields, start=1):
        msg.field.add(name=fname, number=number, type=ftype, label=_F.LABEL_OPTIONAL,
                      json_name=_json_name(fname))
    return msg


def _json_name(name):
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _build():
    fdp = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    _message(fdp, "EchoRequest", [
        ("message", _STRING), ("count", _INT32), ("interval_ms", _INT32), ("size", _INT32),
        ("status_code", _INT32), ("status_message", _STRING), ("delay_ms", _INT32),
        ("id", _STRING), ("payload", _BYTES), ("fail_after_messages", _BOOL),
        ("with_details", _BOOL),
    ])
    resp = _message(fdp, "EchoResponse", [
        ("message", _STRING), ("index", _INT32), ("payload", _BYTES),
    ])
    entry = resp.nested_type.add(name="HeadersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_STRING, label=_F.LABEL_OPTIONAL, json_name="key")
    entry.field.add(name="value", number=2, type=_STRING, label=_F.LABEL_OPTIONAL,
                    json_name="value")
    resp.field.add(name="headers", number=4, type=_MESSAGE, label=_F.LABEL_REPEATED,
                   type_name=f".{PACKAGE}.EchoResponse.HeadersEntry", json_name="headers")
    _message(fdp, "CancelQuery", [("id", _STRING)])
    _message(fdp, "CancelInfo", [("cancelled", _BOOL), ("finished", _BOOL), ("seen", _BOOL)])

    for service in ("Echo", "EchoJson"):
        svc = fdp.service.add(name=service)
        for name, req, res, cstream, sstream in METHODS:
            m = svc.method.add(name=name, input_type=f".{PACKAGE}.{req}", output_type=f".{PACKAGE}.{res}",
                               client_streaming=cstream, server_streaming=sstream)
            if name == "Unary":
                m.options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return fdp


FILE_DESCRIPTOR_PROTO = _build()
# Serialized FileDescriptorProto (e.g. for building a FileDescriptorSet or for JS tooling).
FILE_DESCRIPTOR_BYTES = FILE_DESCRIPTOR_PROTO.SerializeToString()

_classes = message_factory.GetMessages([FILE_DESCRIPTOR_PROTO])
EchoRequest = _classes[f"{PACKAGE}.EchoRequest"]
EchoResponse = _classes[f"{PACKAGE}.EchoResponse"]
CancelQuery = _classes[f"{PACKAGE}.CancelQuery"]
CancelInfo = _classes[f"{PACKAGE}.CancelInfo"]

_BY_NAME = {"EchoRequest": EchoRequest, "EchoResponse": EchoResponse,
            "CancelQuery": CancelQuery, "CancelInfo": CancelInfo}


# The same methods with the JSON codec (application/grpc+json; see echo_server.py).
JSON_SERVICE = PACKAGE + ".EchoJson"


def method_path(name, service=SERVICE):
    """Full gRPC :path for a method of the Echo service, e.g. '/portico.test.Echo/Unary'."""
    return f"/{service}/{name}"


def method_types(name):
    """(request class, response class, client_streaming, server_streaming) for a method."""
    for mname, req, res, cstream, sstream in METHODS:
        if mname == name:
            return _BY_NAME[req], _BY_NAME[res], cstream, sstream
    raise KeyError(name)


if __name__ == "__main__":
    import sys
    # Emit a FileDescriptorSet (binary) for external tooling: `echo_pb.py > echo.pb`.
    sys.stdout.buffer.write(
        descriptor_pb2.FileDescriptorSet(file=[FILE_DESCRIPTOR_PROTO]).SerializeToString())
