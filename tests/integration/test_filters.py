"""The request pipeline's filters against the real grpcio upstream (whose Echo returns the metadata it
received): request ids, W3C trace context, header rules, and where their values show up (upstream, the
response head, trailers, gateway-made errors, the log).
"""

import re

import grpc
import pytest

import echo_pb
import grpcweb
from echo_pb import EchoRequest, EchoResponse

UNARY = "/portico.test.Echo/Unary"
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def echo(gw, headers=None, path=UNARY, text=False):
    status, head, msgs, trailers = grpcweb.call(gw.port, path, EchoRequest(message="m"), headers=headers or {}, text=text)
    assert status == 200, (status, head)
    return head, (EchoResponse.FromString(msgs[0]) if msgs else None), trailers


# --------------------------------------------------------------------------- request ids


def test_request_id_generated_forwarded_returned_and_logged(portico):
    gw = portico()
    head, resp, trailers = echo(gw)
    rid = head["x-request-id"]
    assert UUID4.fullmatch(rid), rid
    assert resp.headers["x-request-id"] == rid  # what the upstream received
    assert trailers["grpc-status"] == "0"
    assert gw.wait_log(rf"call /portico\.test\.Echo/Unary from 127\.0\.0\.1:\d+ id {rid} trace [0-9a-f]{{32}} span [0-9a-f]{{16}}: OK")
    head2, _, _ = echo(gw)
    assert head2["x-request-id"] != rid


@pytest.mark.parametrize("incoming, kept", [
    ("req-123_abc.DEF:9/x+y=", True),
    ("a" * 128, True),
    ("a" * 129, False),        # longer than request_id.max_length
    ("has space", False),
    ("quote\"d", False),
    ("comma,list", False),
])
def test_request_id_incoming(portico, incoming, kept):
    gw = portico()
    head, resp, _ = echo(gw, {"X-Request-Id": incoming})
    rid = head["x-request-id"]
    assert (rid == incoming) == kept, rid
    if not kept:
        assert UUID4.fullmatch(rid)
    assert resp.headers["x-request-id"] == rid  # one value upstream, never the client's invalid one


ECHO_ONLY = """workers: 1
log_level: debug
listeners: ['127.0.0.1:{listen_port}']
upstreams: [{name: echo, endpoints: ['127.0.0.1:{upstream_port}']}]
routes: [{prefix: /portico.test.Echo/, upstream: echo}]
"""


def test_request_id_on_gateway_errors(portico):
    gw = portico(config=ECHO_ONLY)
    # no route: answered by the pipeline itself; a deadline: answered by the call
    status, head, _, _ = grpcweb.call(gw.port, "/nope.Service/Method", EchoRequest(), headers={"X-Request-Id": "err-1"})
    assert status == 200 and head["grpc-status"] == "12" and head["x-request-id"] == "err-1"
    status, head, _, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(delay_ms=2000),
                                             headers={"X-Request-Id": "err-2", "grpc-timeout": "100m"})
    assert trailers["grpc-status"] == "4" and head["x-request-id"] == "err-2"  # the head came from upstream
    assert gw.wait_log(r"call /portico\.test\.Echo/Unary from .* id err-2 trace .*: DEADLINE_EXCEEDED")
    assert gw.wait_log(r"request /nope\.Service/Method from .* id err-1: grpc-status 12")


def test_request_id_over_h2_native_grpc(portico):
    gw = portico()
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        call = ch.unary_unary(echo_pb.method_path("Unary"), request_serializer=EchoRequest.SerializeToString,
                              response_deserializer=EchoResponse.FromString)
        resp, c = call.with_call(EchoRequest(message="n"), metadata=[("x-request-id", "native-7")], timeout=10)
        assert resp.headers["x-request-id"] == "native-7"
        assert dict(c.initial_metadata())["x-request-id"] == "native-7"
        assert TRACEPARENT.fullmatch(resp.headers["traceparent"])


# --------------------------------------------------------------------------- trace context


def test_trace_started_when_absent(portico):
    gw = portico()
    _, resp, _ = echo(gw)
    m = TRACEPARENT.fullmatch(resp.headers["traceparent"])
    assert m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16
    assert m.group(3) == "00"  # trace.sampled is false by default
    assert "tracestate" not in resp.headers


