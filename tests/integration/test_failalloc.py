"""Memory failure is a call failure, never corruption (issue 13 item 3): with the allocation-failure
injection build (-DPTC_FAULT_INJECTION=ON; `make asan` builds it so), each scenario is run once for every N
with the N-th allocation the worker makes failing — from the accept of the connection to the last byte —
until a run makes no failing allocation. Every run must end as a complete success, a well-formed gRPC
error, or a reset connection whose bytes so far are well-formed; never a hang, a corrupt frame or a crash.
After each run a normal call on a new connection must succeed (the gateway keeps serving), and at exit
LeakSanitizer must find nothing (the `portico` fixture checks the exit and the log).

The admin API's POST /debug/fail-alloc?n=N arms the countdown (only the workers count); DELETE stops it and
tells whether an allocation failed and where (the call stack is printed when a run goes wrong).

In a build without the injection the admin path does not exist and these tests skip.
"""

import http.client
import json
import re
import socket
import subprocess
import time
import zlib

import pytest

import echo_pb
import grpcweb
import wsclient
from conftest import free_port

# What a call that lost an allocation may answer: RESOURCE_EXHAUSTED (the gateway ran out), UNAVAILABLE
# (the upstream connection or stream could not be set up), INTERNAL (an upstream message could not be
# decompressed or held).
ALLOWED_ERRORS = {8, 13, 14}
MAX_N = 3000


class Admin:
    def __init__(self, port):
        self.port = port

    def request(self, method, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def arm(self, n):
        status, body = self.request("POST", f"/debug/fail-alloc?n={n}")
        assert status == 200, body

    def disarm(self):
        status, body = self.request("DELETE", "/debug/fail-alloc")
        assert status == 200, body
        return json.loads(body)


def symbolized(frames):
    """The failing allocation's call stack as function (file:line), via addr2line."""
    out = []
    for f in frames:
        m = re.match(r"(\S+)\+(0x[0-9a-f]+) (\S+)", f)
        if m is None or "portico" not in m.group(1):
            out.append(f)
            continue
        r = subprocess.run(["addr2line", "-f", "-i", "-e", m.group(1), hex(int(m.group(2), 16) - 1)],
                           capture_output=True, text=True)
        lines = r.stdout.split("\n")
        out.append(" / ".join(f"{lines[i]} ({lines[i + 1].rsplit('/', 1)[-1]})" for i in range(0, len(lines) - 1, 2)))
    return "\n  ".join(out)


@pytest.fixture
def gw(portico):
    admin_port = free_port()
    g = portico("--admin", f"127.0.0.1:{admin_port}", "--log-level", "info")
    assert g.wait_log(r"admin API listening")
    admin = Admin(admin_port)
    status, _ = admin.request("DELETE", "/debug/fail-alloc")
    if status == 404:
        pytest.skip("built without -DPTC_FAULT_INJECTION (the ASan build has it)")
    return g, admin


# ---------------------------------------------------------------------------------------- raw HTTP/1.1

def read_all(sock, timeout):
    """Every byte until the peer closes; a hang past `timeout` fails the test."""
    sock.settimeout(timeout)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), "reset"
        except socket.timeout:
            raise AssertionError(f"no end after {timeout}s; received {bytes(data[:300])!r}")
        if not chunk:
            return bytes(data), "eof"
        data += chunk


