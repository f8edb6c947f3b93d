"""HTTP/1.1 downstream behaviour of the gateway (src/http1/server.c).

Keep-alive and Connection: close, HTTP/1.0, request body framings (Content-Length, chunked with
extensions and tiny chunks), Expect, pipelining, malformed and smuggling-style requests, method and
content-type checks, header/URL size limits, and the header-read / idle timers.

Every test checks the exact answer and then that the gateway still serves a normal call.
"""

import socket
import time
import threading
import urllib.parse

import pytest

import grpcweb
from echo_pb import EchoRequest, EchoResponse

UNARY = "/portico.test.Echo/Unary"
SERVER_STREAM = "/portico.test.Echo/ServerStream"
CT = grpcweb.CT_BINARY
RESP_CT = "application/grpc-web+proto"


def config(extra=""):
    """A one-worker YAML config pointing at the test's echo server, plus `extra` YAML."""
    return ("workers: 1\n"
            "log_level: debug\n"
            "listeners: ['127.0.0.1:{listen_port}']\n"
            "upstreams:\n"
            "  - name: echo\n"
            "    endpoints: ['127.0.0.1:{upstream_port}']\n" + extra)


def unary_body(message, **kw):
    return grpcweb.frame(EchoRequest(message=message, **kw))


def grpc_headers(extra=()):
    return grpcweb.request_headers(extra=extra)


def assert_unary_ok(head, body, message, chunked=True):
    """A complete successful Unary answer carrying `message`."""
    assert head.status == 200, head
    assert head.get("content-type") == RESP_CT, head
    assert head.get("x-echo-initial") == "yes", head
    assert head.get("content-length") is None, head
    if chunked:
        assert head.get("transfer-encoding") == "chunked", head
    else:
        assert head.get("transfer-encoding") is None, head
    frames, trailers = grpcweb.parse_body(body)
    msgs = grpcweb.messages_of(frames)
    assert len(msgs) == 1, frames
    assert EchoResponse.FromString(msgs[0]).message == message
    assert trailers is not None, "no trailer frame"
    assert trailers.get("grpc-status") == "0", trailers
    assert trailers.get("x-trailer-ok") == "done", trailers


def assert_serves(gw, message="still-serving"):
    """A normal call on a fresh connection succeeds."""
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=message), timeout=10)
    assert status == 200, hdrs
    assert hdrs.get("content-type") == RESP_CT
    assert len(msgs) == 1 and EchoResponse.FromString(msgs[0]).message == message
    assert trailers is not None and trailers.get("grpc-status") == "0", trailers


def assert_local_answer(head, body, status, reason, body_contains=None, close=False):
    """A gateway-made (non-gRPC) answer: exact status line, text body with a correct length."""
    assert (head.version, head.status, head.reason) == ("HTTP/1.1", status, reason), head
    assert head.get("transfer-encoding") is None, head
    if status != 204:
        assert head.get("content-length") == str(len(body)), (head, body)
    if body_contains is not None:
        assert head.get("content-type") == "text/plain; charset=utf-8", head
        assert body_contains in body.decode("utf-8", "replace"), body
    if close:
        assert (head.get("connection") or "").lower() == "close", head
    else:
        assert head.get("connection") is None, head


def raw_head(method, path, headers, version="HTTP/1.1"):
    return (f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            + "\r\n").encode("latin-1")


# --------------------------------------------------------------------------- keep-alive / close


def test_keep_alive_three_calls(portico):
    gw = portico()
    with gw.connect() as conn:
        for i in range(3):
            conn.request("POST", UNARY, grpc_headers(), unary_body(f"ka-{i}"))
            head, body = conn.response()
            assert_unary_ok(head, body, f"ka-{i}")
            assert head.get("connection") is None, head
        # still open: a fourth call on the same socket works too
        status, _, msgs, trailers = grpcweb.call(gw.port, UNARY, EchoRequest(message="ka-3"), conn=conn)
        assert status == 200 and EchoResponse.FromString(msgs[0]).message == "ka-3"
        assert trailers["grpc-status"] == "0"
    assert_serves(gw)


