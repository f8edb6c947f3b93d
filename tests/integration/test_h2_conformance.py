"""HTTP/2 conformance of the browser side (RFC 9113 §3–§8 MUSTs), each case over cleartext prior knowledge
(h2c) and over TLS (ALPN h2), with hand-built frames (h2raw.py).

Each case breaks one rule and checks the answer the RFC asks for:
  - a connection error: GOAWAY with the error code (and a debug text saying why), then the connection closes;
  - a stream error: RST_STREAM with the error code on that stream, and the same connection still serves a call;
  - frames the RFC says to ignore (unknown types, unknown settings): ignored, the connection serves a call.
The refusal is counted in the admin API's /status "limits" (h2_connection_errors, h2_stream_errors) and the
gateway keeps serving. One gateway per transport serves the whole module (a connection per case).
"""

import struct

import pytest

import grpcweb
from h2gw import (UNARY, Gateways, connection_error, gateways_fixture, ignored, settled, stream_error, target_fixture,
                  unary_body)
from h2raw import (CONTINUATION, DATA, ENABLE_CONNECT_PROTOCOL, ENABLE_PUSH, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR,
                   FRAME_SIZE_ERROR, GOAWAY, HEADERS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, PADDED, PING, PREFACE,
                   PRIORITY, PROTOCOL_ERROR, PUSH_PROMISE, RST_STREAM, SETTINGS, STREAM_CLOSED, COMPRESSION_ERROR,
                   WINDOW_UPDATE, frame, request_headers)
from echo_pb import EchoRequest

gateways = gateways_fixture(lambda tmp, request: Gateways(tmp.mktemp("h2conf"), request.getfixturevalue("echo_server").port))
t = target_fixture("gateways")


def open_stream(c, sid=1, extra=()):
    """A request head without END_STREAM: the stream is open, the call waits for its body."""
    c.headers(sid, request_headers(c.port, UNARY, extra=extra), end_stream=False)


# --------------------------------------------------------------------------- §3.4 preface


def test_invalid_preface(t):
    """§3.4: an invalid preface is a connection error PROTOCOL_ERROR (GOAWAY optional). Over TLS (ALPN h2) the
    gateway sends GOAWAY PROTOCOL_ERROR; in cleartext the bytes are not the preface, so they are HTTP/1.1 and
    the request line `PRI * HTTP/2.0` is refused as such."""
    bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"
    if t.transport == "tls":
        with t.connect(preface=bad) as c:
            got, _, debug = c.goaway()
            assert (got, debug) == (PROTOCOL_ERROR, "invalid connection preface"), c.summary()
            assert c.wait_closed(6)
        t.check_counter("h2_connection_errors")
        assert t.wait_log(r"invalid connection preface: GOAWAY PROTOCOL_ERROR")
    else:
        with grpcweb.HttpConnection(t.port, timeout=5) as conn:
            conn.sock.sendall(bad)
            head = conn.read_head()
            assert head.status in (400, 505), head.status
            assert conn.wait_closed(5)


def test_preface_not_followed_by_settings(t):
    """§3.4: the preface MUST be followed by a SETTINGS frame."""
    connection_error(t, PROTOCOL_ERROR, lambda c: c.send(PREFACE + frame(PING, 0, 0, b"12345678")), "SETTINGS expected",
                     settle=False, preface=None)


# --------------------------------------------------------------------------- §4–§6 frames and stream ids

WRONG_STREAM = [
    ("DATA-on-0", lambda c: c.send_frame(DATA, 0, 0, b"x")),
    ("HEADERS-on-0", lambda c: c.headers(0, request_headers(c.port, UNARY))),
    ("RST_STREAM-on-0", lambda c: c.send_frame(RST_STREAM, 0, 0, struct.pack(">I", 8))),
    ("PRIORITY-on-0", lambda c: c.send_frame(PRIORITY, 0, 0, struct.pack(">IB", 3, 16))),
    ("CONTINUATION-on-0", lambda c: c.send_frame(CONTINUATION, END_HEADERS, 0, b"")),
    ("SETTINGS-on-1", lambda c: c.send_frame(SETTINGS, 0, 1, b"")),
    ("PING-on-1", lambda c: c.send_frame(PING, 0, 1, b"12345678")),
    ("GOAWAY-on-1", lambda c: c.send_frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0))),
]