def test_trace_continued_with_a_new_span(portico):
    gw = portico()
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    _, resp, _ = echo(gw, {"traceparent": tp, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"})
    m = TRACEPARENT.fullmatch(resp.headers["traceparent"])
    assert m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"  # the same trace
    assert m.group(2) != "00f067aa0ba902b7"                   # the gateway's own span is the parent now
    assert m.group(3) == "01"                                 # flags kept
    assert resp.headers["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    assert gw.wait_log(rf"trace 4bf92f3577b34da6a3ce929d0e0e4736 span {m.group(2)}: OK")


@pytest.mark.parametrize("tp", [
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   # all-zero parent id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   # version ff
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # version 00 with more
    "garbage",
])
def test_trace_invalid_starts_a_new_trace_and_drops_tracestate(portico, tp):
    gw = portico()
    _, resp, _ = echo(gw, {"traceparent": tp, "tracestate": "rojo=00f067aa0ba902b7"})
    m = TRACEPARENT.fullmatch(resp.headers["traceparent"])
    assert m and m.group(1) != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "tracestate" not in resp.headers


def test_trace_future_version_is_continued(portico):
    gw = portico()
    _, resp, _ = echo(gw, {"traceparent": "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like"})
    m = TRACEPARENT.fullmatch(resp.headers["traceparent"])
    assert m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736" and m.group(3) == "01"


def test_invalid_tracestate_dropped(portico):
    gw = portico()
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    _, resp, _ = echo(gw, {"traceparent": tp, "tracestate": "Bad Key=1"})
    assert TRACEPARENT.fullmatch(resp.headers["traceparent"]).group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "tracestate" not in resp.headers


# --------------------------------------------------------------------------- header rules

RULES = """workers: 1
log_level: debug
listeners: ['127.0.0.1:{listen_port}']
upstreams: [{name: echo, endpoints: ['127.0.0.1:{upstream_port}']}]
headers:
  request:
    - {set: x-forwarded-origin, value: "%REQ(origin)% from %CLIENT_IP%"}
    - {remove: x-debug}
    - {rename: x-old, to: x-new}
  response:
    - {set: x-served-by-route, value: "%ROUTE% -> %UPSTREAM%"}
    - {remove: x-echo-initial}
  trailers:
    - {add: x-trailer-rid, value: "%REQUEST_ID%"}
routes:
  - prefix: /portico.test.Echo/
    upstream: echo
    headers:
      request: [{add: x-route-rule, value: "rid=%REQUEST_ID%"}]
      response: [{set: x-echo-of-client, value: "%REQ(x-client)%/%RESP(x-trailer-ok)%"}]
"""


def test_header_rules_both_ways(portico):
    gw = portico(config=RULES)
    origin = f"http://127.0.0.1:{gw.port}"  # same origin: needs no CORS policy
    head, resp, trailers = echo(gw, {"Origin": origin, "x-debug": "1", "x-old": "v", "x-client": "c1\\r\\nx-evil: 1",
                                     "X-Request-Id": "rules-1"})
    up = resp.headers
    assert up["x-forwarded-origin"] == f"{origin} from 127.0.0.1"
    assert "x-debug" not in up and "x-old" not in up and up["x-new"] == "v"
    assert up["x-route-rule"] == "rid=rules-1"           # the route's rules run after the global ones
    assert head["x-served-by-route"] == "/portico.test.Echo/ -> echo"
    assert "x-echo-initial" not in head                   # removed from what the upstream sent
    assert head["x-echo-of-client"] == "c1\\r\\nx-evil: 1/"  # (sent as text: the client's value is opaque)
    assert trailers["x-trailer-rid"] == "rules-1"
    assert trailers["x-trailer-ok"] == "done"


@pytest.mark.parametrize("rule, message", [
    ("{set: content-length, value: '1'}", 'cannot set header "content-length": the gateway frames each message itself'),
    ("{set: ':path', value: /x}", 'cannot set header ":path": it is a pseudo-header'),
    ("{add: connection, value: close}", 'cannot add header "connection": it is a hop-by-hop header'),
    ("{set: x-a, value: '%RESP(x)%'}", "%RESP(x)% cannot be used in request rules: there is no response yet"),
    ("{set: x-a, value: '%NOPE%'}", "unknown variable %NOPE%"),
])
def test_header_rule_config_errors(tmp_path, rule, message):
    import subprocess
    from conftest import _portico_binary
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"headers:\n  request:\n    - {rule}\n")
    out = subprocess.run([str(_portico_binary()), "--config", str(cfg), "--check-config"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert re.search(rf"^portico: {re.escape(str(cfg))}:3: headers\.request\[0\](\.value|\.set|\.add)?: ", out.stderr), out.stderr
    assert message in out.stderr, out.stderr