def test_connection_close_request(portico):
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers([("Connection", "close")]), unary_body("bye"))
        head, body = conn.response()
        assert_unary_ok(head, body, "bye")
        assert head.get("connection") == "close", head
        assert conn.wait_closed(5), "the gateway did not close the connection after Connection: close"
    assert_serves(gw)


def test_refused_upload_is_answered_not_reset(portico):
    """A message over limits.max_message_size is refused at once while the client is still
    uploading megabytes of it; the gateway must not close with those bytes unread (the kernel
    would answer with a RST that can destroy the response): it half-closes and drops the rest,
    so a client that sends everything before reading still gets the whole gRPC-Web answer."""
    gw = portico(config=config("limits: {max_message_size: 64KiB}\n"))
    body = grpcweb.frame(EchoRequest(payload=b"u" * (8 * 1024 * 1024)))
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers(), body)   # all 8 MiB before reading a byte
        head, resp = conn.response(timeout=10)
        assert head.status == 200, head  # answered before the gateway knew it would close
        frames, trailers = grpcweb.parse_body(resp)
        status = trailers if trailers is not None else {k: head.get(k) for k in ("grpc-status", "grpc-message")}
        assert status["grpc-status"] == "8", (head, trailers)
        assert "65536" in urllib.parse.unquote(status["grpc-message"]), status
        assert grpcweb.messages_of(frames) == []
        assert conn.wait_closed(5)
    assert_serves(gw)


@pytest.mark.parametrize("keep_alive_header", [False, True])
def test_http10_request(portico, keep_alive_header):
    """HTTP/1.0 has no chunked coding: no transfer-encoding, the body ends at close."""
    gw = portico()
    body = unary_body("old-http")
    headers = [("Host", "127.0.0.1"), ("Content-Type", CT), ("X-Grpc-Web", "1"),
               ("Content-Length", str(len(body)))]
    if keep_alive_header:
        headers.append(("Connection", "keep-alive"))
    with gw.connect() as conn:
        conn.send(raw_head("POST", UNARY, headers, "HTTP/1.0") + body)
        conn._method = "POST"
        head = conn.read_head()
        assert head.version == "HTTP/1.0" and head.status == 200 and head.reason == "OK", head
        assert head.get("connection") == "close", head
        resp_body = conn.read_body()
        assert_unary_ok(head, resp_body, "old-http", chunked=False)
        assert b"\r\n0\r\n" not in resp_body
        assert conn.wait_closed(5)
    assert_serves(gw)


# --------------------------------------------------------------------------- request bodies


def test_content_length_body(portico):
    gw = portico()
    payload = bytes(range(256)) * 64
    with gw.connect() as conn:
        body = grpcweb.frame(EchoRequest(message="cl", payload=payload))
        conn.request("POST", UNARY, grpc_headers([("Content-Length", str(len(body)))]), body,
                     content_length=False)
        head, resp = conn.response()
        assert head.status == 200
        frames, trailers = grpcweb.parse_body(resp)
        (msg,) = grpcweb.messages_of(frames)
        assert EchoResponse.FromString(msg).payload == payload
        assert trailers["grpc-status"] == "0"
    assert_serves(gw)


def test_chunked_body(portico):
    gw = portico()
    body = unary_body("chunked", payload=b"p" * 5000)
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers(), [body[:7], body[7:3000], body[3000:]],
                     chunked=True)
        head, resp = conn.response()
        assert head.status == 200 and head.get("content-type") == RESP_CT
        frames, trailers = grpcweb.parse_body(resp)
        (msg,) = grpcweb.messages_of(frames)
        assert EchoResponse.FromString(msg).message == "chunked"
        assert EchoResponse.FromString(msg).payload == b"p" * 5000
        assert trailers["grpc-status"] == "0"
        # keep-alive after a chunked request
        conn.request("POST", UNARY, grpc_headers(), unary_body("again"))
        assert_unary_ok(*conn.response(), "again")
    assert_serves(gw)


