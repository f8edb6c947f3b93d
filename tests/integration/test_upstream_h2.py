"""The gateway's own HTTP/2 client (src/upstream/h2client.c) against an upstream that speaks HTTP/2 frame by frame:
what a well-behaved server may legitimately send (CONTINUATION, padding, priority, 1xx, PING, unknown frames, a
small send window, large request metadata), and what a broken one sends — malformed responses end only their
stream (RST_STREAM, the connection serves on), broken connections end with GOAWAY and the right error code
(RFC 9113 §5.4). The upstream is a raw socket server in this file; the client is gRPC-Web over HTTP/1.1."""

import socket
import struct
import threading
import time

import hpack
import pytest

import grpcweb
from echo_pb import EchoRequest, EchoResponse
from test_h2 import H2Client, body_of
from h2raw import (CONTINUATION, DATA, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, HEADERS,
                   INITIAL_WINDOW_SIZE, PADDED, PING, PREFACE, PRIORITY_FLAG, PROTOCOL_ERROR, PUSH_PROMISE, RST_STREAM,
                   SETTINGS, STREAM_CLOSED, WINDOW_UPDATE, COMPRESSION_ERROR, ACK, frame, settings_payload)

UNARY = "/portico.test.Echo/Unary"
OK_HEAD = [(":status", "200"), ("content-type", "application/grpc")]
OK_TRAILERS = [("grpc-status", "0")]


class Peer:
    """One accepted upstream connection, driven by a test's handler (in its own thread)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.frames = []  # every frame the gateway sent: (type, flags, sid, payload)
        self.settings = {}

    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, ftype, flags, sid, payload=b""):
        self.send(frame(ftype, flags, sid, payload))

    def block(self, fields):
        return self.encoder.encode(fields)

    def headers(self, sid, fields, end_stream=False):
        self.send_frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, self.block(fields))

    def respond(self, sid, message):
        self.headers(sid, OK_HEAD)
        self.send_frame(DATA, 0, sid, grpcweb.frame(EchoResponse(message=message).SerializeToString()))
        self.headers(sid, OK_TRAILERS, end_stream=True)

    def _read(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("gateway closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        head = self._read(9)
        length = int.from_bytes(head[:3], "big")
        f = (head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7fffffff, self._read(length))
        self.frames.append(f)
        if f[0] == SETTINGS and not f[1] & ACK:
            for i in range(0, len(f[3]), 6):
                k, v = struct.unpack(">HI", f[3][i:i + 6])
                self.settings[k] = v
        return f

    def start(self, settings=(), ack=True):
        """Reads the preface and the gateway's SETTINGS; sends ours (and the ACK)."""
        assert self._read(len(PREFACE)) == PREFACE
        f = self.recv_frame()
        assert f[0] == SETTINGS and not f[1] & ACK, f
        self.send_frame(SETTINGS, 0, 0, settings_payload(settings))
        if ack:
            self.send_frame(SETTINGS, ACK, 0)

    def request(self):
        """The next request: (stream id, header fields, body bytes), once its END_STREAM came."""
        sid, fields, body, block = None, None, b"", b""
        while True:
            t, flags, s, payload = self.recv_frame()
            if t in (HEADERS, CONTINUATION):
                block += payload
                sid = s
                if flags & END_HEADERS:
                    fields = self.decoder.decode(block)
                    block = b""
                if flags & END_STREAM:
                    return sid, fields, body
            elif t == DATA:
                body += payload
                if flags & END_STREAM:
                    return s, fields, body

    def wait_for(self, ftype, sid=None, timeout=5):
        """The next frame of this type (and stream) the gateway sends."""
        self.sock.settimeout(timeout)
        while True:
            f = self.recv_frame()
            if f[0] == ftype and (sid is None or f[2] == sid):
                return f


