"""GET /metrics on the admin listener: after a scripted mix of calls (OK, upstream errors, a cancel, a
deadline, a preflight, a refused origin, a WebSocket call, HTTP/2 and native gRPC, local answers, reloads)
every counter and histogram count has exactly the expected value, and the scrape parses with Debian's
python3-prometheus-client parsers (Prometheus text 0.0.4 and OpenMetrics 1.0).
"""

import os
import signal
import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families as text_families

import echo_pb
import grpcweb
from conftest import free_port
from echo_pb import EchoRequest
from wsclient import GrpcWs, H2Tunnel, H2WebSocket

SVC = "portico.test.Echo"
UNARY, STREAM, BIDI = f"/{SVC}/Unary", f"/{SVC}/ServerStream", f"/{SVC}/Bidi"
ORIGIN = "https://app.example"

CONFIG = """
workers: {workers}
log_level: debug
listeners: ['127.0.0.1:{listen_port}']
admin: {{address: '127.0.0.1:{admin_port}'{token}}}
upstreams: [{{name: echo, endpoints: ['127.0.0.1:{{upstream_port}}']}}]
routes: [{{prefix: /{svc}/, upstream: echo}}]
cors: {{allow_origins: ['{origin}']}}
{extra}
"""


def gateway(portico, extra="", token="", workers=2):
    admin = free_port()
    cfg = CONFIG.format(listen_port="{listen_port}", admin_port=admin, svc=SVC, origin=ORIGIN, extra=extra, workers=workers,
                        token=f", token: {token}" if token else "")
    gw = portico(config=cfg)
    assert gw.wait_log(r"admin API listening on 127\.0\.0\.1:%d" % admin)
    gw.admin_port = admin
    return gw