def test_chunked_body_with_extensions_and_trailers(portico):
    gw = portico()
    body = unary_body("ext")
    a, b = body[:4], body[4:]
    wire = (b"%x;name=value\r\n%s\r\n" % (len(a), a)
            + b"%X;quoted=\"x; y\";flag\r\n%s\r\n" % (len(b), b)
            + b"0;last=1\r\nX-Chunk-Trailer: yes\r\n\r\n")
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("Transfer-Encoding", "chunked")]
    with gw.connect() as conn:
        conn.send(raw_head("POST", UNARY, headers) + wire)
        conn._method = "POST"
        assert_unary_ok(*conn.response(), "ext")
    assert_serves(gw)


def test_chunked_body_many_tiny_chunks(portico):
    gw = portico()
    body = unary_body("tiny", payload=bytes(range(200)))
    with gw.connect() as conn:
        chunks = [body[i:i + 1] for i in range(len(body))]
        conn.request("POST", UNARY, grpc_headers(), chunks, chunked=True)
        head, resp = conn.response()
        assert head.status == 200
        frames, trailers = grpcweb.parse_body(resp)
        (msg,) = grpcweb.messages_of(frames)
        assert EchoResponse.FromString(msg).payload == bytes(range(200))
        assert trailers["grpc-status"] == "0"
    assert_serves(gw)