class RawUpstream:
    """Accepts connections on a loopback port; each is handed to handler(peer) in a thread of its own."""

    def __init__(self, handler):
        self.handler, self.peers, self.errors = handler, [], []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(10)
            peer = Peer(sock)
            self.peers.append(peer)
            threading.Thread(target=self._run, args=(peer,), daemon=True).start()

    def _run(self, peer):
        try:
            self.handler(peer)
        except (EOFError, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))

    def stop(self):
        self.listener.close()
        for p in self.peers:
            try:
                p.sock.close()
            except OSError:
                pass


@pytest.fixture
def raw_upstream():
    made = []

    def make(handler):
        up = RawUpstream(handler)
        made.append(up)
        return up
    yield make
    for up in made:
        up.stop()
        assert not up.errors, up.errors


def wait_key(seen, key, timeout=5):
    """seen[key], once the upstream's handler thread has stored it."""
    deadline = time.time() + timeout
    while key not in seen and time.time() < deadline:
        time.sleep(0.01)
    return seen[key]


def config(up, extra):
    return f"""
listeners: ['127.0.0.1:{{listen_port}}']
log_level: debug
workers: 1
{extra}
upstreams: [{{name: up, endpoints: ['127.0.0.1:{up.port}']}}]
routes: [{{prefix: /, upstream: up}}]
"""


def call(gw, message="hi", headers=()):
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=message), headers=headers, timeout=10)
    assert status == 200, (status, hdrs)
    t = trailers if trailers is not None else hdrs
    return t.get("grpc-status"), t.get("grpc-message", ""), [EchoResponse.FromString(m).message for m in msgs]


# --------------------------------------------------------------------------- what a server may send


def test_unusual_but_valid_framing(portico, raw_upstream):
    """HEADERS split over CONTINUATION frames, padded HEADERS with a priority, padded DATA, a 1xx response first,
    an unknown frame type, a PING (answered with the same payload): the call succeeds."""
    def handler(p):
        p.start()
        sid, fields, body = p.request()
        assert dict(fields)[":method"] == "POST" and EchoRequest.FromString(body[5:]).message == "odd", fields
        p.headers(sid, [(":status", "100")])
        p.send_frame(0xfa, 0, 0, b"unknown extension frame")
        p.send_frame(PING, 0, 0, b"pingpong")
        block = p.block(OK_HEAD + [("x-a", "a" * 40), ("x-tab", "a\tbcdefghijk\tl"), ("x-obs", "h\u00e9llo w\u00f6rld")])
        p.send_frame(HEADERS, PADDED | PRIORITY_FLAG, sid, bytes([3]) + struct.pack(">IB", 0, 15) + block[:10] + b"\0\0\0")
        p.send_frame(CONTINUATION, 0, sid, block[10:20])
        p.send_frame(CONTINUATION, END_HEADERS, sid, block[20:])
        msg = grpcweb.frame(EchoResponse(message="padded").SerializeToString())
        p.send_frame(DATA, PADDED, sid, bytes([7]) + msg + b"\0" * 7)
        p.headers(sid, OK_TRAILERS, end_stream=True)
        ack = p.wait_for(PING)
        assert ack[1] & ACK and ack[3] == b"pingpong", ack
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="odd"), timeout=10)
    assert (status, trailers.get("grpc-status")) == (200, "0"), (status, hdrs, trailers)
    assert [EchoResponse.FromString(m).message for m in msgs] == ["padded"]
    assert hdrs["x-a"] == "a" * 40 and hdrs["x-tab"] == "a\tbcdefghijk\tl", hdrs


def test_content_length_then_trailers(portico, raw_upstream):
    """A response whose content-length matches its DATA, then trailers: a well-formed answer (the body is checked
    against content-length when the trailers end the stream)."""
    def handler(p):
        p.start()
        for _ in range(2):
            sid, _, _ = p.request()
            msg = grpcweb.frame(EchoResponse(message="sized").SerializeToString())
            p.headers(sid, OK_HEAD + [("content-length", str(len(msg)))])
            p.send_frame(DATA, 0, sid, msg)
            p.headers(sid, OK_TRAILERS, end_stream=True)
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    assert call(gw) == ("0", "", ["sized"])
    assert call(gw) == ("0", "", ["sized"])


