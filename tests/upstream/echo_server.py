#!/usr/bin/python3
"""gRPC test upstream implementing portico.test.Echo (see echo_pb.py).

Prints exactly one line `PORT <n>` to stdout once listening; logs go to stderr.
`--max-concurrent-streams N` caps the streams per HTTP/2 connection (grpc.max_concurrent_streams).
`--name NAME` adds the initial metadata `x-served-by: NAME` to every call (to tell upstreams apart).
`--tls-cert FILE --tls-key FILE` serve TLS (ALPN h2) instead of h2c; with `--tls-client-ca FILE` a
client certificate signed by that CA is required (mTLS).
The server also serves grpc.health.v1.Health/Check (see health_pb.py; `--no-health` leaves it out, so
checks get UNIMPLEMENTED). Known services are "" (the whole server) and portico.test.Echo; others get
NOT_FOUND. With `--health-file FILE` the answers follow that file, read at every check (absent or empty:
everything SERVING), one directive a line:
    NOT_SERVING                      the status of every known service (SERVING, NOT_SERVING, UNKNOWN, ...)
    service portico.test.Echo SERVING   the status of one service (overrides the line above)
    delay_ms 2000                    answer that much later
    error 14                         fail the check with this grpc status code
Each check is logged (`Check service='' -> SERVING`), so tests can count them.
SIGTERM/SIGINT stop the server (0.5 s grace) and exit 0.

Response shape, per method:
  * Unary: custom initial metadata (x-echo-initial, x-echoed-*) is sent first, then
    `delay_ms` is waited. With `status_code` != 0 the call fails with custom trailers;
    unless `fail_after_messages` is set it fails *without* initial metadata, which
    grpc core emits as a Trailers-Only response.
  * ServerStream: initial metadata is sent up front iff `count` > 0 or
    `fail_after_messages`; so `count=0` gives a Trailers-Only response (OK or error).
  * ClientStream / Bidi: initial metadata is sent immediately at call start.
The request metadata `x-echo-compress: gzip` has the response messages gzip-compressed (context.set_compression;
grpc core does it only when the caller's grpc-accept-encoding names gzip).
Every successful call carries the trailer `x-trailer-ok: done`. A failure with `with_details` set carries
grpc-status-details-bin: a google.rpc.Status with two details (DETAILS below).

The same methods are served as portico.test.EchoJson with the JSON codec (protobuf's canonical JSON
mapping, as a server answering application/grpc+json does): grpcio dispatches on the path only, so the
codec is told by the service name.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2, json_format, wrappers_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import echo_pb  # noqa: E402
import health_pb  # noqa: E402

log = logging.getLogger("echo_server")

MAX_MESSAGE = 64 * 1024 * 1024
SLEEP_STEP = 0.01
ERROR_TRAILERS = (("x-trailer-custom", "custom-value"), ("x-trailer-bin", b"\x00\x01\xfe\xff"))
OK_TRAILERS = (("x-trailer-ok", "done"),)
SERVED_BY = None  # --name
CODES = {c.value[0]: c for c in grpc.StatusCode}


class CallRecord:
    __slots__ = ("seen", "finished", "cancelled")

    def __init__(self):
        self.seen = self.finished = self.cancelled = False


class CancelRegistry:
    """Thread-safe record of calls that carried a request `id`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records = {}

    def start(self, call_id, context):
        if not call_id:
            return None
        with self._lock:
            rec = self._records.setdefault(call_id, CallRecord())
            rec.seen = True
        # Runs when the RPC terminates for any reason. Handlers set `finished`
        # before their status is sent, so an unfinished record means the client
        # went away (RST_STREAM, connection loss or deadline).
        if not context.add_callback(lambda: self.terminated(rec)):
            self.terminated(rec)
        return rec

    def terminated(self, rec):
        with self._lock:
            if not rec.finished:
                rec.cancelled = True

    def finish(self, rec, context):
        """Mark the call as completed by the handler, unless the client already left."""
        if rec is None:
            return
        with self._lock:
            if context.is_active() and not rec.cancelled:
                rec.finished = True
            else:
                rec.cancelled = True

    def mark_cancelled(self, rec):
        if rec is None:
            return
        with self._lock:
            if not rec.finished:
                rec.cancelled = True

    def query(self, call_id):
        with self._lock:
            rec = self._records.get(call_id)
            if rec is None:
                return echo_pb.CancelInfo()
            return echo_pb.CancelInfo(cancelled=rec.cancelled, finished=rec.finished, seen=rec.seen)


def wait_active(context, ms):
    """Sleep `ms` milliseconds in small steps; False if the call stopped being active."""
    deadline = time.monotonic() + ms / 1000.0
    while True:
        if not context.is_active():
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(SLEEP_STEP, remaining))


def request_stream_over(context):
    """After a request iterator ended: False when the client cancelled. grpcio ends the iterator normally
    also on RST_STREAM (the pending receive fails before the termination is processed), so the
    termination is given a moment to show in is_active()."""
    if not context.is_active():
        return False
    time.sleep(0.1)
    return context.is_active()