def test_chunked_body_sent_byte_by_byte(portico):
    """The whole request, head and chunked body, dribbled one byte per write."""
    gw = portico()
    body = unary_body("dribble")
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("Transfer-Encoding", "chunked")]
    wire = raw_head("POST", UNARY, headers) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with gw.connect() as conn:
        for i in range(len(wire)):
            conn.send(wire[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        conn._method = "POST"
        assert_unary_ok(*conn.response(), "dribble")
    assert_serves(gw)


def test_expect_100_continue(portico):
    gw = portico()
    body = unary_body("continue")
    with gw.connect() as conn:
        headers = grpc_headers() + [("Host", "127.0.0.1"), ("Expect", "100-continue"),
                                    ("Content-Length", str(len(body)))]
        conn.send(raw_head("POST", UNARY, headers))
        conn._method = "POST"
        interim = conn.read_head(timeout=5, skip_interim=False)
        assert (interim.version, interim.status, interim.reason) == ("HTTP/1.1", 100, "Continue")
        assert interim.headers == []
        conn.send(body)
        head, resp = conn.response()
        assert_unary_ok(head, resp, "continue")
        # the connection stays usable
        conn.request("POST", UNARY, grpc_headers(), unary_body("after-continue"))
        assert_unary_ok(*conn.response(), "after-continue")
    assert_serves(gw)


def test_expect_other_is_417(portico):
    gw = portico()
    body = unary_body("nope")
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers([("Expect", "something-else")]), body)
        head, resp = conn.response()
        assert_local_answer(head, resp, 417, "Expectation Failed",
                            "only 'Expect: 100-continue' is supported", close=True)
        assert conn.wait_closed(5)
    assert_serves(gw)


# --------------------------------------------------------------------------- pipelining


def _pipelined(gw, requests):
    """Send all requests in one write; return the parsed responses in arrival order."""
    wire = b""
    for msg, extra in requests:
        body = unary_body(msg, **extra)
        headers = grpc_headers() + [("Host", "127.0.0.1"), ("Content-Length", str(len(body)))]
        wire += raw_head("POST", UNARY, headers) + body
    out = []
    with gw.connect() as conn:
        conn.send(wire)
        conn._method = "POST"
        for _ in requests:
            head, body = conn.response()
            out.append((head, body))
        # nothing else is sent and the connection stays open
        conn.sock.settimeout(0.2)
        with pytest.raises((socket.timeout, TimeoutError)):
            extra = conn.sock.recv(1)
            pytest.fail(f"unexpected bytes after the pipelined responses: {extra!r}")
    return out


def test_pipelining_two(portico):
    gw = portico()
    # the first is slower than the second: answers must still come in request order
    responses = _pipelined(gw, [("first", {"delay_ms": 300}), ("second", {})])
    assert_unary_ok(*responses[0], "first")
    assert_unary_ok(*responses[1], "second")
    assert_serves(gw)


def test_pipelining_five(portico):
    gw = portico()
    reqs = [(f"pipe-{i}", {"delay_ms": 100 if i % 2 == 0 else 0}) for i in range(5)]
    responses = _pipelined(gw, reqs)
    for (msg, _), (head, body) in zip(reqs, responses):
        assert_unary_ok(head, body, msg)
    assert_serves(gw)


def test_pipelined_beyond_the_read_bound(portico):
    """Pipelined requests far past the input bound (limits.max_header_size + 64 KiB: reading stops there while the
    slow first one is answered, and resumes as the answers go out) are all answered, in order."""
    gw = portico()
    reqs = [("slow-first", {"delay_ms": 700})] + [(f"big-{i:03d}-" + "x" * 4000, {}) for i in range(60)]
    wire = b""
    for msg, extra in reqs:
        body = unary_body(msg, **extra)
        wire += raw_head("POST", UNARY, grpc_headers() + [("Host", "127.0.0.1"), ("Content-Length", str(len(body)))]) + body
    assert len(wire) > 16 * 1024 + 64 * 1024 + 100 * 1024
    with gw.connect() as conn:
        sender = threading.Thread(target=conn.sock.sendall, args=(wire,), daemon=True)
        sender.start()
        conn._method = "POST"
        for msg, _ in reqs:
            assert_unary_ok(*conn.response(), msg)
        sender.join(10)
        assert not sender.is_alive()
    assert_serves(gw)


def test_pipelined_answers_to_a_client_that_reads_late(portico):
    """Many small pipelined calls from a client with a 4 KiB receive buffer that reads nothing for a second: the
    gateway's writes meet a full socket (a partial write, then the bufferevent writes the rest), and every answer
    still arrives whole and in order."""
    gw = portico()
    reqs = [f"late-{i:04d}-" + "y" * 1500 for i in range(3000)]
    wire = b""
    for msg in reqs:
        body = unary_body(msg)
        wire += raw_head("POST", UNARY, grpc_headers() + [("Host", "127.0.0.1"), ("Content-Length", str(len(body)))]) + body
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    with gw.connect() as conn:
        conn.sock.close()
        conn.sock = sock
        sender = threading.Thread(target=sock.sendall, args=(wire,), daemon=True)
        sender.start()
        time.sleep(2.0)
        conn._method = "POST"
        for msg in reqs:
            assert_unary_ok(*conn.response(), msg)
        sender.join(10)
        assert not sender.is_alive()
    assert_serves(gw)


def test_pipelined_after_connection_close_is_ignored(portico):
    """Bytes after a `Connection: close` request are not answered."""
    gw = portico()
    a, b = unary_body("last"), unary_body("ignored")
    base = grpc_headers() + [("Host", "127.0.0.1")]
    wire = (raw_head("POST", UNARY, base + [("Connection", "close"), ("Content-Length", str(len(a)))]) + a
            + raw_head("POST", UNARY, base + [("Content-Length", str(len(b)))]) + b)
    with gw.connect() as conn:
        conn.send(wire)
        conn._method = "POST"
        head, body = conn.response()
        assert_unary_ok(head, body, "last")
        assert head.get("connection") == "close"
        assert conn.buf == b"" and conn.recv_raw(timeout=5) == b""
    assert_serves(gw)


# --------------------------------------------------------------------------- malformed / smuggling


def _expect_400_and_close(gw, wire, reason_contains="malformed HTTP/1.1 request"):
    with gw.connect() as conn:
        conn.send(wire)
        conn._method = "POST"
        head, body = conn.response(timeout=5)
        assert_local_answer(head, body, 400, "Bad Request", reason_contains, close=True)
        assert conn.wait_closed(5), "connection not closed after 400"
    return body


def test_content_length_and_transfer_encoding(portico):
    gw = portico()
    body = unary_body("smuggle")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("Content-Length", str(len(chunked))),
                                ("Transfer-Encoding", "chunked")]
    _expect_400_and_close(gw, raw_head("POST", UNARY, headers) + chunked)
    assert_serves(gw)