@pytest.mark.parametrize("size", [100, 300], ids=["kept-in-the-call", "buffered"])
def test_request_body_follows_a_small_send_window(portico, raw_upstream, size):
    """The server's SETTINGS_INITIAL_WINDOW_SIZE of 10 bytes: the request body goes out in DATA frames that never
    exceed what its WINDOW_UPDATEs allow, and arrives whole (a small body is kept in the call itself and sent from
    there ten bytes at a time, a larger one from its buffer)."""
    got = {}

    def handler(p):
        p.start(settings=[(INITIAL_WINDOW_SIZE, 10)])
        body, sid, credit = b"", None, 10
        while True:
            t, flags, s, payload = p.recv_frame()
            if t == HEADERS:
                sid = s
            elif t == DATA and s == sid:
                assert len(payload) <= credit, (len(payload), credit)
                credit -= len(payload)
                body += payload
                if flags & END_STREAM:
                    break
                if credit == 0:
                    time.sleep(0.01)
                    p.send_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 7))
                    credit += 7
        got["body"] = body
        p.respond(sid, "windowed")
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    message = "w" * size
    assert call(gw, message) == ("0", "", ["windowed"])
    assert EchoRequest.FromString(got["body"][5:]).message == message


@pytest.mark.parametrize("client", ["http1", "h2", "h2-small-window"])
@pytest.mark.parametrize("split", [False, True], ids=["one-data-frame", "frame-per-message"])
def test_response_messages_of_mixed_sizes_keep_their_order(portico, raw_upstream, split, client):
    """Small messages (handed to the client from memory), a large one (through the call's buffer) and small ones
    again, in one DATA frame or one each, then the trailers: every message arrives whole and in order, over
    HTTP/1.1 and HTTP/2 (there also while the client's window holds the response back)."""
    sizes = [3, 0, 2000, 5, 70000, 1, 900, 4]
    msgs = [grpcweb.frame(EchoResponse(message=str(i), payload=b"p" * n).SerializeToString()) for i, n in enumerate(sizes)]

    def handler(p):
        p.start()
        sid, _, _ = p.request()
        p.headers(sid, OK_HEAD)
        data = b"".join(msgs)
        pieces = msgs if split else [data[i:i + 16384] for i in range(0, len(data), 16384)]
        for piece in pieces:
            for i in range(0, len(piece), 16384):
                p.send_frame(DATA, 0, sid, piece[i:i + 16384])
        p.headers(sid, OK_TRAILERS, end_stream=True)
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    if client == "http1":
        status, hdrs, got, trailers = gw.call(UNARY, EchoRequest(message="mixed"), timeout=10)
    else:
        with H2Client(gw.port, initial_window=1000 if client == "h2-small-window" else None) as c:
            st = c.call(UNARY, body_of(EchoRequest(message="mixed")))
            assert st.ended and st.reset_code is None, (st.frames, st.reset_code)
            status, hdrs = st.status, st.hdict()
            got, trailers = st.grpcweb()
    assert (status, trailers.get("grpc-status")) == (200, "0"), (status, hdrs, trailers)
    got = [EchoResponse.FromString(m) for m in got]
    assert [(m.message, len(m.payload)) for m in got] == [(str(i), n) for i, n in enumerate(sizes)]