def scrape(gw, accept=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


class Samples:
    """A scrape parsed by prometheus_client's text parser: value lookups by name and labels."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_families(text)}
        self.values = {}
        for fam in self.families.values():
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in self.values, f"duplicate series {key}"
                self.values[key] = s.value

    def get(self, name, **labels):
        return self.values.get((name, tuple(sorted(labels.items()))), 0)

    def series(self, name):
        return {k[1]: v for k, v in self.values.items() if k[0] == name}


def metrics(gw):
    status, ctype, text = scrape(gw)
    assert status == 200, text
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    return Samples(text)


def wait_metric(gw, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(gw)
        if pred(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def meth(method, typ):
    return {"grpc_service": SVC, "grpc_method": method, "grpc_type": typ}


def test_scripted_mix(portico, echo_server):
    gw = gateway(portico)
    body_bytes = {"http1": 0, "text": 0}

    def web(req, path=UNARY, **kw):
        status, headers, msgs, trailers = grpcweb.call(gw.port, path, req, timeout=10, **kw)
        data = b"".join(grpcweb.frame(r) for r in (req if isinstance(req, list) else [req]))
        body_bytes["text" if kw.get("text") else "http1"] += len(grpcweb.encode_text(data) if kw.get("text") else data)
        return status, headers, msgs, trailers

    # three OK unary calls over HTTP/1.1 (one from an allowed origin), one in text mode
    for i in range(3):
        st, _, msgs, tr = web(EchoRequest(message=f"m{i}"), headers={"Origin": ORIGIN} if i == 0 else ())
        assert st == 200 and tr["grpc-status"] == "0" and len(msgs) == 1
    st, _, _, tr = web(EchoRequest(message="text"), text=True)
    assert tr["grpc-status"] == "0"
    # an error from the upstream (trailers-only)
    st, h, _, _ = web(EchoRequest(status_code=5, status_message="nope"))
    assert h["grpc-status"] == "5"
    # a server stream of three messages
    st, _, msgs, tr = web(EchoRequest(count=3), path=STREAM)
    assert len(msgs) == 3 and tr["grpc-status"] == "0"
    # a deadline: the upstream takes 3 s, the client allows 200 ms
    st, h, _, tr = web(EchoRequest(delay_ms=3000, id="m-deadline"), headers={"grpc-timeout": "200m"})
    assert grpcweb.grpc_status(h, tr)[0] == 4
    # a cancel: the client goes away while the upstream works
    conn = gw.connect()
    req = EchoRequest(delay_ms=5000, id="m-cancel")
    conn.request("POST", UNARY, grpcweb.request_headers(), grpcweb.frame(req))
    body_bytes["http1"] += len(grpcweb.frame(req))
    assert echo_server.wait_cancel_status("m-cancel", "seen").seen
    conn.close()
    assert echo_server.wait_cancel_status("m-cancel").cancelled
    # a preflight, a refused origin, a health check, a path no route matches
    conn = gw.connect()
    conn.request("OPTIONS", UNARY, [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")], content_length=False)
    assert conn.response(10)[0].status == 204
    conn.request("POST", UNARY, grpcweb.request_headers(extra=[("Origin", "https://evil.example")]), grpcweb.frame(req))
    assert conn.response(10)[0].status == 403
    conn.close()
    conn = gw.connect()
    conn.request("GET", "/healthz")
    assert conn.response(10)[0].status == 200
    conn.close()
    st, h, _, _ = grpcweb.call(gw.port, "/nowhere.Svc/Method", EchoRequest(message="x"))
    assert h["grpc-status"] == "12"
    # a WebSocket call
    c = GrpcWs(gw.port, UNARY, origin=ORIGIN).open()
    c.send(EchoRequest(message="ws"))
    c.end()
    c.finish()
    assert c.status == 0
    ws_bytes = len(grpcweb.frame(EchoRequest(message="ws")))
    # a WebSocket over HTTP/2 (RFC 8441 extended CONNECT): a bidi call of two messages each way
    tunnel = H2Tunnel(gw.port)
    try:
        c = GrpcWs(gw.port, BIDI, origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        for i in range(2):
            c.send(EchoRequest(message=f"b{i}"))
            assert c.read_until(lambda c, n=i + 1: len(c.messages) >= n)
        c.end()
        assert c.finish().status == 0 and len(c.messages) == 2
    finally:
        tunnel.close()
    ws_bytes += 2 * len(grpcweb.frame(EchoRequest(message="b0")))
    # gRPC-Web over HTTP/2, and native gRPC over HTTP/2 (grpcio)
    r = grpcweb.h2_request(gw.port, [(":method", "POST"), (":path", UNARY), (":scheme", "http"), (":authority", "gw"),
                                     ("content-type", "application/grpc-web+proto")], grpcweb.frame(EchoRequest(message="h2")))
    assert r.ended and r.headers is not None
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        out = ch.unary_unary(UNARY, request_serializer=EchoRequest.SerializeToString,
                             response_deserializer=echo_pb.EchoResponse.FromString)(EchoRequest(message="native"), timeout=10)
        assert out.message == "native"

    m = wait_metric(gw, lambda m: m.get("grpc_server_handled_total", grpc_code="Canceled", **meth("Unary", "unary")) == 1 and
                    m.get("portico_connections_active") == 0)
    u, s, b = meth("Unary", "unary"), meth("ServerStream", "server_stream"), meth("Bidi", "bidi_stream")
    # per method, go-grpc-prometheus names and labels; the type learned from the calls
    assert m.get("grpc_server_started_total", **u) == 10
    assert m.get("grpc_server_handled_total", grpc_code="OK", **u) == 7
    assert m.get("grpc_server_handled_total", grpc_code="NotFound", **u) == 1
    assert m.get("grpc_server_handled_total", grpc_code="DeadlineExceeded", **u) == 1
    assert m.get("grpc_server_handled_total", grpc_code="Canceled", **u) == 1
    assert m.get("grpc_server_msg_received_total", **u) == 10  # the cancelled call's message was sent whole too
    assert m.get("grpc_server_msg_sent_total", **u) == 7
    assert m.get("grpc_server_handling_seconds_count", **u) == 10
    assert m.get("grpc_server_handling_seconds_bucket", le="+Inf", **u) == 10
    assert m.get("grpc_server_started_total", **s) == 1
    assert m.get("grpc_server_handled_total", grpc_code="OK", **s) == 1
    assert m.get("grpc_server_msg_sent_total", **s) == 3
    # two messages each way: the Bidi method was learned as bidi_stream
    assert m.get("grpc_server_started_total", **b) == 1
    assert m.get("grpc_server_handled_total", grpc_code="OK", **b) == 1
    assert (m.get("grpc_server_msg_received_total", **b), m.get("grpc_server_msg_sent_total", **b)) == (2, 2)
    # the refused origin made no call; the path without a route made no method series at all
    assert not any(dict(k).get("grpc_service") == "nowhere.Svc" for k in m.series("grpc_server_started_total"))
    assert set(dict(k)["grpc_method"] for k in m.series("grpc_server_started_total")) == {"Unary", "ServerStream", "Bidi"}
    # the gateway's latency by transport and protocol (its count is the calls), bytes as the clients sent them
    calls = {(dict(k)["transport"], dict(k)["protocol"]): v for k, v in m.series("portico_call_duration_seconds_count").items()}
    assert calls == {("http1", "grpc-web"): 7, ("http1", "grpc-web-text"): 1, ("websocket", "grpc-web"): 2,
                     ("h2", "grpc-web"): 1, ("h2", "grpc"): 1}
    assert m.get("portico_request_bytes_total", transport="http1", protocol="grpc-web") == body_bytes["http1"]
    assert m.get("portico_request_bytes_total", transport="http1", protocol="grpc-web-text") == body_bytes["text"]
    assert m.get("portico_request_bytes_total", transport="websocket", protocol="grpc-web") == ws_bytes
    assert m.get("portico_response_messages_total", transport="http1", protocol="grpc-web") == 6
    assert m.get("portico_response_bytes_total", transport="websocket", protocol="grpc-web") > 0
    assert m.get("portico_response_messages_total", transport="websocket", protocol="grpc-web") == 3
    assert m.get("portico_upstream_duration_seconds_count", upstream="echo") == 12
    assert m.get("portico_upstream_connect_failures_total", upstream="echo") == 0
    connects = m.get("portico_upstream_connects_total", upstream="echo")
    assert 1 <= connects <= 2  # one pool per worker
    assert m.get("portico_upstream_connections", upstream="echo", state="ready") == connects
    assert m.get("portico_upstream_connections", upstream="echo", state="connecting") == 0
    assert m.get("portico_calls_active") == 0
    # every client connection closed; accepted: the fixture's wait for the port, 8 grpcweb.call()s, the cancelled
    # call's, the preflight's (the refused origin's too), the health check's, the WebSocket upgrade's, the HTTP/2
    # tunnel's, h2_request's, grpcio's
    assert m.get("portico_connections_active") == 0
    assert m.get("portico_connections_total") == 16
    # answers the gateway made itself
    assert m.get("portico_local_responses_total", status="204") == 1
    assert m.get("portico_local_responses_total", status="403") == 1
    assert m.get("portico_local_responses_total", status="200") == 1  # the health check
    assert m.get("portico_local_responses_total", status="200", grpc_code="Unimplemented") == 1
    # filter outcomes (the per-worker counters /status shows too)
    assert m.get("portico_cors_preflights_total") == 1
    assert m.get("portico_cors_denied_total") == 1
    assert m.get("portico_cors_allowed_total") == 3  # the HTTP call and the two WebSockets from the allowed origin
    assert m.get("portico_health_total") == 1
    assert m.get("portico_websocket_upgrades_total") == 2  # an HTTP/1.1 upgrade and an extended CONNECT
    assert m.get("portico_websocket_refused_total") == 0
    assert m.get("portico_request_id_generated_total") == 13  # the 12 calls and the request without a route
    # the configuration in service and the process
    assert m.get("portico_config_version") == 1
    assert m.get("portico_config_reloads_total", result="ok") == 0
    assert m.get("portico_workers") == 2
    assert m.get("portico_build_info", version=m.families["portico_build_info"].samples[0].labels["version"]) == 1
    assert m.get("process_resident_memory_bytes") > 1 << 20
    assert m.get("process_virtual_memory_bytes") > m.get("process_resident_memory_bytes")
    assert 5 < m.get("process_open_fds") < m.get("process_max_fds")
    assert m.get("process_cpu_seconds_total") > 0
    assert m.get("process_start_time_seconds") > time.time() - 600
    for fam in ("grpc_server_handling_seconds", "portico_call_duration_seconds", "portico_upstream_duration_seconds"):
        assert m.families[fam].type == "histogram"
    assert m.families["grpc_server_started"].type == "counter"

    # reloads: one that applies, one that is refused
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 2 applied")
    cfg_path = gw.args[gw.args.index("--config") + 1]
    good = open(cfg_path).read()
    with open(cfg_path, "w") as f:
        f.write(good + "limits: {max_headers: nope}\n")
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration reload \(SIGHUP\) failed")
    with open(cfg_path, "w") as f:
        f.write(good)
    m = metrics(gw)
    assert m.get("portico_config_version") == 2
    assert m.get("portico_config_reloads_total", result="ok") == 1
    assert m.get("portico_config_reloads_total", result="failed") == 1
    # and through the admin API: an origin added, then a configuration it refuses
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}/config/cors/origins", data=b"https://b.example", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    req = urllib.request.Request(f"http://127.0.0.1:{gw.admin_port}/config", data=b"limits: {max_headers: nope}\n", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 400
    m = metrics(gw)
    assert m.get("portico_config_version") == 3
    assert m.get("portico_config_reloads_total", result="ok") == 2
    assert m.get("portico_config_reloads_total", result="failed") == 2
    assert m.get("grpc_server_started_total", **u) == 10  # a reload keeps the counts

    # OpenMetrics when asked for, parsed by the strict parser
    status, ctype, text = scrape(gw, accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in om_families(text)}
    started = {tuple(sorted(s.labels.items())): s.value for s in fams["grpc_server_started"].samples}
    assert started[tuple(sorted(u.items()))] == 10


def test_cardinality_cap_and_token(portico):
    token = "metrics-token-1"
    gw = gateway(portico, "metrics: {max_methods: 1}\n", token=token, workers=1)
    for _ in range(2):
        assert grpcweb.call(gw.port, UNARY, EchoRequest(message="a"))[3]["grpc-status"] == "0"
    grpcweb.call(gw.port, STREAM, EchoRequest(count=0))
    grpcweb.call(gw.port, f"/{SVC}/No%20Such", EchoRequest())
    # the admin token guards /metrics like the rest of the admin API (Prometheus: authorization.credentials)
    assert scrape(gw)[0] == 401
    status, _, text = scrape(gw, token=token)
    assert status == 200
    m = Samples(text)
    assert m.get("grpc_server_started_total", **meth("Unary", "unary")) == 2
    other = {"grpc_service": "other", "grpc_method": "other", "grpc_type": "unary"}
    assert m.get("grpc_server_started_total", **other) == 2  # ServerStream (past the cap) and the odd path
    assert m.get("grpc_server_handled_total", grpc_code="Unimplemented", **other) == 1
    assert len(m.series("grpc_server_started_total")) == 2


def test_connect(portico, echo_server):
    """Connect calls (a unary POST, an upstream error, a GET) and a Connect error the gateway makes itself: their own
    protocol label, the HTTP status of Connect's error table for the local answer."""
    from test_connect import get, get_query, unary

    gw = gateway(portico, workers=1)
    ok, err = EchoRequest(message="c"), EchoRequest(status_code=5, status_message="nope")
    assert unary(gw.port, UNARY, ok).status == 200
    assert unary(gw.port, UNARY, err).status == 404
    assert get(gw.port, UNARY, get_query(EchoRequest(message="g"))).status == 200
    assert unary(gw.port, "/other.Svc/Method", EchoRequest()).status == 501
    m = wait_metric(gw, lambda m: m.get("grpc_server_handled_total", grpc_code="NotFound", **meth("Unary", "unary")) == 1)
    u = meth("Unary", "unary")
    assert m.get("grpc_server_started_total", **u) == 3
    assert m.get("grpc_server_handled_total", grpc_code="OK", **u) == 2
    assert (m.get("grpc_server_msg_received_total", **u), m.get("grpc_server_msg_sent_total", **u)) == (3, 2)
    calls = {(dict(k)["transport"], dict(k)["protocol"]): v for k, v in m.series("portico_call_duration_seconds_count").items()}
    assert calls == {("http1", "connect"): 3}
    assert m.get("portico_request_messages_total", transport="http1", protocol="connect") == 3
    assert m.get("portico_local_responses_total", status="501", grpc_code="Unimplemented") == 1
    assert m.get("portico_calls_active") == 0


def test_limit_counters(portico):
    """The limits' refusals (the counters of /status "limits") are metrics too."""
    gw = gateway(portico, "limits: {max_message_size: 1KiB}\n", workers=1)
    st, h, _, tr = grpcweb.call(gw.port, UNARY, EchoRequest(message="x" * 2048))
    assert grpcweb.grpc_status(h, tr)[0] == 8
    m = wait_metric(gw, lambda m: m.get("portico_messages_too_large_total") == 1)
    assert m.get("portico_messages_too_large_total") == 1
    assert m.get("grpc_server_handled_total", grpc_code="ResourceExhausted", **meth("Unary", "unary")) == 1
    assert m.get("portico_connections_refused_total") == 0
    assert m.families["portico_h2_rapid_resets"].type == "counter"