def test_transfer_encoding_and_content_length_order_reversed(portico):
    gw = portico()
    body = unary_body("smuggle2")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("Transfer-Encoding", "chunked"),
                                ("Content-Length", "5")]
    _expect_400_and_close(gw, raw_head("POST", UNARY, headers) + chunked)
    assert_serves(gw)


def test_duplicate_content_length(portico):
    gw = portico()
    body = unary_body("dup")
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("Content-Length", str(len(body))),
                                ("Content-Length", str(len(body) + 1))]
    _expect_400_and_close(gw, raw_head("POST", UNARY, headers) + body)
    assert_serves(gw)


@pytest.mark.parametrize("where", ["after-field", "first-line"])
def test_obs_fold_header(portico, where):
    """A header line starting with whitespace (obs-fold, RFC 9112 §5.2) is rejected."""
    gw = portico()
    body = unary_body("fold")
    if where == "after-field":
        fields = "Host: 127.0.0.1\r\nX-Folded: first\r\n  continued\r\n"
    else:
        fields = " X-Leading: space\r\nHost: 127.0.0.1\r\n"
    wire = (f"POST {UNARY} HTTP/1.1\r\n{fields}Content-Type: {CT}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    _expect_400_and_close(gw, wire, "obs-fold" if where == "after-field" else "malformed HTTP/1.1 request")
    assert_serves(gw)


def test_bad_chunk_size(portico):
    gw = portico()
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("Transfer-Encoding", "chunked")]
    _expect_400_and_close(gw, raw_head("POST", UNARY, headers) + b"zz\r\nhello\r\n0\r\n\r\n")
    assert_serves(gw)


_CT_CL0 = b"Content-Type: application/grpc-web+proto\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("wire", [
    b"GARBAGE\r\n\r\n",
    b"POST\r\n\r\n",
    b"POST /portico.test.Echo/Unary\r\nHost: x\r\n" + _CT_CL0,                # HTTP/0.9 style
    b"POST /portico.test.Echo/Unary HTTP/1.1 extra\r\nHost: x\r\n" + _CT_CL0,
    b"POST /portico.test.Echo/Unary\x00 HTTP/1.1\r\nHost: x\r\n" + _CT_CL0,
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,      # a TLS ClientHello
], ids=["garbage", "no-target", "no-version", "trailing-token", "nul-in-target", "tls"])
def test_invalid_request_line(portico, wire):
    gw = portico()
    no_version = wire.startswith(b"POST /portico.test.Echo/Unary\r\n")
    _expect_400_and_close(gw, wire, "without HTTP/1.x version" if no_version else "malformed HTTP/1.1 request")
    assert_serves(gw)


@pytest.mark.parametrize("version", ["HTTP/3.0", "HTTP/1.2"])
def test_unsupported_http_version_is_505(portico, version):
    gw = portico()
    with gw.connect() as conn:
        conn.send(f"POST {UNARY} {version}\r\nHost: x\r\n".encode() + _CT_CL0)
        conn._method = "POST"
        head, body = conn.response(timeout=5)
        assert_local_answer(head, body, 505, "HTTP Version Not Supported",
                            "malformed HTTP/1.1 request", close=True)
        assert conn.wait_closed(5)
    assert_serves(gw)


def test_http2_preface_switches_to_http2(portico):
    """A cleartext connection that opens with the HTTP/2 preface is served as HTTP/2 (prior
    knowledge): the server answers with its own SETTINGS frame, not an HTTP/1.1 status line."""
    gw = portico()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    with gw.connect() as conn:
        conn.send(preface[:7])          # split inside the preface: still detected
        conn.send(preface[7:] + settings)
        data = conn.recv_raw()
        assert not data.startswith(b"HTTP/1.1"), data[:40]
        assert data[3] == 0x04 and data[4] == 0x00, data[:20]   # a SETTINGS frame, not an ACK
    assert_serves(gw)


def test_http2_binary_frames_are_400(portico):
    gw = portico()
    _expect_400_and_close(gw, b"\x00\x00\x12\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64" * 3)
    assert_serves(gw)