def test_request_fields_of_calls_that_wait_for_the_connection(portico, raw_upstream):
    """Calls made while the upstream connection is still being set up (their header block waits in the call,
    copied out of the request that is gone by then), then calls on the open connection (the block encoded straight
    from the request): every request arrives upstream with its own metadata, request id and trace context."""
    got, release = [], threading.Event()

    def handler(p):
        release.wait(10)  # the gateway's calls queue while the connection's SETTINGS exchange waits
        p.start()
        streams, block = {}, b""
        while True:  # requests interleave: fields and body collected per stream
            t, flags, sid, payload = p.recv_frame()
            if t in (HEADERS, CONTINUATION):
                block += payload
                if flags & END_HEADERS:
                    streams[sid] = [dict(p.decoder.decode(block)), b""]
                    block = b""
            elif t == DATA:
                streams[sid][1] += payload
            if t in (HEADERS, DATA) and flags & END_STREAM:
                fields, body = streams.pop(sid)
                got.append((fields, EchoRequest.FromString(body[5:]).message))
                p.respond(sid, "ok")
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    results = {}

    def one(i):
        results[i] = call(gw, f"m{i}", headers=[("x-tag", f"tag-{i}-" + "v" * (40 * i)), ("x-grpc-web", "1")])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10  # all six started (and so queued) before the connection opens
    while gw.log_text().count(": starting (") < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.log_text().count(": starting (") == 6, gw.log_text()[-3000:]
    release.set()
    for t in threads:
        t.join(15)
    for i in range(6, 9):
        one(i)
    assert results == {i: ("0", "", ["ok"]) for i in range(9)}, results
    assert sorted(m for _, m in got) == sorted(f"m{i}" for i in range(9)), got
    ids = set()
    for fields, m in got:
        i = int(m[1:])
        assert fields["x-tag"] == f"tag-{i}-" + "v" * (40 * i), (m, fields)
        assert fields[":path"] == UNARY and fields[":method"] == "POST" and fields["te"] == "trailers", fields
        assert len(fields["x-request-id"]) == 36 and fields["traceparent"].startswith("00-"), fields
        ids.add(fields["x-request-id"])
    assert len(ids) == 9, got


def test_large_request_metadata_goes_in_continuation_frames(portico, raw_upstream):
    """A request header block larger than the server's SETTINGS_MAX_FRAME_SIZE (16 KiB) is split into HEADERS and
    CONTINUATION frames; the server decodes the field intact."""
    got = {}

    def handler(p):
        p.start()
        sid, fields, _ = p.request()
        got["fields"] = dict(fields)
        got["types"] = [f[0] for f in p.frames if f[2] == sid and f[0] in (HEADERS, CONTINUATION)]
        p.respond(sid, "big")
    up = raw_upstream(handler)
    gw = portico(config=config(up, "limits: {max_header_size: 64KiB}"))
    value = "v" * 40000
    assert call(gw, headers=[("x-big", value)]) == ("0", "", ["big"])
    assert got["fields"]["x-big"] == value
    assert got["types"][0] == HEADERS and got["types"][1:] == [CONTINUATION] * (len(got["types"]) - 1), got["types"]
    assert len(got["types"]) >= 3, got["types"]


# --------------------------------------------------------------------------- repeated header blocks
# The client keeps blocks that leave the HPACK dynamic table as it is decoded, and answers the same bytes from there
# while the table is unchanged (h2client.c, "repeated header blocks"). These hand-made blocks index the table.

def hstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def lit_indexed(name, value):
    """A literal with incremental indexing, new name (RFC 7541 §6.2.1): it enters the dynamic table as entry 62."""
    return b"\x40" + hstr(name) + hstr(value)


def lit_plain(name, value):
    """A literal without indexing, new name (§6.2.2): the table stays as it is."""
    return b"\x00" + hstr(name) + hstr(value)


def serve_blocks(p, blocks, trailers):
    """Answers one call per header block in blocks, each with a message and the trailers block."""
    p.start()
    for block in blocks:
        sid, _, _ = p.request()
        p.send_frame(HEADERS, END_HEADERS, sid, block)
        p.send_frame(DATA, 0, sid, grpcweb.frame(EchoResponse(message="m").SerializeToString()))
        p.send_frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers)


