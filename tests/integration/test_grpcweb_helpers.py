"""Self-tests of grpcweb.py (framing, text decoding, raw HTTP/1.1 client) against a
scripted loopback server, so gateway test failures can be trusted."""

import socket
import threading

import pytest

import grpcweb
from echo_pb import EchoResponse


def test_frame_roundtrip():
    msg = EchoResponse(message="hi", index=3)
    body = (grpcweb.frame(msg) + grpcweb.frame(b"") +
            grpcweb.trailer_frame([("grpc-status", "0"), ("x-a", "1"), ("x-a", "2")]))
    assert body[:5] == b"\x00\x00\x00\x00" + bytes([len(msg.SerializeToString())])
    frames, trailers = grpcweb.parse_body(body)
    assert [f for f, _ in frames] == [0, 0, 0x80]
    assert EchoResponse.FromString(grpcweb.messages_of(frames)[0]) == msg
    assert trailers == {"grpc-status": "0", "x-a": "1,2"}
    assert grpcweb.grpc_status({}, trailers) == (0, "")


def test_parse_body_trailers_variants():
    payload = b"Grpc-Status: 3\r\ngrpc-message:bad%20thing\r\nx-bin:AAH+/w==\r\n"
    _, trailers = grpcweb.parse_body(grpcweb.frame(payload, 0x80))
    assert trailers == {"grpc-status": "3", "grpc-message": "bad%20thing", "x-bin": "AAH+/w=="}
    frames, trailers = grpcweb.parse_body(b"")
    assert frames == [] and trailers is None
    assert grpcweb.grpc_status({"grpc-status": "7", "grpc-message": "no"}, None) == (7, "no")


@pytest.mark.parametrize("body", [
    grpcweb.frame(b"abc")[:-1],                                      # truncated
    grpcweb.trailer_frame({"grpc-status": "0"}) + grpcweb.frame(b"x"),  # data after trailers
    grpcweb.trailer_frame({"a": "1"}) + grpcweb.trailer_frame({"b": "2"}),
    grpcweb.frame(b"no colon", 0x80),
])
def test_parse_body_rejects(body):
    with pytest.raises(ValueError):
        grpcweb.parse_body(body)


def test_text_decoding_segments():
    a, b = grpcweb.frame(b"hello"), grpcweb.trailer_frame({"grpc-status": "0"})
    joined = grpcweb.encode_text(a) + grpcweb.encode_text(b)   # per-frame padded segments
    assert b"=" in grpcweb.encode_text(a)
    frames, trailers = grpcweb.parse_body(joined, text=True)
    assert grpcweb.messages_of(frames) == [b"hello"] and trailers == {"grpc-status": "0"}
    assert grpcweb.decode_text(b"aGVs\r\nbG8=") == b"hello"
    with pytest.raises(ValueError):
        grpcweb.decode_text(b"aGVsbG8")
    with pytest.raises(ValueError):
        grpcweb.decode_text(b"aGV*")


def test_request_headers_override():
    h = dict(grpcweb.request_headers(text=True, extra={"accept": "*/*", "x-y": "z"}))
    assert h["Content-Type"] == grpcweb.CT_TEXT and h["accept"] == "*/*" and "Accept" not in h


class ScriptedServer:
    """Accepts one connection; for each request head received sends the next canned
    response (a list of byte strings sent with pauses in between). Closes the connection
    after the last response unless `hold` is set (then it waits for close())."""

    def __init__(self, responses, hold=False):
        self.responses = responses
        self.hold = hold
        self.closing = threading.Event()
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.sock.accept()
        buf = b""
        with conn:
            for parts in self.responses:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append((head, buf[:length]))
                buf = buf[length:]
                for part in parts:
                    conn.sendall(part)
                    self.closing.wait(0.02)
            if self.hold:
                self.closing.wait(10)

    def close(self):
        self.closing.set()
        self.sock.close()
        self.thread.join(2)


def test_http_client_chunked_keepalive_and_call():
    grpc_body = grpcweb.frame(b"m1") + grpcweb.trailer_frame({"grpc-status": "0"})
    text_body = grpcweb.encode_text(grpcweb.frame(b"m2")) + grpcweb.encode_text(
        grpcweb.trailer_frame({"grpc-status": "5", "grpc-message": "nf"}))
    srv = ScriptedServer([
        [b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web+proto\r\n"
         b"Transfer-Encoding: chunked\r\nX-Mixed-Case: v\r\n\r\n",
         b"%x\r\n%s\r\n" % (7, grpc_body[:7]),
         b"%x;ext=1\r\n%s\r\n" % (len(grpc_body) - 7, grpc_body[7:]),
         b"0\r\nx-http-trailer: t\r\n\r\n"],
        [b"HTTP/1.1 100 Continue\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web-text+proto\r\n"
         b"Content-Length: %d\r\n\r\n" % len(text_body), text_body],
        [b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\n"
         b"grpc-status: 7\r\ngrpc-message: denied\r\ncontent-length: 0\r\n\r\n"],
    ])
    try:
        with grpcweb.HttpConnection(srv.port, timeout=5) as conn:
            conn.request("POST", "/svc/M", grpcweb.request_headers(), grpcweb.frame(b"req"))
            head = conn.read_head()
            assert head.status == 200 and ("X-Mixed-Case", "v") in head.headers
            reader = grpcweb.FrameReader(conn)
            assert reader.next_frame() == (0, b"m1")
            assert reader.next_frame()[0] == 0x80
            assert reader.next_frame() is None
            assert conn.chunk_sizes == [7, len(grpc_body) - 7]
            assert conn.http_trailers == [("x-http-trailer", "t")]

            status, headers, msgs, trailers = grpcweb.call(
                srv.port, "/svc/M", b"req2", text=True, conn=conn)
            assert (status, msgs, trailers) == (200, [b"m2"], {"grpc-status": "5",
                                                               "grpc-message": "nf"})

            status, headers, msgs, trailers = grpcweb.call(srv.port, "/svc/M", b"", conn=conn)
            assert (status, msgs, trailers) == (200, [], None)
            assert grpcweb.grpc_status(headers, trailers) == (7, "denied")
            assert conn.wait_closed(2)
        head0, body0 = srv.requests[0]
        assert head0.startswith(b"POST /svc/M HTTP/1.1\r\nHost: 127.0.0.1:")
        assert body0 == grpcweb.frame(b"req")
        assert grpcweb.decode_text(srv.requests[1][1]) == grpcweb.frame(b"req2")
    finally:
        srv.close()


def test_http_client_read_timeout():
    srv = ScriptedServer([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]],
                         hold=True)
    try:
        with grpcweb.HttpConnection(srv.port, timeout=5) as conn:
            conn.request("POST", "/x", body=b"")
            conn.read_head()
            with pytest.raises((socket.timeout, TimeoutError)):
                conn.read_chunk(timeout=0.2)
    finally:
        srv.close()