# --------------------------------------------------------------------------- method / content type


def test_get_is_405(portico):
    gw = portico()
    with gw.connect() as conn:
        conn.request("GET", UNARY, [("Content-Type", CT)])
        head, body = conn.response()
        assert_local_answer(head, body, 405, "Method Not Allowed",
                            "method GET is not allowed here: gRPC-Web calls use POST")
        assert head.get("allow") == "POST, OPTIONS"
        # keep-alive survives a local answer
        conn.request("POST", UNARY, grpc_headers(), unary_body("after-405"))
        assert_unary_ok(*conn.response(), "after-405")
    assert_serves(gw)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(portico, method):
    gw = portico()
    with gw.connect() as conn:
        conn.request(method, UNARY, grpc_headers(), unary_body("x"))
        head, body = conn.response()
        assert_local_answer(head, body, 405, "Method Not Allowed", f"method {method} is not allowed")
        assert head.get("allow") == "POST, OPTIONS"
    assert_serves(gw)


def test_options_without_cors_is_204(portico):
    gw = portico()
    with gw.connect() as conn:
        conn.request("OPTIONS", UNARY, [], content_length=False)
        head, body = conn.response()
        assert (head.version, head.status, head.reason) == ("HTTP/1.1", 204, "No Content"), head
        assert head.get("allow") == "POST, OPTIONS"
        assert body == b""
        assert head.get("content-length") is None and head.get("transfer-encoding") is None
        conn.request("POST", UNARY, grpc_headers(), unary_body("after-options"))
        assert_unary_ok(*conn.response(), "after-options")
    assert_serves(gw)


@pytest.mark.parametrize("ctype", ["application/xml", "text/plain", "application/grpc",
                                   "application/grpc-webx"])
def test_unsupported_content_type_is_415(portico, ctype):
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", UNARY, [("Content-Type", ctype)], unary_body("x"))
        head, body = conn.response()
        assert_local_answer(head, body, 415, "Unsupported Media Type",
                            f"unsupported content type '{ctype}'")
        conn.request("POST", UNARY, grpc_headers(), unary_body("after-415"))
        assert_unary_ok(*conn.response(), "after-415")
    assert_serves(gw)


def test_missing_content_type_is_415(portico):
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", UNARY, [("X-Grpc-Web", "1")], unary_body("x"))
        head, body = conn.response()
        assert_local_answer(head, body, 415, "Unsupported Media Type",
                            "unsupported content type ''")
        assert "application/grpc-web" in body.decode()
    assert_serves(gw)


# --------------------------------------------------------------------------- size limits


def _expect_local_close(gw, wire, status, reason, text):
    with gw.connect() as conn:
        conn.send(wire)
        conn._method = "POST"
        head, body = conn.response(timeout=5)
        assert_local_answer(head, body, status, reason, text, close=True)
        assert conn.wait_closed(5)


def test_header_value_too_large_default_limit(portico):
    gw = portico()
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("X-Big", "v" * (17 * 1024)),
                                ("Content-Length", "0")]
    _expect_local_close(gw, raw_head("POST", UNARY, headers), 431,
                        "Request Header Fields Too Large", "request header fields too large")
    assert_serves(gw)


def test_header_value_too_large_small_limit(portico):
    gw = portico(config=config("limits: {max_header_size: 1KiB}\n"))
    headers = grpc_headers() + [("Host", "127.0.0.1"), ("X-Big", "v" * 1100)]
    _expect_local_close(gw, raw_head("POST", UNARY, headers), 431,
                        "Request Header Fields Too Large", "request header fields too large")
    # just under the limit still works
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="fits"),
                                           headers=[("X-Medium", "m" * 600)])
    assert status == 200 and trailers["grpc-status"] == "0"
    assert_serves(gw)


def test_too_many_headers_default_limit(portico):
    gw = portico()
    headers = grpc_headers() + [("Host", "127.0.0.1")] + [(f"X-H{i}", str(i)) for i in range(101)]
    _expect_local_close(gw, raw_head("POST", UNARY, headers), 431,
                        "Request Header Fields Too Large", "too many request header fields (limits.max_headers)")
    assert_serves(gw)