def test_repeated_header_blocks_follow_the_dynamic_table(portico, raw_upstream):
    """The same bytes indexing the dynamic table ([:status 200, entry 63, entry 62]) mean x-v: one, and after a block
    that adds entries, x-v: two: each call gets what the table says at the time, the repeats as the first."""
    same = bytes([0x88, 0x80 | 63, 0x80 | 62])
    ct = ("content-type", "application/grpc")
    blocks = [b"\x88" + lit_indexed(*ct) + lit_indexed("x-v", "one"),  # 62 x-v: one, 63 content-type
              same, same, same,
              b"\x88" + lit_indexed(*ct) + lit_indexed("x-v", "two"),  # 62 x-v: two, 63 content-type, then the old
              same, same]
    up = raw_upstream(lambda p: serve_blocks(p, blocks, lit_plain("grpc-status", "0")))
    gw = portico(upstream=up.port)
    seen = []
    for _ in blocks:
        status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message="x"), timeout=10)
        assert status == 200 and trailers.get("grpc-status") == "0", (status, hdrs, trailers)
        seen.append(hdrs.get("x-v"))
    assert seen == ["one"] * 4 + ["two"] * 3, seen
    assert len(up.peers) == 1


def test_repeated_header_blocks_are_checked_every_time(portico, raw_upstream):
    """A block kept decoded is still checked where it comes: the same bytes that were a well-formed response are a
    malformed trailer block (a pseudo-header field), and a block with an invalid value fails on every call."""
    head = b"\x88" + lit_plain("content-type", "application/grpc")
    bad = head + lit_plain("x-bad", " v")
    seen = {}

    def handler(p):
        p.start()
        for i in range(3):
            sid, _, _ = p.request()
            p.send_frame(HEADERS, END_HEADERS, sid, head)
            p.send_frame(HEADERS, END_HEADERS | END_STREAM, sid, head)  # as trailers
            seen[f"rst{i}"] = p.wait_for(RST_STREAM, sid)
        for i in range(3):
            sid, _, _ = p.request()
            p.send_frame(HEADERS, END_HEADERS, sid, bad)
            seen[f"bad{i}"] = p.wait_for(RST_STREAM, sid)
        sid, _, _ = p.request()
        p.send_frame(HEADERS, END_HEADERS, sid, head)
        p.send_frame(DATA, 0, sid, grpcweb.frame(EchoResponse(message="fine").SerializeToString()))
        p.send_frame(HEADERS, END_HEADERS | END_STREAM, sid, lit_plain("grpc-status", "0"))
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    for reason in ["pseudo-header field in trailers"] * 3 + ["invalid field value"] * 3:
        status, message, _ = call(gw)
        assert (status, message) == ("13", f"invalid HTTP/2 response from upstream: {reason} (stream reset by the gateway)")
    assert call(gw) == ("0", "", ["fine"])
    assert len(up.peers) == 1

# --------------------------------------------------------------------------- malformed responses: stream errors

def data_first(p, sid):
    p.send_frame(DATA, 0, sid, grpcweb.frame(b""))


def upper_case_name(p, sid):
    p.headers(sid, OK_HEAD + [("X-Upper", "1")])


def control_in_value(p, sid):
    p.headers(sid, OK_HEAD + [("x-bad", "abcdefghij\x01klmnop")])


def leading_space(p, sid):
    p.headers(sid, OK_HEAD + [("x-bad", " v")])


def no_status(p, sid):
    p.headers(sid, [("content-type", "application/grpc")])


def connection_field(p, sid):
    p.headers(sid, OK_HEAD + [("connection", "close")])


def pseudo_in_trailers(p, sid):
    p.headers(sid, OK_HEAD)
    p.headers(sid, [(":status", "200"), ("grpc-status", "0")], end_stream=True)


def trailers_not_ending(p, sid):
    p.headers(sid, OK_HEAD)
    p.headers(sid, OK_TRAILERS, end_stream=False)


def short_body(p, sid):
    p.headers(sid, OK_HEAD + [("content-length", "100")])
    p.send_frame(DATA, END_STREAM, sid, grpcweb.frame(b""))