def exchange(port, pieces):
    """Sends the pieces on a new connection and reads to its end; None when the gateway reset it while sending."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        try:
            for piece in pieces:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return None
        raw, _ = read_all(sock, 15)
        return raw
    finally:
        sock.close()


def parse_http1(raw):
    """(status, headers, body, complete) of one HTTP/1.1 response; complete=False when cut short.
    Raises AssertionError for bytes that are not a (prefix of a) well-formed response."""
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        assert raw == b"" or b"HTTP/1.1 ".startswith(raw[:9]), f"not an HTTP response: {raw[:200]!r}"
        return None, {}, b"", False
    lines = raw[:head_end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0] == "HTTP/1.1" and parts[1].isdigit(), f"bad status line {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name and name == name.strip(), f"bad header line {line!r}"
        headers[name.lower()] = value.strip()
    rest = raw[head_end + 4:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, pos = bytearray(), 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return int(parts[1]), headers, bytes(body), False
            size = int(rest[pos:eol], 16)
            if len(rest) < eol + 2 + size + 2:
                body += rest[eol + 2:eol + 2 + size]
                return int(parts[1]), headers, bytes(body), False
            assert rest[eol + 2 + size:eol + 4 + size] == b"\r\n", "chunk not followed by CRLF"
            if size == 0:
                return int(parts[1]), headers, bytes(body), True
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 4 + size
    length = int(headers.get("content-length", "0"))
    return int(parts[1]), headers, rest[:length], len(rest) >= length


def grpcweb_outcome(status, headers, body, complete, text, expect):
    """Checks one gRPC-Web response (possibly cut short) and says how it ended: ok, error N or reset."""
    if status is None:
        return "reset"
    if status != 200:
        assert complete and status in (500, 503), f"HTTP {status} {body[:200]!r}"
        return f"http {status}"
    if headers.get("content-encoding") == "gzip":
        d = zlib.decompressobj(wbits=31)
        try:
            body = d.decompress(body)
        except zlib.error as e:
            raise AssertionError(f"corrupt gzip body: {e}") from None
        assert not complete or d.eof, "complete response whose gzip stream does not end"
    if text:
        usable = len(body) // 4 * 4 if not complete else len(body)
        data = grpcweb.decode_text(body[:usable])
    else:
        data = body
    frames, leftover = grpcweb.split_frames(data)
    assert complete is False or not leftover, f"complete response with {len(leftover)} stray bytes"
    messages = decoded(grpcweb.messages_of(frames))
    assert messages == expect[:len(messages)], "a message arrived altered"
    trailer = [p for f, p in frames if f & grpcweb.TRAILER_FLAG]
    if not complete:
        assert not trailer or frames[-1][0] & grpcweb.TRAILER_FLAG
        return "reset"
    if trailer:
        assert len(trailer) == 1 and frames[-1][0] & grpcweb.TRAILER_FLAG, "trailer frame not last"
        trailers = grpcweb.parse_trailer_block(trailer[0])
    else:
        trailers = headers  # trailers-only
    assert "grpc-status" in trailers, f"no grpc-status: headers {headers}, trailers {trailers}"
    code = int(trailers["grpc-status"])
    if code == 0:
        assert messages == expect, f"OK with {len(messages)} of {len(expect)} messages"
        return "ok"
    assert code in ALLOWED_ERRORS, f"grpc-status {code}: {trailers.get('grpc-message')!r}"
    assert trailers.get("grpc-message"), f"grpc-status {code} without a message"
    return f"error {code}"


def h1_call(port, path, req, text, expect):
    body = grpcweb.frame(req)
    if text:
        body = grpcweb.encode_text(body)
    hdrs = grpcweb.request_headers(text) + [("Content-Length", str(len(body))), ("Connection", "close"),
                                            ("Host", "127.0.0.1")]
    wire = f"POST {path} HTTP/1.1\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs) + b"\r\n" + body
    raw = exchange(port, [wire])
    if raw is None:
        return "reset"
    return grpcweb_outcome(*parse_http1(raw), text, expect)


def h2_call(port, path, req, native, expect):
    ct = "application/grpc" if native else grpcweb.CT_BINARY
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
               ("content-type", ct)] + ([("te", "trailers")] if native else [("x-grpc-web", "1")])
    try:
        r = grpcweb.h2_request(port, headers, grpcweb.frame(req), timeout=15)
    except (grpcweb.ConnectionClosed, ConnectionResetError, BrokenPipeError):
        return "reset"
    if r.reset_code is not None:
        return "reset"
    status = int(dict(r.headers)[":status"])
    if native:
        assert status == 200
        frames, leftover = grpcweb.split_frames(bytes(r.data))
        assert not leftover and all(f == 0 for f, _ in frames)
        messages = decoded(grpcweb.messages_of(frames))
        assert messages == expect[:len(messages)]
        trailers = dict(r.trailers or r.headers)
        code = int(trailers["grpc-status"])
        if code == 0:
            assert messages == expect
            return "ok"
        assert code in ALLOWED_ERRORS and trailers.get("grpc-message"), trailers
        return f"error {code}"
    return grpcweb_outcome(status, dict(r.headers), bytes(r.data), True, False, expect)


def ws_bidi(port):
    """grpc-websockets bidi: two messages, half-close, the answers, trailers, close 1000 — or a clean close
    with an error code (1011) or a dropped connection, with whatever arrived before it well-formed."""
    try:
        call = wsclient.GrpcWs(port, "/portico.test.Echo/Bidi", timeout=15).open()
        call.send(echo("w0"))
        call.send(echo("w1"))
        call.end()
        call.finish(timeout=15)
    except (wsclient.HandshakeRefused, wsclient.Closed, ConnectionError, grpcweb.ConnectionClosed, BrokenPipeError):
        return "reset"
    except AssertionError as e:
        if "closed" in str(e).lower():
            return "reset"
        raise
    messages = decoded(call.messages)
    assert messages == [("w0", 0), ("w1", 1)][:len(messages)] or messages == [("w0", 0), ("w1", 0)][:len(messages)], messages
    if call.trailers is None:
        assert call.closed is None or call.closed[0] != 1000, f"closed normally without trailers: {call.closed}"
        return "reset"
    code = call.status
    # after the trailers: close 1000, or the connection dropped when the close frame itself could not be queued
    assert call.closed is not None and call.closed[0] in (1000, None), call.closed
    if code == 0:
        assert len(messages) == 2, messages
        return "ok"
    assert code in ALLOWED_ERRORS and call.trailers.get("grpc-message"), call.trailers
    return f"error {code}"


def h1_big_request(port):
    """A 200 KiB request body sent in pieces (chunked): the request side's buffers and backpressure."""
    payload = bytes(range(256)) * 800
    body = grpcweb.frame(echo_pb.EchoRequest(message="big", payload=payload).SerializeToString())
    hdrs = grpcweb.request_headers(False) + [("Transfer-Encoding", "chunked"), ("Connection", "close"), ("Host", "127.0.0.1")]
    pieces = [b"POST /portico.test.Echo/Unary HTTP/1.1\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs) + b"\r\n"]
    pieces += [b"%x\r\n" % len(body[i:i + 16384]) + body[i:i + 16384] + b"\r\n" for i in range(0, len(body), 16384)]
    raw = exchange(port, pieces + [b"0\r\n\r\n"])
    if raw is None:
        return "reset"
    return grpcweb_outcome(*parse_http1(raw), False, [("big", 0)])


# Connect: an error is an HTTP status with a JSON body whose code matches it
CONNECT_ERRORS = {429: "resource_exhausted", 503: "unavailable", 500: "internal"}


def envelope_payload(flags, payload):
    """A Connect envelope's message: gunzipped when flag 0x01 says it is compressed (one whole gzip member)."""
    if not flags & 1:
        return payload
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(payload) + d.flush()
    assert d.eof and not d.unused_data, "compressed envelope that is not one whole gzip member"
    return out


def connect_call(port, method, target, headers, body, stream, expect="c", compressed=False):
    """A Connect call over HTTP/1.1: unary (POST or GET) or a server stream; checks what arrived (gzip bodies and
    compressed envelopes decoded). With `compressed`, a successful answer that is not all gzip is "ok plain": what the
    gateway sends when compressing ran out of memory, never what it sends otherwise (countdown wants "ok" then)."""
    hdrs = [("Host", "127.0.0.1"), ("Connection", "close")] + headers
    if body is not None:
        hdrs.append(("Content-Length", str(len(body))))
    wire = f"{method} {target} HTTP/1.1\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs) + b"\r\n" + (body or b"")
    raw = exchange(port, [wire])
    if raw is None:
        return "reset"
    status, headers, data, complete = parse_http1(raw)
    if status is None or not complete and status == 200 and stream:
        if status is not None:  # a stream cut short: its whole envelopes are intact
            frames, _ = grpcweb.split_frames(data)
            assert all(f in (0, 1) for f, _ in frames)
            assert decoded([envelope_payload(f, p) for f, p in frames]) == [(expect + "s", i) for i in range(len(frames))]
        return "reset"
    assert complete, f"HTTP {status}: a response cut short outside a stream body: {raw[:300]!r}"
    if status != 200:
        assert status in CONNECT_ERRORS, f"HTTP {status}: {data[:300]!r}"
        err = json.loads(data)
        assert err["code"] == CONNECT_ERRORS[status] and err.get("message"), err
        return f"error {err['code']}"
    if not stream:
        assert headers["content-type"] == "application/proto", headers
        gz = headers.get("content-encoding") == "gzip"
        assert gz or "content-encoding" not in headers, headers
        assert decoded([envelope_payload(int(gz), data)]) == [(expect + "g", 0)], data
        return "ok" if gz == compressed else "ok plain"
    frames = grpcweb.split_frames(data)
    assert frames[1] == b"" and frames[0] and frames[0][-1][0] == 0x02, data[:300]
    end = json.loads(frames[0][-1][1])
    assert all(f in (0, 1) for f, _ in frames[0][:-1]), [f for f, _ in frames[0]]
    msgs = decoded([envelope_payload(f, p) for f, p in frames[0][:-1]])
    assert msgs == [(expect + "s", i) for i in range(len(msgs))], msgs
    if "error" not in end:
        assert len(msgs) == 2, msgs
        flags = [f for f, _ in frames[0][:-1]]
        assert compressed or flags == [0, 0], flags
        return "ok" if flags == [int(compressed)] * 2 else "ok plain"
    assert end["error"]["code"] in CONNECT_ERRORS.values() and end["error"].get("message"), end
    return f"error {end['error']['code']}"


def connect_get(port):
    import base64
    q = "connect=v1&encoding=proto&base64=1&message=" + base64.urlsafe_b64encode(echo("cg")).rstrip(b"=").decode()
    return connect_call(port, "GET", "/portico.test.Echo/Unary?" + q, [], None, False)


def connect_stream(port):
    body = grpcweb.frame(echo("cs", count=2))
    return connect_call(port, "POST", "/portico.test.Echo/ServerStream",
                        [("Content-Type", "application/connect+proto"), ("Connect-Protocol-Version", "1")], body, True)


def echo(message, **kw):
    return echo_pb.EchoRequest(message=message, **kw).SerializeToString()


def decoded(payloads):
    """(message, index) of each EchoResponse (the echoed metadata differs from call to call)."""
    out = []
    for p in payloads:
        r = echo_pb.EchoResponse.FromString(p)
        out.append((r.message, r.index))
    return out


SCENARIOS = {
    "h1_unary_binary": lambda port: h1_call(port, "/portico.test.Echo/Unary", echo("fa"), False,
                                            [("fa", 0)]),
    "h1_stream_text": lambda port: h1_call(port, "/portico.test.Echo/ServerStream", echo("st", count=3), True,
                                           [("st", i) for i in range(3)]),
    "h2_unary_grpcweb": lambda port: h2_call(port, "/portico.test.Echo/Unary", echo("h2"), False,
                                             [("h2", 0)]),
    "h1_big_request": h1_big_request,
    "ws_bidi": ws_bidi,
    "connect_get": connect_get,
    "connect_stream": connect_stream,
    "h2_stream_native": lambda port: h2_call(port, "/portico.test.Echo/ServerStream", echo("nt", count=2), True,
                                             [("nt", i) for i in range(2)]),
}


def healthy(port, token=None):
    """A plain call on a new connection must succeed again (after a failed upstream connection the pool may
    need a moment to reconnect)."""
    deadline = time.monotonic() + 5
    auth = [("Authorization", f"Bearer {token}")] if token else []
    while True:
        status, _, messages, trailers = grpcweb.call(port, "/portico.test.Echo/Unary", echo("after"), headers=auth)
        if status == 200 and trailers and trailers.get("grpc-status") == "0":
            assert echo_pb.EchoResponse.FromString(messages[0]).message == "after"
            return
        assert time.monotonic() < deadline, f"gateway no longer serves: {status} {trailers}"
        time.sleep(0.1)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_allocation_failure_ends_the_call_cleanly(gw, scenario):
    g, admin = gw
    countdown(g, admin, scenario, SCENARIOS[scenario])


@pytest.fixture
def gw_pipeline(portico, tmp_path):
    """Every filter on the path: CORS, request id, trace context, header rules on request, response and
    trailers, a JWT check (ES256, local JWKS), and gzip responses."""
    from test_jwt import AUD, ISS, Keys
    keys = Keys(tmp_path)
    (tmp_path / "keys.json").write_text(keys.jwks("ec1"))
    admin_port = free_port()
    g = portico(config=(
        "workers: 1\nlog_level: info\nlisteners: ['127.0.0.1:{listen_port}']\n"
        f"admin: {{address: '127.0.0.1:{admin_port}'}}\n"
        "upstreams: [{name: echo, endpoints: ['127.0.0.1:{upstream_port}']}]\n"
        "cors: {allow_origins: ['https://app.example']}\n"
        "compression: {gzip: true, min_size: 0}\n"
        "headers:\n  request: [{set: x-forwarded-origin, value: '%REQ(origin)%'}]\n"
        "  response: [{set: x-served-by, value: '%UPSTREAM%'}]\n  trailers: [{add: x-trace, value: '%TRACE_ID%'}]\n"
        f"jwt:\n  providers:\n    - {{name: main, issuer: '{ISS}', audiences: ['{AUD}'], jwks_file: {tmp_path / 'keys.json'},"
        " claims_to_headers: [{claim: sub, header: x-auth-user-id}]}\n"
        "  default: {providers: [main]}\n"))
    admin = Admin(admin_port)
    if admin.request("DELETE", "/debug/fail-alloc")[0] == 404:
        pytest.skip("built without -DPTC_FAULT_INJECTION (the ASan build has it)")
    return g, admin, keys.token("ec1")


def h1_pipeline(port, token):
    """A text-mode server stream from another origin, with a token, answered gzip-compressed."""
    body = grpcweb.encode_text(grpcweb.frame(echo("pl", count=2, size=3000)))
    hdrs = grpcweb.request_headers(True) + [
        ("Content-Length", str(len(body))), ("Connection", "close"), ("Host", "127.0.0.1"),
        ("Origin", "https://app.example"), ("Authorization", f"Bearer {token}"), ("Accept-Encoding", "gzip")]
    wire = b"POST /portico.test.Echo/ServerStream HTTP/1.1\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs) + b"\r\n" + body
    raw = exchange(port, [wire])
    if raw is None:
        return "reset"
    status, headers, data, complete = parse_http1(raw)
    if status == 200 and complete:
        assert headers.get("access-control-allow-origin") == "https://app.example", headers
    return grpcweb_outcome(status, headers, data, complete, True, [("pl", 0), ("pl", 1)])


def test_every_allocation_failure_with_the_whole_pipeline(gw_pipeline):
    g, admin, token = gw_pipeline
    countdown(g, admin, "h1_pipeline", lambda port: h1_pipeline(port, token), healthy=lambda port: healthy(port, token))


def connect_gzip(port, token):
    """A Connect server stream whose messages come back compressed one by one (connect-accept-encoding), then a
    unary call answered with a gzip body (accept-encoding), through the whole pipeline."""
    auth = [("Origin", "https://app.example"), ("Authorization", f"Bearer {token}")]
    out = connect_call(port, "POST", "/portico.test.Echo/ServerStream",
                       [("Content-Type", "application/connect+proto"), ("Connect-Accept-Encoding", "gzip")] + auth,
                       grpcweb.frame(echo("zs", count=2, size=3000)), True, expect="z", compressed=True)
    if out != "ok":
        return out
    return connect_call(port, "POST", "/portico.test.Echo/Unary", [("Content-Type", "application/proto"), ("Accept-Encoding", "gzip")] + auth,
                        echo("zg", size=3000), False, expect="z", compressed=True)


def test_every_allocation_failure_connect_gzip(gw_pipeline):
    g, admin, token = gw_pipeline
    countdown(g, admin, "connect_gzip", lambda port: connect_gzip(port, token), healthy=lambda port: healthy(port, token))


def countdown(g, admin, scenario, run, healthy=None):
    healthy = healthy or globals()["healthy"]
    assert run(g.port) == "ok"  # warm: the upstream connection is open, caches filled
    outcomes = {}
    for n in range(MAX_N):
        admin.arm(n)
        try:
            outcome = run(g.port)
        except Exception as e:
            state = admin.disarm()
            raise AssertionError(f"n={n}: {e!r}\nfailed allocation ({state['size']} bytes) at:\n  "
                                 + symbolized(state["frames"])) from None
        state = admin.disarm()
        if not state["fired"]:
            assert outcome == "ok", f"n={n}: {outcome} without an injected failure"
            break
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        try:
            healthy(g.port)
        except Exception as e:
            raise AssertionError(f"n={n}: {e!r}\nafter the failed allocation at:\n  " + symbolized(state["frames"])) from None
        assert g.running(), f"n={n}: the gateway died"
    else:
        pytest.fail(f"the scenario still allocated after {MAX_N} allocations")
    print(f"{scenario}: {n} allocations failed one by one: {outcomes}")
    assert n > 5, "the countdown never reached the call's allocations"