def test_too_many_headers_small_limit(portico):
    gw = portico(config=config("limits: {max_headers: 10}\n"))
    base = grpc_headers() + [("Host", "127.0.0.1"), ("Content-Length", "0")]   # 5 fields
    _expect_local_close(gw, raw_head("POST", UNARY, base + [(f"X-H{i}", "1") for i in range(6)]),
                        431, "Request Header Fields Too Large", "too many request header fields (limits.max_headers)")
    # under the limit (5 + 4 fields): accepted
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="ten"),
                                           headers=[(f"X-H{i}", "1") for i in range(4)])
    assert status == 200 and trailers["grpc-status"] == "0"
    assert_serves(gw)


def test_url_too_long_default_limit(portico):
    gw = portico()
    path = UNARY + "?q=" + "a" * (17 * 1024)
    _expect_local_close(gw, raw_head("POST", path, grpc_headers() + [("Host", "x")]), 414,
                        "URI Too Long", "request URI too long")
    assert_serves(gw)


def test_url_too_long_small_limit(portico):
    gw = portico(config=config("limits: {max_header_size: 1KiB}\n"))
    path = UNARY + "?q=" + "a" * 2000
    _expect_local_close(gw, raw_head("POST", path, grpc_headers() + [("Host", "x")]), 414,
                        "URI Too Long", "request URI too long")
    assert_serves(gw)


# --------------------------------------------------------------------------- timers


def test_header_read_timeout(portico):
    gw = portico(config=config("timeouts: {header_read: 500ms}\n"))
    with gw.connect() as conn:
        t0 = time.monotonic()
        conn.send(f"POST {UNARY} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CT}\r\n".encode())
        conn._method = "POST"
        head, body = conn.response(timeout=5)
        elapsed = time.monotonic() - t0
        assert_local_answer(head, body, 408, "Request Timeout",
                            "request head not received within 500 ms (timeouts.header_read)",
                            close=True)
        assert 0.4 <= elapsed <= 2.0, elapsed
        assert conn.wait_closed(5)
    assert_serves(gw)


def test_header_read_timeout_not_applied_to_slow_but_complete_call(portico):
    """The header_read timer stops at the end of the head: a slow upstream is not cut."""
    gw = portico(config=config("timeouts: {header_read: 500ms}\n"))
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="slow", delay_ms=1000))
    assert status == 200 and trailers["grpc-status"] == "0"
    assert EchoResponse.FromString(msgs[0]).message == "slow"
    assert_serves(gw)


@pytest.mark.parametrize("timeouts,earliest", [
    ("idle: 500ms", 0.3),
    # The timer armed for the head (400 ms) fires before the idle deadline set after the call (1 s):
    # it must re-arm for the rest, closing the connection at ~1 s, not at 400 ms or never.
    ("idle: 1s, header_read: 400ms", 0.8),
], ids=["idle", "idle-after-shorter-header-timer"])
def test_idle_timeout_closes_keep_alive_connection(portico, timeouts, earliest):
    gw = portico(config=config("timeouts: {%s}\n" % timeouts))
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers(), unary_body("idle"))
        assert_unary_ok(*conn.response(), "idle")
        t0 = time.monotonic()
        assert conn.wait_closed(5), "idle keep-alive connection was not closed"
        elapsed = time.monotonic() - t0
        assert earliest <= elapsed <= 2.0, elapsed
    assert_serves(gw)


def test_busy_keep_alive_connection_outlives_its_timeouts(portico):
    """Calls back to back on one connection for 3x the idle and header_read timeouts: every call
    moves the deadline, none is cut, and the connection still closes once idle."""
    gw = portico(config=config("timeouts: {idle: 400ms, header_read: 300ms}\n"))
    with gw.connect() as conn:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.2:
            conn.request("POST", UNARY, grpc_headers(), unary_body("busy%d" % n))
            assert_unary_ok(*conn.response(), "busy%d" % n)
            n += 1
            time.sleep(0.05)
        assert n >= 10
        t1 = time.monotonic()
        assert conn.wait_closed(5)
        assert 0.25 <= time.monotonic() - t1 <= 2.0
    assert_serves(gw)


