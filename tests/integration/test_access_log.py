"""The access log: one JSON line per call and per locally answered request, with the right fields for each
kind (OK, upstream error, cancel, deadline, preflight, refused origin, WebSocket, HTTP/2, native gRPC, JWT
subject); template lines; a stalled output (a FIFO nobody reads) never slows calls and its drops are counted;
SIGUSR1 reopens after a rename (logrotate); live reload of the section.
"""

import base64
import json
import os
import re
import signal
import time
import urllib.request

import grpc
import jwt
import pytest

import echo_pb
import grpcweb
from conftest import free_port
from echo_pb import EchoRequest
from wsclient import GrpcWs, H2Tunnel, H2WebSocket

SVC = "portico.test.Echo"
UNARY, STREAM = f"/{SVC}/Unary", f"/{SVC}/ServerStream"
ORIGIN = "https://app.example"
SECRET = b"access-log-test-secret-0123456789abcdef"

CONFIG = """
workers: {workers}
log_level: debug
listeners: ['127.0.0.1:{{listen_port}}']
admin: {{address: '127.0.0.1:{admin_port}'}}
upstreams: [{{name: echo, endpoints: ['127.0.0.1:{{upstream_port}}']}}]
routes: [{{prefix: /{svc}/, upstream: echo}}]
cors: {{allow_origins: ['{origin}']}}
jwt:
  providers: [{{name: main, jwks_file: {jwks}}}]
  default: {{providers: [main], optional: true}}
access_log:
{access_log}
"""


def token(sub):
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256", headers={"kid": "k1"})


def gateway(portico, tmp_path, access_log, workers=2):
    jwks = tmp_path / "jwks.json"
    k = base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]}))
    admin = free_port()
    body = "\n".join("  " + line for line in access_log.strip().splitlines())
    gw = portico(config=CONFIG.format(workers=workers, admin_port=admin, svc=SVC, origin=ORIGIN, jwks=jwks, access_log=body))
    gw.admin_port = admin
    gw.config_path = gw.args[gw.args.index("--config") + 1]
    return gw