def short_body_then_trailers(p, sid):
    p.headers(sid, OK_HEAD + [("content-length", "100")])
    p.send_frame(DATA, 0, sid, grpcweb.frame(b""))
    p.headers(sid, OK_TRAILERS, end_stream=True)


def after_end(p, sid):
    p.headers(sid, OK_HEAD + OK_TRAILERS, end_stream=True)
    p.send_frame(DATA, 0, sid, b"late")


@pytest.mark.parametrize("misbehave,code,reason", [
    (data_first, PROTOCOL_ERROR, "DATA before the response's HEADERS"),
    (upper_case_name, PROTOCOL_ERROR, "invalid field name"),
    (control_in_value, PROTOCOL_ERROR, "invalid field value"),
    (leading_space, PROTOCOL_ERROR, "invalid field value"),
    (no_status, PROTOCOL_ERROR, "response without :status"),
    (connection_field, PROTOCOL_ERROR, "connection-specific field"),
    (pseudo_in_trailers, PROTOCOL_ERROR, "pseudo-header field in trailers"),
    (trailers_not_ending, PROTOCOL_ERROR, "trailers without END_STREAM"),
    (short_body, PROTOCOL_ERROR, "response body does not match its content-length"),
    (short_body_then_trailers, PROTOCOL_ERROR, "response body does not match its content-length"),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_malformed_response_resets_only_its_stream(portico, raw_upstream, misbehave, code, reason):
    """RFC 9113 §8.1.1: a malformed response is a stream error: RST_STREAM with PROTOCOL_ERROR, the call fails
    with INTERNAL, and the next call goes over the same connection."""
    seen = {}

    def handler(p):
        p.start()
        sid, _, _ = p.request()
        misbehave(p, sid)
        seen["rst"] = p.wait_for(RST_STREAM, sid)
        sid2, _, _ = p.request()
        p.respond(sid2, "after")
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    status, message, _ = call(gw)
    assert (status, message) == ("13", f"invalid HTTP/2 response from upstream: {reason} (stream reset by the gateway)")
    assert gw.wait_log(rf"stream 1: {reason}: RST_STREAM PROTOCOL_ERROR")
    assert int.from_bytes(wait_key(seen, "rst")[3], "big") == code
    assert call(gw, "again") == ("0", "", ["after"])
    assert len(up.peers) == 1


def test_data_after_the_end_of_the_stream_is_ignored_or_reset(portico, raw_upstream):
    """DATA after the server's END_STREAM: the call has its answer already; the stream is closed on the gateway's
    side (the frame is ignored) and the connection serves on."""
    def handler(p):
        p.start()
        sid, _, _ = p.request()
        after_end(p, sid)
        sid2, _, _ = p.request()
        p.respond(sid2, "after")
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    assert call(gw)[0] == "0"
    assert call(gw, "again") == ("0", "", ["after"])
    assert len(up.peers) == 1


def test_data_beyond_the_stream_window(portico, raw_upstream):
    """DATA beyond the stream window the gateway offered (limits.stream_window_size, after the server acknowledged
    it) → RST_STREAM FLOW_CONTROL_ERROR."""
    seen = {}

    def handler(p):
        p.start()
        sid, _, _ = p.request()
        assert p.settings[INITIAL_WINDOW_SIZE] == 1024, p.settings
        p.headers(sid, OK_HEAD)
        p.send_frame(DATA, 0, sid, b"\0" * 1025)
        seen["rst"] = p.wait_for(RST_STREAM, sid)
    up = raw_upstream(handler)
    gw = portico(config=config(up, "limits: {stream_window_size: 1024}"))
    status, _, _ = call(gw)
    assert status == "13", status  # FLOW_CONTROL_ERROR → INTERNAL
    assert int.from_bytes(wait_key(seen, "rst")[3], "big") == FLOW_CONTROL_ERROR


# --------------------------------------------------------------------------- broken connections: GOAWAY

def first_frame_ping(p):
    assert p._read(len(PREFACE)) == PREFACE
    p.send_frame(PING, 0, 0, b"12345678")


def push_promise(p):
    p.start()
    sid, _, _ = p.request()
    p.send_frame(PUSH_PROMISE, END_HEADERS, sid, struct.pack(">I", 2) + p.block([(":method", "GET")]))


def even_stream(p):
    p.start()
    p.request()
    p.headers(2, OK_HEAD)


def oversized_frame(p):
    p.start()
    sid, _, _ = p.request()
    p.headers(sid, OK_HEAD)
    p.send_frame(DATA, 0, sid, b"\0" * 16385)


def bad_hpack(p):
    p.start()
    sid, _, _ = p.request()
    p.send_frame(HEADERS, END_HEADERS, sid, b"\xff\xff\xff\x7f")  # indexed field far beyond both tables


def zero_window_update(p):
    p.start()
    p.request()
    p.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0))


