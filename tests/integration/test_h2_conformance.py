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


# --------------------------------------------------------------------------- §8 malformed requests, the rest of the rules
# (the gateway checks these itself: nghttp2's HTTP messaging checks are off; each case breaks one rule of a request
# that is otherwise served)

def _head(t, *fields, drop=()):
    """The regular request head with `fields` added (a pseudo-header field before the regular ones), `drop` removed."""
    base = [h for h in request_headers(t.port, UNARY) if h[0] not in drop]
    pseudo = [h for h in base if h[0].startswith(":")] + [f for f in fields if f[0].startswith(":")]
    return pseudo + [h for h in base if not h[0].startswith(":")] + [f for f in fields if not f[0].startswith(":")]


MALFORMED_MORE = [
    ("proxy-connection", lambda t: _head(t, ("proxy-connection", "keep-alive"))),
    ("duplicate-method", lambda t: _head(t, (":method", "POST"))),
    ("duplicate-scheme", lambda t: _head(t, (":scheme", "http"))),
    ("duplicate-authority", lambda t: _head(t, (":authority", "a"))),
    ("empty-method", lambda t: _head(t, (":method", ""), drop=(":method",))),
    ("empty-scheme", lambda t: _head(t, (":scheme", ""), drop=(":scheme",))),
    ("empty-authority", lambda t: _head(t, (":authority", ""), drop=(":authority",))),
    ("missing-authority-and-host", lambda t: _head(t, drop=(":authority",))),
    ("empty-host", lambda t: _head(t, ("host", ""), drop=(":authority",))),
    ("duplicate-host", lambda t: _head(t, ("host", "a"), ("host", "a"))),
    ("method-not-a-token", lambda t: _head(t, (":method", "PO ST"), drop=(":method",))),
    ("path-with-space", lambda t: _head(t, (":path", UNARY + " x"), drop=(":path",))),
    ("path-with-del", lambda t: _head(t, (":path", UNARY + "\x7f"), drop=(":path",))),
    ("path-not-absolute", lambda t: _head(t, (":path", UNARY[1:]), drop=(":path",))),
    ("asterisk-path-not-options", lambda t: _head(t, (":path", "*"), drop=(":path",))),
    ("scheme-not-a-scheme", lambda t: _head(t, (":scheme", "1http"), drop=(":scheme",))),
    ("authority-with-space", lambda t: _head(t, (":authority", "a b"), drop=(":authority",))),
    ("host-with-slash", lambda t: _head(t, ("host", "a/b"), drop=(":authority",))),
    ("uppercase-pseudo", lambda t: _head(t, (":PATH", UNARY), drop=(":path",))),
    ("colon-in-name", lambda t: _head(t, ("x:a", "1"))),
    ("empty-name", lambda t: _head(t, ("", "1"))),
    ("leading-space-in-value", lambda t: _head(t, ("x-a", " 1"))),
    ("trailing-tab-in-value", lambda t: _head(t, ("x-a", "1\t"))),
    ("del-in-value", lambda t: _head(t, ("x-a", "a\x7fb"))),
    ("cr-in-long-value", lambda t: _head(t, ("x-a", "abcdefghijklmnop\rqrstuvwxyz"))),
    ("uppercase-in-long-name", lambda t: _head(t, ("x-abcdefghijklmnoP", "1"))),
    ("duplicate-content-length", lambda t: _head(t, ("content-length", "17"), ("content-length", "17"))),
    ("content-length-not-digits", lambda t: _head(t, ("content-length", "1x"))),
    ("content-length-empty", lambda t: _head(t, ("content-length", ""))),
    ("content-length-overflow", lambda t: _head(t, ("content-length", "99999999999999999999"))),
    ("protocol-without-connect", lambda t: _head(t, (":protocol", "websocket"))),
    ("duplicate-protocol", lambda t: [(":method", "CONNECT"), (":protocol", "websocket"), (":protocol", "websocket"),
                                      (":scheme", "http"), (":authority", "a"), (":path", "/")]),
    ("empty-protocol", lambda t: [(":method", "CONNECT"), (":protocol", ""), (":scheme", "http"), (":authority", "a"),
                                  (":path", "/")]),
    ("extended-connect-without-authority", lambda t: [(":method", "CONNECT"), (":protocol", "websocket"),
                                                      (":scheme", "http"), (":path", "/"), ("host", "a")]),
    ("connect-with-path", lambda t: [(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")]),
    ("connect-with-scheme", lambda t: [(":method", "CONNECT"), (":authority", "a:1"), (":scheme", "http")]),
    ("connect-without-authority", lambda t: [(":method", "CONNECT"), ("host", "a:1")]),
]


@pytest.mark.parametrize("case", MALFORMED_MORE, ids=[m[0] for m in MALFORMED_MORE])
def test_malformed_request_head_more(t, case):
    """§8.1.1, §8.2, §8.3, RFC 8441 §4: more malformed heads (duplicate, empty or invalid pseudo-header fields,
    no :authority nor host, a :path that is not absolute, invalid characters in names and values, content-length
    not a single number, :protocol off an extended CONNECT, CONNECT with :path or :scheme or without :authority)
    → stream error PROTOCOL_ERROR; no call starts and the connection serves on."""
    hdrs = case[1](t)
    stream_error(t, 1, PROTOCOL_ERROR, lambda c: c.headers(1, hdrs), no_call=True)


def test_malformed_field_is_logged_as_nghttp2_did(t):
    """The log says which field was refused, as nghttp2's error callback did."""
    stream_error(t, 1, PROTOCOL_ERROR, lambda c: c.headers(1, _head(t, ("x-bad", "a\x7fb"))), no_call=True)
    assert t.wait_log(r"Invalid HTTP header field was received: frame type: 1, stream: 1, name: \[x-bad\]")
    assert t.wait_log(r"invalid frame \(type 1\) on stream 1: Invalid HTTP header field was received")


def _answered(t, hdrs, body=None):
    """The head (and body) are not refused: the stream gets an answer, no RST_STREAM; the status."""
    with settled(t) as c:
        c.headers(1, hdrs, end_stream=body is None)
        if body is not None:
            c.data(1, body, end_stream=True)
        status, _, _, _ = c.response(1)
        assert not c.find(RST_STREAM) and not c.find(GOAWAY), c.summary()
    t.check_counter("h2_stream_errors", 0)
    return status


WELL_FORMED = [
    ("host-instead-of-authority", lambda t: _head(t, ("host", f"127.0.0.1:{t.port}"), drop=(":authority",)), True),
    ("te-trailers-any-case", lambda t: _head(t, ("te", "Trailers")), True),
    ("content-length-right", lambda t: _head(t, ("content-length", str(len(unary_body("x"))))), True),
    ("tab-inside-value-and-obs-text", lambda t: _head(t, ("x-a", "a\tb\xe9c")), True),
    ("name-with-digits-and-symbols", lambda t: _head(t, ("x-b3_span.id~!#$%&'*+^`|", "1")), True),
    ("options-asterisk", lambda t: [(":method", "OPTIONS"), (":scheme", "http"), (":authority", "a"), (":path", "*")],
     False),
    ("other-scheme-any-path", lambda t: [(":method", "GET"), (":scheme", "foo+bar.1-x"), (":authority", "a"),
                                         (":path", "x")], False),
    ("connect", lambda t: [(":method", "CONNECT"), (":authority", "a:1"), ("content-length", "5")], False),
]


@pytest.mark.parametrize("case", WELL_FORMED, ids=[w[0] for w in WELL_FORMED])
def test_well_formed_request_head(t, case):
    """What the rules allow is not refused: host for :authority, TE "trailers" in any case, a right content-length,
    HTAB inside a value and obs-text, every tchar in a name, OPTIONS *, a :path not starting with '/' for a scheme
    other than http(s), CONNECT with only :authority (its content-length is not checked)."""
    name, hdrs, grpc = case
    status = _answered(t, hdrs(t), unary_body("x") if grpc else None)
    if grpc:
        assert status == 200, status


def test_trailers_ending_the_stream_are_allowed(t):
    """§8.1: trailers with END_STREAM end the request (a right content-length counts the DATA before them)."""
    body = unary_body("x")
    with settled(t) as c:
        c.headers(1, _head(t, ("content-length", str(len(body)))), end_stream=False)
        c.data(1, body)
        c.headers(1, [("x-trailer", "1")], end_stream=True)
        status, _, _, _ = c.response(1)
        assert status == 200 and not c.find(RST_STREAM), c.summary()
    t.check_counter("h2_stream_errors", 0)


MALFORMED_TRAILERS = [  # (id, the head's content-length is right, the trailers)
    ("connection-specific", True, [("connection", "close")]),
    ("te-not-trailers", True, [("te", "gzip")]),
    ("uppercase-name", True, [("X-Trailer", "1")]),
    ("newline-in-value", True, [("x-trailer", "a\nb")]),
    ("content-length-twice", True, [("content-length", "17")]),
    # nghttp2 reads a content-length in trailers as the request's: the DATA must match it at the end
    ("content-length-not-matching", False, [("content-length", "1000")]),
]


@pytest.mark.parametrize("case", MALFORMED_TRAILERS, ids=[m[0] for m in MALFORMED_TRAILERS])
def test_malformed_trailers(t, case):
    """§8.1, §8.2: the field rules hold for trailers too → stream error PROTOCOL_ERROR."""
    body = unary_body("x")
    _, with_length, trailers = case

    def send(c):
        c.headers(1, _head(t, *[("content-length", str(len(body)))] * with_length), end_stream=False)
        c.data(1, body)
        c.headers(1, trailers, end_stream=True)
    stream_error(t, 1, PROTOCOL_ERROR, send)


def test_data_beyond_content_length(t):
    """§8.1.1: more DATA than content-length is refused as it comes, before the stream ends."""
    def send(c):
        open_stream(c, extra=[("content-length", "3")])
        c.data(1, unary_body("longer than three bytes"), end_stream=False)
    stream_error(t, 1, PROTOCOL_ERROR, send)


def test_content_length_on_a_head_ending_the_stream(t):
    """§8.1.1: a head with END_STREAM says the body is empty: a content-length other than 0 is refused."""
    stream_error(t, 1, PROTOCOL_ERROR, lambda c: c.headers(1, _head(t, ("content-length", "10"))), no_call=True)