def read_lines(path, n, timeout=5.0):
    """The first n lines of the file, once they are there (the writer is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
        lines = text.splitlines()
        if len(lines) >= n or time.monotonic() > deadline:
            assert text == "" or text.endswith("\n"), "a line was written in pieces"
            return lines
        time.sleep(0.05)


def status(gw):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/status", timeout=10) as r:
        return json.loads(r.read())


KEYS = ["time", "kind", "request_id", "trace_id", "peer", "origin", "http_method", "path", "protocol", "transport",
        "encoding", "grpc_status", "grpc_message", "http_status", "bytes_in", "bytes_out", "messages_in", "messages_out",
        "ttfb_ms", "duration_ms", "upstream", "upstream_host", "route", "jwt_sub"]


def test_json_lines_for_each_kind(portico, tmp_path, echo_server):
    log = tmp_path / "access.log"
    gw = gateway(portico, tmp_path, f"path: {log}")

    # 1 OK, from an allowed origin, with a token
    tok = token("user-7")
    st, h, msgs, tr = grpcweb.call(gw.port, UNARY, EchoRequest(message="one"),
                                   headers={"Origin": ORIGIN, "Authorization": f"Bearer {tok}", "x-request-id": "rid-1"})
    assert tr["grpc-status"] == "0"
    # 2 an upstream error with a message that needs percent-encoding, text mode
    st, h, _, tr = grpcweb.call(gw.port, UNARY, EchoRequest(status_code=5, status_message="no such thing: é"), text=True,
                                headers={"x-request-id": "rid-2"})
    assert grpcweb.grpc_status(h, tr)[0] == 5
    # 3 a server stream
    st, h, msgs, tr = grpcweb.call(gw.port, STREAM, EchoRequest(count=3), headers={"x-request-id": "rid-3"})
    assert len(msgs) == 3
    # 4 a deadline
    st, h, _, tr = grpcweb.call(gw.port, UNARY, EchoRequest(delay_ms=3000), headers={"grpc-timeout": "200m", "x-request-id": "rid-4"})
    assert grpcweb.grpc_status(h, tr)[0] == 4
    # 5 a cancel
    conn = gw.connect()
    conn.request("POST", UNARY, grpcweb.request_headers(extra=[("x-request-id", "rid-5")]),
                 grpcweb.frame(EchoRequest(delay_ms=5000, id="al-cancel")))
    assert echo_server.wait_cancel_status("al-cancel", "seen").seen
    conn.close()
    assert echo_server.wait_cancel_status("al-cancel").cancelled
    # 6 a preflight, 7 a refused origin
    conn = gw.connect()
    conn.request("OPTIONS", UNARY, [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")], content_length=False)
    assert conn.response(10)[0].status == 204
    conn.close()
    conn = gw.connect()
    conn.request("POST", UNARY + "?q=secret", grpcweb.request_headers(extra=[("Origin", "https://evil.example")]), b"")
    assert conn.response(10)[0].status == 403
    conn.close()
    # 8 a bad token: a gRPC error the gateway makes
    st, h, _, tr = grpcweb.call(gw.port, UNARY, EchoRequest(), headers={"Authorization": "Bearer nope", "x-request-id": "rid-8"})
    assert grpcweb.grpc_status(h, tr)[0] == 16
    # 9 WebSocket
    c = GrpcWs(gw.port, UNARY, {"x-request-id": "rid-9"}, origin=ORIGIN).open()
    c.send(EchoRequest(message="ws"))
    c.end()
    c.finish()
    assert c.status == 0
    # 10 native gRPC over HTTP/2
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
        ch.unary_unary(UNARY, request_serializer=EchoRequest.SerializeToString,
                       response_deserializer=echo_pb.EchoResponse.FromString)(EchoRequest(message="n"), timeout=10,
                                                                              metadata=[("x-request-id", "rid-10")])

    # 11 WebSocket over HTTP/2 (extended CONNECT)
    tunnel = H2Tunnel(gw.port)
    try:
        c = GrpcWs(gw.port, UNARY, {"x-request-id": "rid-11"}, origin=ORIGIN, transport=H2WebSocket, tunnel=tunnel).open()
        c.send(EchoRequest(message="ws2"))
        c.end()
        assert c.finish().status == 0
    finally:
        tunnel.close()

    lines = read_lines(log, 11)
    assert len(lines) == 11, lines
    entries = [json.loads(line) for line in lines]
    for e in entries:
        assert list(e) == KEYS  # one schema: every key on every line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])
        assert e["duration_ms"] >= 0 and e["peer"].startswith("127.0.0.1:")
    by = {e["request_id"]: e for e in entries if e["request_id"]}
    # the entries come from two workers: order is per worker; find them by request id or kind
    ok = by["rid-1"]
    assert (ok["kind"], ok["path"], ok["protocol"], ok["transport"], ok["encoding"]) == ("call", UNARY, "grpc-web", "http1", "binary")
    assert (ok["grpc_status"], ok["grpc_message"], ok["http_status"]) == (0, None, 200)
    assert ok["origin"] == ORIGIN and ok["jwt_sub"] == "user-7"
    assert (ok["messages_in"], ok["messages_out"]) == (1, 1)
    assert ok["bytes_in"] == len(grpcweb.frame(EchoRequest(message="one"))) and ok["bytes_out"] > 0
    assert ok["upstream"] == "echo" and ok["upstream_host"] == f"127.0.0.1:{echo_server.port}" and ok["route"] == f"/{SVC}/"
    assert ok["trace_id"] and len(ok["trace_id"]) == 32
    assert 0 <= ok["ttfb_ms"] <= ok["duration_ms"]
    err = by["rid-2"]
    assert (err["grpc_status"], err["grpc_message"], err["encoding"], err["protocol"]) == (5, "no such thing: é", "text", "grpc-web-text")
    assert err["bytes_out"] == 0 and err["messages_out"] == 0  # trailers-only
    assert by["rid-3"]["messages_out"] == 3
    dl = by["rid-4"]
    # the gateway's timer or the upstream (it got grpc-timeout too) ends it, whichever comes first
    assert dl["grpc_status"] == 4 and "eadline" in dl["grpc_message"] and dl["duration_ms"] >= 150
    cancel = by["rid-5"]
    assert cancel["grpc_status"] == 1 and cancel["kind"] == "call"
    local = [e for e in entries if e["kind"] == "local"]
    pre = next(e for e in local if e["http_status"] == 204)
    assert (pre["http_method"], pre["protocol"], pre["grpc_status"], pre["origin"]) == ("OPTIONS", "http", None, ORIGIN)
    refused = next(e for e in local if e["http_status"] == 403)
    assert refused["origin"] == "https://evil.example" and refused["path"] == UNARY  # never the query
    bad = by["rid-8"]
    assert (bad["kind"], bad["grpc_status"], bad["http_status"]) == ("local", 16, 200)
    assert bad["jwt_sub"] is None and "invalid token" in bad["grpc_message"]
    ws = by["rid-9"]
    assert (ws["transport"], ws["protocol"], ws["grpc_status"], ws["messages_out"]) == ("websocket", "grpc-web", 0, 1)
    ws2 = by["rid-11"]
    assert (ws2["transport"], ws2["protocol"], ws2["http_method"], ws2["grpc_status"]) == ("websocket", "grpc-web", "POST", 0)
    assert (ws2["messages_in"], ws2["messages_out"], ws2["origin"]) == (1, 1, ORIGIN)
    assert ws2["bytes_in"] == len(grpcweb.frame(EchoRequest(message="ws2")))
    nat = by["rid-10"]
    assert (nat["transport"], nat["protocol"], nat["encoding"], nat["grpc_status"]) == ("h2", "grpc", "binary", 0)

    st = status(gw)["access_log"]
    assert st["enabled"] is True and st["lines"] == 11 and st["dropped"] == 0 and st["lost"] == 0


def test_template_and_reload(portico, tmp_path):
    log1, log2 = tmp_path / "a.log", tmp_path / "b.log"
    fmt = '%START_TIME% %KIND% %PEER% "%HTTP_METHOD% %PATH% %PROTOCOL%" %GRPC_STATUS% %HTTP_STATUS% %BYTES_IN% ' \
          '%MESSAGES_OUT% %DURATION_MS% %UPSTREAM% ua=%REQ(user-agent)% echo=%RESP(x-echo-initial)% sub=%JWT(sub)%'
    gw = gateway(portico, tmp_path, f"path: {log1}\nformat: '{fmt}'", workers=1)
    conn = gw.connect()
    conn.request("POST", UNARY, grpcweb.request_headers(extra=[("User-Agent", "tester/1 x"), ("Authorization", f"Bearer {token('u1')}")]),
                 grpcweb.frame(EchoRequest(message="t")))
    head, _ = conn.response(10)
    conn.close()
    (line,) = read_lines(log1, 1)
    m = re.fullmatch(r"\S+Z call 127\.0\.0\.1:\d+ \"POST /portico\.test\.Echo/Unary grpc-web\" 0 200 (\d+) 1 [\d.]+ echo "
                     r"ua=tester/1 x echo=yes sub=u1", line)
    assert m, line
    assert int(m.group(1)) == len(grpcweb.frame(EchoRequest(message="t")))

    # live reload: another file, JSON; then off
    cfg = open(gw.config_path).read()
    new = re.sub(r"access_log:\n(  .*\n)+", f"access_log:\n  path: {log2}\n", cfg)
    open(gw.config_path, "w").write(new)
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 2 applied.*access_log\.path")
    assert grpcweb.call(gw.port, UNARY, EchoRequest(message="after"))[3]["grpc-status"] == "0"
    (line2,) = read_lines(log2, 1)
    assert json.loads(line2)["path"] == UNARY
    assert len(read_lines(log1, 1)) == 1
    open(gw.config_path, "w").write(new.replace(f"access_log:\n  path: {log2}\n", "access_log: ~\n"))
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"configuration version 3 applied")
    assert grpcweb.call(gw.port, UNARY, EchoRequest(message="off"))[3]["grpc-status"] == "0"
    time.sleep(0.3)
    assert len(read_lines(log2, 2, timeout=0.2)) == 1
    assert status(gw)["access_log"]["enabled"] is False
    # a path that cannot be opened refuses the change; the running configuration stays
    open(gw.config_path, "w").write(new.replace(f"path: {log2}", "path: /nonexistent/dir/x.log"))
    gw.signal(signal.SIGHUP)
    assert gw.wait_log(r"access_log\.path: cannot open \"/nonexistent/dir/x\.log\": No such file or directory")
    assert status(gw)["version"] == 3


def test_sigusr1_reopens_after_rename(portico, tmp_path):
    log = tmp_path / "access.log"
    gw = gateway(portico, tmp_path, f"path: {log}")
    for i in range(3):
        assert grpcweb.call(gw.port, UNARY, EchoRequest(message=f"{i}"))[3]["grpc-status"] == "0"
    assert len(read_lines(log, 3)) == 3
    os.rename(log, tmp_path / "access.log.1")  # what logrotate does, then it signals
    gw.signal(signal.SIGUSR1)
    assert gw.wait_log(r"SIGUSR1: access log reopened")
    assert grpcweb.call(gw.port, UNARY, EchoRequest(message="new"), headers={"x-request-id": "after-rotate"})[3]["grpc-status"] == "0"
    (line,) = read_lines(log, 1)
    assert json.loads(line)["request_id"] == "after-rotate"
    assert len(read_lines(tmp_path / "access.log.1", 3)) == 3
    assert status(gw)["access_log"]["reopens"] >= 1


def test_stalled_writer_never_slows_calls(portico, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: the pipe fills and stays full
    try:
        gw = gateway(portico, tmp_path, f"path: {fifo}\nbuffer: 16KiB", workers=1)
        conn = gw.connect()
        slowest, n = 0.0, 600
        start = time.monotonic()
        for i in range(n):
            t0 = time.monotonic()
            st, _, msgs, tr = grpcweb.call(gw.port, UNARY, EchoRequest(message="x" * 200), conn=conn)
            assert tr["grpc-status"] == "0"
            slowest = max(slowest, time.monotonic() - t0)
        total = time.monotonic() - start
        conn.close()
        # the pipe (64 KiB) and the ring (16 KiB) hold a few hundred lines; the rest were dropped, not waited for
        st = status(gw)["access_log"]
        assert st["dropped"] > 0 and st["lines"] + st["dropped"] == n, st
        assert slowest < 2.0 and total < 60, (slowest, total)
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert re.search(r"^portico_access_log_dropped_total %d$" % st["dropped"], text, re.M), text
        gw.stop()  # the stalled writer gives up on its last lines within its bounded wait
        assert gw.exit_code == 0
        assert re.search(r"access log .*fifo: the output did not take the last \d+ lines", gw.log_text())
    finally:
        os.close(reader)


def test_connect_lines(portico, tmp_path):
    """Connect calls: protocol "connect", the HTTP status of Connect's error table, GET for a GET, and a local answer
    in Connect's shape (JSON error body) for a path without a route."""
    from test_connect import get, get_query, unary

    log = tmp_path / "access.log"
    gw = gateway(portico, tmp_path, f"path: {log}", workers=1)
    ok = EchoRequest(message="c")
    assert unary(gw.port, UNARY, ok, headers={"x-request-id": "c-1"}).status == 200
    assert unary(gw.port, UNARY, EchoRequest(status_code=5, status_message="nope"), headers={"x-request-id": "c-2"}).status == 404
    assert get(gw.port, UNARY, get_query(EchoRequest(message="g")), headers={"x-request-id": "c-3"}).status == 200
    r = unary(gw.port, "/other.Svc/Method", EchoRequest(), headers={"x-request-id": "c-4"})
    assert r.status == 501
    by = {e["request_id"]: e for e in (json.loads(line) for line in read_lines(log, 4))}
    assert set(by) == {"c-1", "c-2", "c-3", "c-4"}
    for e in by.values():
        assert (e["protocol"], e["transport"], e["encoding"]) == ("connect", "http1", "binary"), e
    c1 = by["c-1"]
    assert (c1["kind"], c1["http_method"], c1["grpc_status"], c1["http_status"], c1["messages_in"], c1["messages_out"]) == \
        ("call", "POST", 0, 200, 1, 1)
    assert c1["bytes_in"] == len(ok.SerializeToString()) and c1["bytes_out"] > 0
    c2 = by["c-2"]
    assert (c2["grpc_status"], c2["grpc_message"], c2["http_status"], c2["messages_out"]) == (5, "nope", 404, 0)
    assert c2["bytes_out"] == len(json.dumps({"code": "not_found", "message": "nope"}, separators=(",", ":")))
    c3 = by["c-3"]
    assert (c3["http_method"], c3["path"], c3["grpc_status"], c3["http_status"], c3["messages_in"]) == ("GET", UNARY, 0, 200, 1)
    assert c3["bytes_in"] == 0  # the message came in the query: no body
    c4 = by["c-4"]
    assert (c4["kind"], c4["http_method"], c4["grpc_status"], c4["http_status"]) == ("local", "POST", 12, 501)
    assert c4["bytes_out"] == len(r.body) and c4["route"] is None