def _released(gw, count=1, timeout=4.0):
    """Waits until `count` connections have logged that they gave back their buffers while idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.log_text().count("idle: buffers released") >= count:
            return True
        time.sleep(0.05)
    return False


def test_idle_connection_releases_its_buffers_and_wakes_for_the_next_call(portico):
    """After a second idle, a keep-alive connection gives back its bufferevent; the next request (here
    two pipelined at once, then one more) is read from the socket it kept, and served."""
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers(), unary_body("before"))
        assert_unary_ok(*conn.response(), "before")
        assert _released(gw), "the idle connection kept its buffers"
        wire = b""
        for msg in ("after-1", "after-2"):
            body = unary_body(msg)
            wire += raw_head("POST", UNARY, grpc_headers() + [("Host", "127.0.0.1"),
                                                             ("Content-Length", str(len(body)))]) + body
        conn.send(wire)
        conn._method = "POST"
        for msg in ("after-1", "after-2"):
            assert_unary_ok(*conn.response(), msg)
        assert gw.log_text().count("idle connection woke up") == 1
        # idle again: released again, and woken again
        assert _released(gw, 2), "the connection was not released a second time"
        conn.request("POST", UNARY, grpc_headers(), unary_body("again"))
        assert_unary_ok(*conn.response(), "again")
        assert gw.log_text().count("idle connection woke up") == 2
    assert_serves(gw)


def test_released_idle_connection_closes_cleanly(portico):
    """A released connection still ends: the client's close is seen, the idle timeout closes it, and a
    fresh connection that never sent a request is released and then served."""
    gw = portico(config=config("timeouts: {idle: 2500ms}\n"))
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers(), unary_body("x"))
        assert_unary_ok(*conn.response(), "x")
        assert _released(gw)
    assert gw.wait_log(r"connection closed: client closed the connection", 3), "the client's close was not seen"
    with gw.connect() as conn:
        conn.request("POST", UNARY, grpc_headers(), unary_body("y"))
        assert_unary_ok(*conn.response(), "y")
        assert _released(gw, 2)
        t0 = time.monotonic()
        assert conn.wait_closed(5), "the released connection was not closed by the idle timeout"
        assert time.monotonic() - t0 <= 2.5
    with gw.connect() as conn:  # no request yet: released too, then woken by its first request
        assert _released(gw, 3)
        conn.request("POST", UNARY, grpc_headers(), unary_body("fresh"))
        assert_unary_ok(*conn.response(), "fresh")
    assert_serves(gw)


def test_idle_timeout_on_fresh_connection(portico):
    gw = portico(config=config("timeouts: {idle: 500ms}\n"))
    with gw.connect() as conn:
        t0 = time.monotonic()
        assert conn.wait_closed(5)
        assert time.monotonic() - t0 <= 2.0
    assert_serves(gw)


def test_idle_timeout_does_not_cut_active_stream(portico):
    gw = portico(config=config("timeouts: {idle: 500ms}\n"))
    with gw.connect() as conn:
        t0 = time.monotonic()
        conn.request("POST", SERVER_STREAM, grpc_headers(),
                     grpcweb.frame(EchoRequest(message="long", count=30, interval_ms=100)))
        head = conn.read_head()
        assert head.status == 200 and head.get("content-type") == RESP_CT
        reader = grpcweb.FrameReader(conn)
        frames = list(reader)
        elapsed = time.monotonic() - t0
        msgs = [EchoResponse.FromString(p) for f, p in frames if not f & 0x80]
        assert [m.index for m in msgs] == list(range(30))
        assert frames[-1][0] == 0x80
        trailers = grpcweb.parse_trailer_block(frames[-1][1])
        assert trailers["grpc-status"] == "0", trailers
        assert elapsed >= 2.5, elapsed
        # the idle timer is armed again afterwards
        assert conn.wait_closed(5)
    assert_serves(gw)