def initial_metadata(context):
    if any(k == "x-echo-compress" and v == "gzip" for k, v in context.invocation_metadata()):
        context.set_compression(grpc.Compression.Gzip)
    md = [("x-echo-initial", "yes")]
    if SERVED_BY:
        md.append(("x-served-by", SERVED_BY))
    for key, value in context.invocation_metadata():
        if key.startswith("x-echo-"):
            md.append(("x-echoed-" + key[len("x-echo-"):], value))
    return md


def metadata_dict(context):
    """Invocation metadata as a dict (repeated keys joined with ','), without -bin keys."""
    headers = {}
    for key, value in context.invocation_metadata():
        if key.endswith("-bin"):
            continue
        headers[key] = headers[key] + "," + value if key in headers else value
    return headers


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def status_details_bin(code, message):
    """A google.rpc.Status{code, message, details: DETAILS}, encoded by hand (no googleapis protos here)."""
    def field(number, data):
        return bytes([number << 3 | 2]) + _varint(len(data)) + data
    out = b"\x08" + _varint(code) + field(2, message.encode())
    for d in DETAILS:
        out += field(3, d.SerializeToString())
    return out


DETAILS = (
    any_pb2.Any(type_url="type.googleapis.com/google.protobuf.StringValue",
                value=wrappers_pb2.StringValue(value="retry later").SerializeToString()),
    any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Int32Value",
                value=wrappers_pb2.Int32Value(value=42).SerializeToString()),
)


def fail(context, code, message, with_details=False):
    trailers = ERROR_TRAILERS
    if with_details:
        trailers += (("grpc-status-details-bin", status_details_bin(code, message)),)
    context.set_trailing_metadata(trailers)
    context.abort(CODES.get(code, grpc.StatusCode.UNKNOWN), message)


class EchoService:
    def __init__(self):
        self.registry = CancelRegistry()

    def Unary(self, req, context):
        log.info("Unary id=%r delay=%d status=%d", req.id, req.delay_ms, req.status_code)
        rec = self.registry.start(req.id, context)
        trailers_only = req.status_code != 0 and not req.fail_after_messages
        if not trailers_only:
            context.send_initial_metadata(initial_metadata(context))
        if req.delay_ms > 0 and not wait_active(context, req.delay_ms):
            self.registry.mark_cancelled(rec)
            return echo_pb.EchoResponse()
        self.registry.finish(rec, context)
        if req.status_code != 0:
            fail(context, req.status_code, req.status_message, req.with_details)
        context.set_trailing_metadata(OK_TRAILERS)
        return echo_pb.EchoResponse(message=req.message, payload=req.payload or b"x" * req.size,
                                    headers=metadata_dict(context))

    def ServerStream(self, req, context):
        log.info("ServerStream id=%r count=%d interval=%d size=%d status=%d", req.id, req.count,
                 req.interval_ms, req.size, req.status_code)
        rec = self.registry.start(req.id, context)
        if req.count > 0 or req.fail_after_messages:
            context.send_initial_metadata(initial_metadata(context))
        payload = b"x" * req.size
        for i in range(req.count):
            if i > 0 and req.interval_ms > 0 and not wait_active(context, req.interval_ms):
                self.registry.mark_cancelled(rec)
                return
            if not context.is_active():
                self.registry.mark_cancelled(rec)
                return
            yield echo_pb.EchoResponse(message=req.message, index=i, payload=payload)
        self.registry.finish(rec, context)
        if req.status_code != 0:
            fail(context, req.status_code, req.status_message, req.with_details)
        context.set_trailing_metadata(OK_TRAILERS)

    def ClientStream(self, request_iterator, context):
        context.send_initial_metadata(initial_metadata(context))
        rec = None
        first = None
        messages, payloads = [], []
        for req in request_iterator:
            if first is None:
                first = req
                log.info("ClientStream id=%r", req.id)
                rec = self.registry.start(req.id, context)
            messages.append(req.message)
            payloads.append(req.payload)
        if not request_stream_over(context):
            self.registry.mark_cancelled(rec)
            return echo_pb.EchoResponse()
        self.registry.finish(rec, context)
        if first is not None and first.status_code != 0:
            fail(context, first.status_code, first.status_message, first.with_details)
        context.set_trailing_metadata(OK_TRAILERS)
        return echo_pb.EchoResponse(message="|".join(messages), index=len(messages),
                                    payload=b"".join(payloads))

    def Bidi(self, request_iterator, context):
        context.send_initial_metadata(initial_metadata(context))
        rec = None
        for i, req in enumerate(request_iterator):
            if i == 0:
                log.info("Bidi id=%r", req.id)
                rec = self.registry.start(req.id, context)
            if req.status_code != 0:
                self.registry.finish(rec, context)
                fail(context, req.status_code, req.status_message, req.with_details)
            if req.delay_ms > 0 and not wait_active(context, req.delay_ms):
                self.registry.mark_cancelled(rec)
                return
            yield echo_pb.EchoResponse(message=req.message, index=i,
                                       payload=req.payload or b"x" * req.size)
        if not request_stream_over(context):
            self.registry.mark_cancelled(rec)
            return
        self.registry.finish(rec, context)
        context.set_trailing_metadata(OK_TRAILERS)

    def CancelStatus(self, query, context):
        return self.registry.query(query.id)