@pytest.mark.parametrize("name,send", WRONG_STREAM, ids=[n for n, _ in WRONG_STREAM])
def test_frame_on_the_wrong_stream(t, name, send):
    """§6.1–§6.4, §6.10: DATA, HEADERS, RST_STREAM, PRIORITY, CONTINUATION name a stream: on stream 0 →
    PROTOCOL_ERROR; §6.5, §6.7, §6.8: SETTINGS, PING, GOAWAY belong to the connection: on a stream → the same."""
    connection_error(t, PROTOCOL_ERROR, send)


BAD_LENGTHS = [
    ("SETTINGS-not-multiple-of-6", lambda c: c.send_frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00")),
    ("SETTINGS-ACK-with-payload", lambda c: c.send_frame(SETTINGS, 1, 0, b"\x00\x03\x00\x00\x00\x01")),
    ("PING-7-octets", lambda c: c.send_frame(PING, 0, 0, b"1234567")),
    ("WINDOW_UPDATE-3-octets", lambda c: c.send_frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")),
    ("RST_STREAM-3-octets", lambda c: (open_stream(c), c.send_frame(RST_STREAM, 0, 1, b"\x00\x00\x08"))),
]


@pytest.mark.parametrize("name,send", BAD_LENGTHS, ids=[n for n, _ in BAD_LENGTHS])
def test_frame_with_a_wrong_length(t, name, send):
    """§6.4, §6.5, §6.7, §6.9: a fixed-size frame of another length → FRAME_SIZE_ERROR."""
    connection_error(t, FRAME_SIZE_ERROR, send)


def test_priority_with_a_wrong_length(t):
    """§6.3: a PRIORITY frame of other than 5 octets is a stream error FRAME_SIZE_ERROR (nghttp2 makes it a
    connection error, which §5.4 allows: an endpoint may treat a stream error as a connection error)."""
    connection_error(t, FRAME_SIZE_ERROR, lambda c: c.send_frame(PRIORITY, 0, 1, b"\x00\x00\x00\x03"))


@pytest.mark.parametrize("ftype", [DATA, HEADERS], ids=["DATA", "HEADERS"])
def test_frame_over_max_frame_size(t, ftype):
    """§4.2: a frame larger than SETTINGS_MAX_FRAME_SIZE (16384, not raised by the gateway) → FRAME_SIZE_ERROR."""
    def send(c):
        if ftype == DATA:
            open_stream(c)
            c.send_frame(DATA, 0, 1, b"\0" * 16385)
        else:
            c.send_frame(HEADERS, END_HEADERS, 1, c.block(request_headers(c.port, UNARY, extra=[("x-pad", "p" * 40000)])))
    connection_error(t, FRAME_SIZE_ERROR, send)


IDLE_STREAM = [
    ("DATA", lambda c: c.data(1, b"x")),
    ("RST_STREAM", lambda c: c.rst(1)),
    ("WINDOW_UPDATE", lambda c: c.window_update(1, 100)),
    ("CONTINUATION", lambda c: c.send_frame(CONTINUATION, END_HEADERS, 1, b"")),
]


@pytest.mark.parametrize("name,send", IDLE_STREAM, ids=[n for n, _ in IDLE_STREAM])
def test_frame_on_an_idle_stream(t, name, send):
    """§5.1: DATA, RST_STREAM, WINDOW_UPDATE (or a stray CONTINUATION) on an idle stream → PROTOCOL_ERROR."""
    connection_error(t, PROTOCOL_ERROR, send)


def test_even_stream_id(t):
    """§5.1.1: streams a client opens have odd ids."""
    connection_error(t, PROTOCOL_ERROR, lambda c: c.headers(2, request_headers(c.port, UNARY)))


def test_stream_id_lower_than_one_opened(t):
    """§5.1.1: a new stream id lower than one already opened → PROTOCOL_ERROR (nghttp2 1.52 ignores the block;
    the gateway checks it)."""
    def send(c):
        c.headers(3, request_headers(c.port, UNARY))
        c.headers(1, request_headers(c.port, UNARY))
    debug = connection_error(t, PROTOCOL_ERROR, send)
    assert "HEADERS for stream 1, not above the last stream opened (3)" in debug


def test_push_promise_from_a_client(t):
    """§8.4: a client cannot push (SETTINGS_ENABLE_PUSH is 0 for the server anyway) → PROTOCOL_ERROR."""
    connection_error(t, PROTOCOL_ERROR, lambda c: (open_stream(c), c.send_frame(PUSH_PROMISE, END_HEADERS, 1,
                                                                                struct.pack(">I", 2) + c.block(request_headers(c.port, UNARY)))))


def test_frame_interleaved_in_a_header_block(t):
    """§4.3: a header block is contiguous: any frame but CONTINUATION of that stream → PROTOCOL_ERROR."""
    def send(c):
        block = c.block(request_headers(c.port, UNARY))
        c.send_frame(HEADERS, END_STREAM, 1, block[:5])
        c.ping()
    connection_error(t, PROTOCOL_ERROR, send)


def test_continuation_of_another_stream(t):
    def send(c):
        block = c.block(request_headers(c.port, UNARY))
        c.send_frame(HEADERS, END_STREAM, 1, block[:5])
        c.send_frame(CONTINUATION, END_HEADERS, 3, block[5:])
    connection_error(t, PROTOCOL_ERROR, send)


def test_hpack_garbage(t):
    """§4.3: a header block that does not decode → COMPRESSION_ERROR."""
    connection_error(t, COMPRESSION_ERROR, lambda c: c.send_frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\xff\xff\xff\x0f"))


def test_padding_longer_than_the_payload(t):
    """§6.1: padding that is as long as the frame payload or longer → PROTOCOL_ERROR."""
    connection_error(t, PROTOCOL_ERROR, lambda c: (open_stream(c), c.send_frame(DATA, PADDED, 1, b"\x05abc")))


# --------------------------------------------------------------------------- §6.5 SETTINGS values

BAD_SETTINGS = [
    ("ENABLE_PUSH-2", ENABLE_PUSH, 2, PROTOCOL_ERROR),
    ("INITIAL_WINDOW_SIZE-2^31", INITIAL_WINDOW_SIZE, 1 << 31, FLOW_CONTROL_ERROR),
    ("MAX_FRAME_SIZE-16383", MAX_FRAME_SIZE, 16383, PROTOCOL_ERROR),
    ("MAX_FRAME_SIZE-2^24", MAX_FRAME_SIZE, 1 << 24, PROTOCOL_ERROR),
    ("ENABLE_CONNECT_PROTOCOL-2", ENABLE_CONNECT_PROTOCOL, 2, PROTOCOL_ERROR),
]


@pytest.mark.parametrize("name,ident,value,code", BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_invalid_settings_value(t, name, ident, value, code):
    """§6.5.2 (RFC 8441 §3 for ENABLE_CONNECT_PROTOCOL): a value out of range is a connection error."""
    connection_error(t, code, lambda c: c.settings([(ident, value)]))


def test_unknown_setting_and_frame_type_are_ignored(t):
    """§5.5, §6.5.2: unknown SETTINGS ids and unknown frame types MUST be ignored."""
    ignored(t, lambda c: (c.settings([(0x7A7A, 1)]), c.send_frame(0xFA, 0x7, 0, b"unknown"),
                          c.send_frame(0xFA, 0, 5, b"on an idle stream too")))


# --------------------------------------------------------------------------- §6.9 flow control


def test_window_update_zero_on_the_connection(t):
    """§6.9: an increment of 0 on the connection → PROTOCOL_ERROR."""
    connection_error(t, PROTOCOL_ERROR, lambda c: c.window_update(0, 0))


def test_window_update_zero_on_a_stream(t):
    """§6.9: an increment of 0 on a stream is a stream error PROTOCOL_ERROR; nghttp2 ends the connection with
    PROTOCOL_ERROR, which §5.4 allows ("an endpoint MAY choose to treat a stream error as a connection error")."""
    connection_error(t, PROTOCOL_ERROR, lambda c: (open_stream(c), c.window_update(1, 0)), "window_size_increment == 0")


def test_connection_window_overflow(t):
    """§6.9.1: a WINDOW_UPDATE taking the connection window past 2^31-1 → FLOW_CONTROL_ERROR."""
    connection_error(t, FLOW_CONTROL_ERROR, lambda c: c.window_update(0, (1 << 31) - 1))


def test_stream_window_overflow(t):
    """§6.9.1: the same on a stream → stream error FLOW_CONTROL_ERROR."""
    stream_error(t, 1, FLOW_CONTROL_ERROR, lambda c: (open_stream(c), c.window_update(1, (1 << 31) - 1)))


def test_settings_initial_window_overflowing_a_stream(t):
    """§6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE change that takes a stream's window past 2^31-1 → connection error
    FLOW_CONTROL_ERROR (nghttp2 1.52 only resets the stream; the gateway checks it)."""
    def send(c):
        open_stream(c)
        c.window_update(1, (1 << 31) - 1 - 65535)   # the stream window is now 2^31-1
        c.settings([(INITIAL_WINDOW_SIZE, 65536)])
    connection_error(t, FLOW_CONTROL_ERROR, send, "SETTINGS_INITIAL_WINDOW_SIZE 65536 takes a stream's window past 2^31-1")


def test_settings_initial_window_within_bounds(t):
    """The same change without overflow is fine: the stream's window grows by the difference."""
    def send(c):
        open_stream(c)
        c.window_update(1, (1 << 31) - 1 - 65536)
        c.settings([(INITIAL_WINDOW_SIZE, 65536)])
        c.data(1, unary_body("x"), end_stream=True)
    with settled(t) as c:
        send(c)
        status, _, body, _ = c.response(1)
        assert status == 200 and grpcweb.parse_body(body)[1]["grpc-status"] == "0"
        assert not c.find(GOAWAY) and not c.find(RST_STREAM), c.summary()


# --------------------------------------------------------------------------- §5.1 stream states


def slow_call_headers(c, sid):
    """A call that stays open a while upstream (the echo sleeps 1.5 s): the stream stays half-closed (remote)."""
    c.headers(sid, request_headers(c.port, UNARY), end_stream=False)
    c.data(sid, grpcweb.frame(EchoRequest(message="slow", delay_ms=1500)), end_stream=True)


def test_data_after_end_stream(t):
    """§5.1 half-closed (remote): DATA after END_STREAM is a stream error STREAM_CLOSED; nghttp2 makes it a
    connection error STREAM_CLOSED (§5.4 allows it)."""
    connection_error(t, STREAM_CLOSED, lambda c: (slow_call_headers(c, 1), c.data(1, b"more")), "half-closed(remote)")


def test_headers_after_end_stream(t):
    """§5.1 half-closed (remote): a second HEADERS after END_STREAM → STREAM_CLOSED (a connection error, as above)."""
    connection_error(t, STREAM_CLOSED, lambda c: (slow_call_headers(c, 1), c.headers(1, [("x-late", "1")])))


def test_data_after_the_client_reset_the_stream(t):
    """§5.1 closed: a frame other than PRIORITY on a stream the client reset may be a connection error
    STREAM_CLOSED (the stream was closed by the client's own RST_STREAM)."""
    def send(c):
        open_stream(c)
        c.rst(1)
        c.data(1, b"after the reset")
    connection_error(t, STREAM_CLOSED, send)


# --------------------------------------------------------------------------- §5.3 priority


def test_priority_frame_depending_on_itself(t):
    """§5.3.1: a stream cannot depend on itself → PROTOCOL_ERROR (a stream error in the RFC; nghttp2 ends the
    connection, as §5.4 allows)."""
    connection_error(t, PROTOCOL_ERROR, lambda c: (open_stream(c), c.priority(1, 1)))


def test_headers_depending_on_itself(t):
    connection_error(t, PROTOCOL_ERROR, lambda c: c.headers(1, request_headers(c.port, UNARY), priority=(1, 16, False)))


# --------------------------------------------------------------------------- §8 malformed requests

MALFORMED = [
    ("uppercase-name", [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", UNARY), ("Content-Type", "x")]),
    ("connection-header", "extra", [("connection", "keep-alive")]),
    ("transfer-encoding", "extra", [("transfer-encoding", "chunked")]),
    ("keep-alive", "extra", [("keep-alive", "timeout=5")]),
    ("upgrade", "extra", [("upgrade", "websocket")]),
    ("te-not-trailers", "extra", [("te", "gzip")]),
    ("missing-path", [(":method", "POST"), (":scheme", "http"), (":authority", "a")]),
    ("missing-method", [(":scheme", "http"), (":authority", "a"), (":path", UNARY)]),
    ("missing-scheme", [(":method", "POST"), (":authority", "a"), (":path", UNARY)]),
    ("empty-path", [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "")]),
    ("duplicate-path", [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", UNARY), (":path", UNARY)]),
    ("pseudo-after-regular", [(":method", "POST"), (":scheme", "http"), ("x-a", "1"), (":authority", "a"), (":path", UNARY)]),
    ("unknown-pseudo", [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", UNARY), (":foo", "1")]),
    ("response-pseudo", [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", UNARY), (":status", "200")]),
    ("nul-in-value", "extra", [("x-a", "a\0b")]),
    ("newline-in-value", "extra", [("x-a", "a\nb")]),
    ("space-in-name", "extra", [("x a", "1")]),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_head(t, case):
    """§8.1.1, §8.2, §8.3: a malformed request (field names in upper case, connection-specific fields, TE other
    than trailers, missing/empty/duplicate/unknown pseudo-headers, a pseudo-header after a field, invalid
    characters) → stream error PROTOCOL_ERROR; no call starts and the connection serves on."""
    hdrs = request_headers(t.port, UNARY, extra=case[2]) if case[1] == "extra" else case[1]
    stream_error(t, 1, PROTOCOL_ERROR, lambda c: c.headers(1, hdrs), no_call=True)


def test_te_trailers_is_allowed(t):
    """§8.2.2: TE may carry "trailers" (gRPC clients send it)."""
    with t.connect() as c:
        c.headers(1, request_headers(t.port, UNARY, extra=[("te", "trailers")]), end_stream=False)
        c.data(1, unary_body("te"), end_stream=True)
        status, _, body, _ = c.response(1)
        assert status == 200
        frames, trailers = grpcweb.parse_body(body)
        assert trailers["grpc-status"] == "0"


def test_pseudo_header_in_trailers(t):
    """§8.1: trailers carry no pseudo-header fields."""
    def send(c):
        open_stream(c)
        c.data(1, unary_body("x"))
        c.headers(1, [(":path", "/x")], end_stream=True)
    stream_error(t, 1, PROTOCOL_ERROR, send)


def test_trailers_without_end_stream(t):
    """§8.1: a second header block (trailers) must end the stream."""
    def send(c):
        open_stream(c)
        c.headers(1, [("x-trailer", "1")], end_stream=False)
    stream_error(t, 1, PROTOCOL_ERROR, send)


def test_content_length_mismatch(t):
    """§8.1.1: DATA that does not add up to content-length → stream error PROTOCOL_ERROR."""
    def send(c):
        open_stream(c, extra=[("content-length", "100")])
        c.data(1, unary_body("short"), end_stream=True)
    stream_error(t, 1, PROTOCOL_ERROR, send)