def stray_continuation(p):
    p.start()
    sid, _, _ = p.request()
    p.send_frame(CONTINUATION, END_HEADERS, sid, p.block(OK_HEAD))


def interrupted_block(p):
    p.start()
    sid, _, _ = p.request()
    p.send_frame(HEADERS, 0, sid, p.block(OK_HEAD))
    p.send_frame(PING, 0, 0, b"12345678")


def settings_push(p):
    p.start(settings=[(2, 1)])


@pytest.mark.parametrize("misbehave,code,reason", [
    (first_frame_ping, PROTOCOL_ERROR, "the server's first frame is not SETTINGS"),
    (push_promise, PROTOCOL_ERROR, "PUSH_PROMISE, though push is disabled"),
    (even_stream, PROTOCOL_ERROR, "HEADERS on stream 2, which the gateway did not open"),
    (oversized_frame, FRAME_SIZE_ERROR, "frame of 16385 bytes"),
    (bad_hpack, COMPRESSION_ERROR, "header block cannot be decoded"),
    (zero_window_update, PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection"),
    (stray_continuation, PROTOCOL_ERROR, "CONTINUATION without a header block to continue"),
    (interrupted_block, PROTOCOL_ERROR, "frame of type 6 inside a header block"),
    (settings_push, PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH 1 from a server"),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_connection_error_sends_goaway(portico, raw_upstream, misbehave, code, reason):
    """RFC 9113 §5.4.1: the gateway sends GOAWAY with the error code (its reason as debug data), closes the
    connection, and the call fails with UNAVAILABLE."""
    seen = {}

    def handler(p):
        misbehave(p)
        seen["goaway"] = p.wait_for(GOAWAY)
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    status, message, _ = call(gw)
    assert status == "14", (status, message)
    assert gw.wait_log(r"HTTP/2 protocol error from upstream: " + reason)
    payload = wait_key(seen, "goaway")[3]
    assert int.from_bytes(payload[4:8], "big") == code and payload[8:].decode().startswith(reason[:40]), payload


def test_goaway_refuses_the_streams_it_did_not_process(portico, raw_upstream):
    """GOAWAY with last stream 0 while stream 1 is open: the call fails with UNAVAILABLE (REFUSED_STREAM), the
    connection drains and closes, and the next call opens a new connection."""
    def handler(p):
        p.start()
        sid, _, _ = p.request()
        if len(up.peers) == 1:
            p.send_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))
            p.wait_for(-1, timeout=5)  # until the gateway closes
        else:
            p.respond(sid, "second")
    up = raw_upstream(handler)
    gw = portico(upstream=up.port)
    status, message, _ = call(gw)
    assert status == "14" and "REFUSED_STREAM" in message, (status, message)
    assert gw.wait_log(r"closed: drained after GOAWAY")
    assert call(gw, "again") == ("0", "", ["second"])
    assert len(up.peers) == 2