def json_codec(req_cls):
    """(deserializer, serializer) of the JSON codec: protobuf's canonical JSON mapping."""
    def parse(data):
        return json_format.Parse(data.decode("utf-8"), req_cls())

    def dump(msg):
        return json_format.MessageToJson(msg, indent=None).encode("utf-8")
    return parse, dump


KNOWN_SERVICES = ("", echo_pb.SERVICE, echo_pb.JSON_SERVICE)


class HealthService:
    """grpc.health.v1.Health/Check, steered by --health-file."""

    def __init__(self, path):
        self.path = path

    def _directives(self):
        status, per_service, delay_ms, error = "SERVING", {}, 0, 0
        try:
            with open(self.path) as f:
                lines = f.read().splitlines() if self.path else []
        except FileNotFoundError:
            lines = []
        for line in lines:
            words = line.split()
            if not words:
                continue
            if words[0] == "service" and len(words) == 3:
                per_service[words[1]] = words[2]
            elif words[0] == "delay_ms" and len(words) == 2:
                delay_ms = int(words[1])
            elif words[0] == "error" and len(words) == 2:
                error = int(words[1])
            elif len(words) == 1:
                status = words[0]
        return status, per_service, delay_ms, error

    def Check(self, req, context):
        status, per_service, delay_ms, error = self._directives() if self.path else ("SERVING", {}, 0, 0)
        if delay_ms > 0 and not wait_active(context, delay_ms):
            return health_pb.HealthCheckResponse()
        if error:
            log.info("Check service=%r -> error %d", req.service, error)
            context.abort(CODES.get(error, grpc.StatusCode.UNKNOWN), "health check failed on purpose")
        if req.service not in KNOWN_SERVICES and req.service not in per_service:
            log.info("Check service=%r -> NOT_FOUND", req.service)
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {req.service!r}")
        answer = per_service.get(req.service, status)
        log.info("Check service=%r -> %s", req.service, answer)
        return health_pb.HealthCheckResponse(status=health_pb.STATUS_NAMES.index(answer))


def health_handler(path):
    service = HealthService(path)
    return grpc.method_handlers_generic_handler(health_pb.SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            service.Check, request_deserializer=health_pb.HealthCheckRequest.FromString,
            response_serializer=health_pb.HealthCheckResponse.SerializeToString),
    })


def generic_handler(service, json=False):
    factories = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for name, _, _, cstream, sstream in echo_pb.METHODS:
        req_cls, res_cls, _, _ = echo_pb.method_types(name)
        if json:
            deserialize, serialize = json_codec(req_cls)
        else:
            deserialize, serialize = req_cls.FromString, res_cls.SerializeToString
        handlers[name] = factories[(cstream, sstream)](
            getattr(service, name), request_deserializer=deserialize, response_serializer=serialize)
    return grpc.method_handlers_generic_handler(echo_pb.JSON_SERVICE if json else echo_pb.SERVICE,
                                                handlers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--max-concurrent-streams", type=int, default=0,
                        help="HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection (0 = grpc default)")
    parser.add_argument("--name", help="sent as initial metadata x-served-by on every call")
    parser.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM); needs --tls-key")
    parser.add_argument("--tls-key", help="private key (PEM) of --tls-cert")
    parser.add_argument("--tls-client-ca",
                        help="require client certificates signed by this CA (PEM; needs --tls-cert)")
    parser.add_argument("--health-file", help="steer grpc.health.v1.Health/Check (see above)")
    parser.add_argument("--no-health", action="store_true", help="do not serve grpc.health.v1.Health")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together; --tls-client-ca needs them")

    global SERVED_BY
    SERVED_BY = args.name
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s echo_server[%(process)d] %(levelname)s %(message)s")

    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
        ("grpc.max_metadata_size", 1024 * 1024),  # the gateway's header limits are what tests probe
    ]
    if args.max_concurrent_streams > 0:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers), options=options)
    service = EchoService()
    handlers = [generic_handler(service), generic_handler(service, json=True)]
    if not args.no_health:
        handlers.append(health_handler(args.health_file))
    server.add_generic_rpc_handlers(tuple(handlers))
    try:
        if args.tls_cert:
            with open(args.tls_key, "rb") as k, open(args.tls_cert, "rb") as c:
                pair = (k.read(), c.read())
            client_ca = None
            if args.tls_client_ca:
                with open(args.tls_client_ca, "rb") as f:
                    client_ca = f.read()
            creds = grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                                require_client_auth=client_ca is not None)
            port = server.add_secure_port(f"{args.host}:{args.port}", creds)
        else:
            port = server.add_insecure_port(f"{args.host}:{args.port}")
    except RuntimeError as exc:
        log.error("cannot bind %s:%d: %s", args.host, args.port, exc)
        return 1
    if port == 0:
        log.error("cannot bind %s:%d", args.host, args.port)
        return 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    server.start()
    print(f"PORT {port}", flush=True)
    log.info("listening on %s:%d", args.host, port)
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    server.stop(0.5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
