"""HTTP/2 downstream (src/h2/server.c): cleartext h2c with prior knowledge on the normal listener,
carrying gRPC-Web and native gRPC (application/grpc, HTTP/2 trailers) on the same port, with the
request policy (CORS, health, limits) shared with HTTP/1.1.

Clients: a small frame-accurate wrapper around python-h2 (H2Client below), grpcio for native gRPC,
raw sockets for protocol errors and the nghttp CLI. Every test checks the exact answer and, where
the gateway keeps running, that it still serves a normal call afterwards.
"""

import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest

import echo_pb
import grpcweb
from conftest import RssSampler, rss_kib
from echo_pb import EchoRequest, EchoResponse
from h2gw import CountingUpstream

# Under ASan the allocator's quarantine and shadow memory dominate RSS (see test_lifecycle.py).
SANITIZED = os.environ.get("PTC_SANITIZED") == "1"

UNARY = "/portico.test.Echo/Unary"
SERVER_STREAM = "/portico.test.Echo/ServerStream"
CLIENT_STREAM = "/portico.test.Echo/ClientStream"
BIDI = "/portico.test.Echo/Bidi"
CT_BIN = "application/grpc-web+proto"
CT_TEXT = "application/grpc-web-text"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
FRAME_DATA, FRAME_HEADERS, FRAME_RST, FRAME_GOAWAY = 0x0, 0x1, 0x3, 0x7
FLAG_END_STREAM = 0x1


def config_yaml(extra=""):
    return ("workers: 1\nlog_level: debug\nlisteners: ['127.0.0.1:{listen_port}']\n"
            "upstreams:\n  - name: echo\n    endpoints: ['127.0.0.1:{upstream_port}']\n" + extra)


# --------------------------------------------------------------------------- h2 client


class H2Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None         # [(name, value)] of the response HEADERS
        self.headers_end = False    # the response HEADERS carried END_STREAM (Trailers-Only)
        self.trailers = None        # [(name, value)] of a trailing HEADERS block
        self.data = bytearray()
        self.frames = []            # raw (type, flags, length) of every frame on this stream
        self.data_times = []        # monotonic time of every DATA chunk
        self.unacked = 0            # flow-controlled bytes not yet acknowledged
        self.ended = False
        self.end_time = None
        self.reset_code = None

    @property
    def done(self):
        return self.ended or self.reset_code is not None

    def hdict(self):
        out = {}
        for k, v in self.headers or []:
            out[k] = out[k] + ", " + v if k in out else v
        return out

    @property
    def status(self):
        return int(self.hdict()[":status"])

    def grpcweb(self, text=False):
        """(messages [bytes], trailer dict or None) of a gRPC-Web response body."""
        frames, trailers = grpcweb.parse_body(bytes(self.data), text=text)
        return grpcweb.messages_of(frames), trailers


class H2Client(grpcweb.SocketClient):
    """python-h2 over a socket, fed one frame at a time so that frames after a GOAWAY are still
    processed (python-h2 treats GOAWAY as terminal; the gateway keeps finishing streams)."""

    def __init__(self, port, timeout=10.0, auto_ack=True, initial_window=None, settings=None):
        self.port, self.timeout, self.auto_ack = port, timeout, auto_ack
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="latin-1", validate_inbound_headers=False))
        initial = dict(settings or {})
        if initial_window is not None:
            initial[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = initial_window
        if initial:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=initial)
        self.conn.initiate_connection()
        self.streams = {}
        self.goaway = None          # h2.events.ConnectionTerminated
        self.frame_log = []         # (type, flags, stream id, length) of every frame received
        self.closed = False
        self.rbuf = bytearray()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    # -- receiving
    def pump(self, timeout=None):
        """One recv (up to `timeout`); processes every complete frame. False on timeout."""
        self.sock.settimeout(self.timeout if timeout is None else max(0.001, timeout))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionError:
            data = b""
        if not data:
            self.closed = True
            raise grpcweb.ConnectionClosed("h2 connection closed by the gateway")
        self._feed(data)
        return True

    def _feed(self, data):
        self.rbuf += data
        while len(self.rbuf) >= 9:
            length = int.from_bytes(self.rbuf[:3], "big")
            if len(self.rbuf) < 9 + length:
                break
            ftype, flags = self.rbuf[3], self.rbuf[4]
            sid = int.from_bytes(self.rbuf[5:9], "big") & 0x7FFFFFFF
            raw = bytes(self.rbuf[:9 + length])
            del self.rbuf[:9 + length]
            self.frame_log.append((ftype, flags, sid, length))
            if sid in self.streams:
                self.streams[sid].frames.append((ftype, flags, length))
            if self.goaway is not None:
                # keep python-h2 processing the streams that the GOAWAY lets finish
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            for ev in self.conn.receive_data(raw):
                self._event(ev)
        self.flush()

    def _event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived) and st:
            st.headers = list(ev.headers)
            st.headers_end = ev.stream_ended is not None
        elif isinstance(ev, h2.events.TrailersReceived) and st:
            st.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.DataReceived) and st:
            st.data += ev.data
            st.data_times.append(time.monotonic())
            if self.auto_ack:
                self._ack(ev.flow_controlled_length, ev.stream_id)
            else:
                st.unacked += ev.flow_controlled_length
        elif isinstance(ev, h2.events.StreamEnded) and st:
            st.ended, st.end_time = True, time.monotonic()
        elif isinstance(ev, h2.events.StreamReset) and st:
            st.reset_code = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def _ack(self, n, sid):
        if n == 0:
            return
        try:
            self.conn.acknowledge_received_data(n, sid)
        except h2.exceptions.StreamClosedError:
            pass

    def open_window(self, increment=1 << 24):
        """Acknowledge everything held back and widen the connection and stream windows."""
        self.auto_ack = True
        self.conn.increment_flow_control_window(increment)
        for st in self.streams.values():
            if st.unacked:
                self._ack(st.unacked, st.sid)
                st.unacked = 0
            if not st.done:
                try:
                    self.conn.increment_flow_control_window(increment, st.sid)
                except h2.exceptions.StreamClosedError:
                    pass
        self.flush()

    def wait(self, pred, timeout=None, what="condition"):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"h2: timed out waiting for {what}")
            self.pump(remaining)

    def wait_closed(self, timeout):
        """True if the gateway closes the connection within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.pump(deadline - time.monotonic())
        except grpcweb.ConnectionClosed:
            return True
        return False

    # -- sending
    def request(self, path, body=None, headers=None, method="POST", extra=(), end=True):
        """Opens a stream; `body` is sent in one piece unless None (then the stream stays open
        when `end` is False). Returns the H2Stream."""
        hdrs = headers if headers is not None else gw_headers(self.port, path, method=method, extra=extra)
        sid = self.conn.get_next_available_stream_id()
        st = self.streams[sid] = H2Stream(sid)
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        self.flush()
        if body:
            self.send(sid, body, end_stream=end)
        return st

    def send(self, sid, data, end_stream=False, frame_size=None):
        """DATA on `sid`, honouring flow control (pumps while the window is closed)."""
        view = memoryview(bytes(data))
        deadline = time.monotonic() + self.timeout * 3
        while True:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if frame_size:
                window = min(window, frame_size)
            if window <= 0 and view:
                self.flush()
                if time.monotonic() > deadline:
                    raise TimeoutError("h2: request window stayed closed")
                self.pump(1.0)
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(chunk), end_stream=end_stream and not view)
            if frame_size:
                self.flush()
            if not view:
                break
        self.flush()

    def end(self, sid):
        self.conn.end_stream(sid)
        self.flush()

    def reset(self, sid, code=h2.errors.ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, code)
        self.flush()

    def call(self, path, body, extra=(), timeout=None):
        st = self.request(path, body, extra=extra)
        self.wait(lambda: st.done, timeout, f"stream {st.sid}")
        return st


def gw_headers(port, path, method="POST", text=False, extra=()):
    hdrs = [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
            (":path", path)]
    if method == "POST":
        hdrs += [("content-type", CT_TEXT if text else CT_BIN), ("x-grpc-web", "1")]
        if text:
            hdrs.append(("accept", CT_TEXT))
    names = {k for k, _ in extra}
    return [(k, v) for k, v in hdrs if k not in names] + list(extra)


def body_of(*reqs):
    return b"".join(grpcweb.frame(r) for r in reqs)


def assert_ok_unary(st, message, text=False):
    assert st.ended and st.reset_code is None, (st.frames, st.reset_code)
    h = st.hdict()
    assert h[":status"] == "200", h
    assert h["content-type"] == (CT_TEXT + "+proto" if text else CT_BIN), h
    msgs, trailers = st.grpcweb(text=text)
    assert len(msgs) == 1 and EchoResponse.FromString(msgs[0]).message == message, msgs
    assert trailers is not None and trailers["grpc-status"] == "0", trailers
    assert trailers.get("x-trailer-ok") == "done", trailers
    assert st.trailers is None, st.trailers       # gRPC-Web: no HTTP/2 trailers
    return EchoResponse.FromString(msgs[0])


def assert_serves_h2(port, message="still-serving"):
    with H2Client(port) as c:
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message=message))), message)


def assert_serves(gw, message="still-serving"):
    """Both protocols still work on the port."""
    assert_serves_h2(gw.port, message)
    status, hdrs, msgs, trailers = gw.call(UNARY, EchoRequest(message=message), timeout=10)
    assert status == 200 and trailers and trailers.get("grpc-status") == "0", (status, hdrs, trailers)
    assert EchoResponse.FromString(msgs[0]).message == message


# --------------------------------------------------------------------------- 1. gRPC-Web over h2c


def test_unary_binary(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.call(UNARY, body_of(EchoRequest(message="hello h2")),
                    extra=[("x-echo-greeting", "hi")])
        assert_ok_unary(st, "hello h2")
        h = st.hdict()
        assert h["x-echo-initial"] == "yes" and h["x-echoed-greeting"] == "hi", h
        assert "grpc-status" not in h, h
        # the body ends with END_STREAM on a DATA frame
        data_frames = [f for f in st.frames if f[0] == FRAME_DATA]
        assert data_frames and data_frames[-1][1] & FLAG_END_STREAM, st.frames
        # connection-specific fields never appear in HTTP/2 responses; names are lower case
        names = [k for k, _ in st.headers]
        assert not CONNECTION_SPECIFIC & set(names), names
        assert all(k == k.lower() for k in names), names
        # a second call on the same connection
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message="again"))), "again")
    assert_serves(gw)


def test_response_heads_small_and_large_on_concurrent_streams(portico):
    """The response head's names and values are copied into the stream (nghttp2 copies nothing and reads them
    when it writes the HEADERS frame, a send pass later): heads of every size, from a few fields to more than 48
    fields and the stream's own room, queued together on concurrent streams, each arrive whole and as its call
    sent it."""
    gw = portico(config=config_yaml('cors: {allow_origins: ["http://page.test", "http://other.test"]}\n'))
    with H2Client(gw.port) as c:
        # local answers (CORS preflights) to requests sent in one write: their heads are all queued in one read
        # pass before the send pass writes them, each with its own request's origin
        origins = ["http://page.test", "http://other.test"] * 6
        pre = []
        for origin in origins:
            sid = c.conn.get_next_available_stream_id()
            pre.append(c.streams.setdefault(sid, H2Stream(sid)))
            c.conn.send_headers(sid, [(":method", "OPTIONS"), (":scheme", "http"), (":authority", f"127.0.0.1:{gw.port}"),
                                      (":path", UNARY), ("origin", origin), ("access-control-request-method", "POST")],
                                end_stream=True)
        c.flush()
        c.wait(lambda: all(st.done for st in pre), what="the preflights")
        for st, origin in zip(pre, origins):
            h = st.hdict()
            assert h[":status"] == "204" and h["access-control-allow-origin"] == origin, (st.sid, h)

        sizes = [0, 1, 60, 3, 75, 0, 20]
        streams = []
        for i, nfields in enumerate(sizes):
            extra = [(f"x-echo-f{i}-{j:02d}", f"value-{i}-{j:02d}-" + "v" * (j % 23)) for j in range(nfields)]
            streams.append((c.request(UNARY, body_of(EchoRequest(message=f"call {i}")), extra=extra), extra))
        c.wait(lambda: all(st.done for st, _ in streams), what="all streams")
        for i, (st, extra) in enumerate(streams):
            assert_ok_unary(st, f"call {i}")
            got = [(k, v) for k, v in st.headers if k.startswith("x-echoed-")]
            assert got == [("x-echoed-" + k[len("x-echo-"):], v) for k, v in extra], (i, got)
            assert all(k == k.lower() for k, _ in st.headers), st.headers
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message="after"))), "after")
    assert_serves(gw)


def test_hpack_per_call_fields_never_indexed(portico):
    """HPACK on both sides: fields whose value is new on every call (the request id; upstream also the trace
    context) go as literals never indexed. Downstream (nghttp2's encoder) the dynamic table stops changing after
    the first call on a connection, whose fields go indexed so that later calls refer to their names in the table.
    Upstream (the gateway's own encoder: static table and literals only) the server's dynamic table never changes,
    and the per-call fields are never indexed from the first call on."""
    up = CountingUpstream()
    try:
        gw = portico(upstream=up.port)
        rids = []
        with H2Client(gw.port) as c:
            sizes = []
            for i in range(6):
                st = c.call(UNARY, body_of(EchoRequest(message=f"m{i}")))
                assert st.ended and st.status == 200, (st.frames, st.headers)
                rids += [h for h in st.headers if h[0] == "x-request-id"]
                sizes.append(len(c.conn.decoder.header_table.dynamic_entries))
            table = [n for n, _ in c.conn.decoder.header_table.dynamic_entries]
        assert len(rids) == 6 and len({v for _, v in rids}) == 6, rids
        assert [isinstance(h, hpack.NeverIndexedHeaderTuple) for h in rids] == [False] + [True] * 5, rids
        assert table.count(b"x-request-id") == 1, table
        assert sizes[1:] == [sizes[1]] * 5, sizes
        with up.lock:
            heads = list(up.heads)
        assert len(heads) == 6, heads
        for name in (b"x-request-id", b"traceparent"):
            fields = [h for hdrs, _ in heads for h in hdrs if h[0] == name]
            assert len(fields) == 6 and len({v for _, v in fields}) == 6, fields
            assert all(isinstance(h, hpack.NeverIndexedHeaderTuple) for h in fields), fields
        assert all(names == [] for _, names in heads), [names for _, names in heads]
    finally:
        up.stop()


def test_unary_text(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        body = grpcweb.encode_text(body_of(EchoRequest(message="text over h2", payload=b"\x00\xff" * 50)))
        st = c.request(UNARY, body, headers=gw_headers(gw.port, UNARY, text=True))
        c.wait(lambda: st.done)
        resp = assert_ok_unary(st, "text over h2", text=True)
        assert resp.payload == b"\x00\xff" * 50
    assert_serves(gw)


def test_trailers_only_error(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.call(UNARY, body_of(EchoRequest(status_code=5, status_message="not here")))
        assert st.ended and st.reset_code is None
        h = st.hdict()
        assert h[":status"] == "200" and h["content-type"] == CT_BIN, h
        assert h["grpc-status"] == "5" and h["grpc-message"] == "not here", h
        assert h.get("x-trailer-custom") == "custom-value", h
        assert st.headers_end, st.frames                       # END_STREAM on the HEADERS
        assert [f[0] for f in st.frames] == [FRAME_HEADERS], st.frames   # no DATA at all
        assert st.data == b"" and st.trailers is None
    assert_serves(gw)


def test_error_after_messages(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.call(SERVER_STREAM, body_of(EchoRequest(message="m", count=2, status_code=9,
                                                       status_message="late failure",
                                                       fail_after_messages=True)))
        assert st.ended and st.reset_code is None
        h = st.hdict()
        assert h[":status"] == "200" and "grpc-status" not in h, h
        assert not st.headers_end and st.trailers is None, st.frames
        msgs, trailers = st.grpcweb()
        assert [EchoResponse.FromString(m).index for m in msgs] == [0, 1]
        assert trailers["grpc-status"] == "9" and trailers["grpc-message"] == "late failure", trailers
        assert trailers["x-trailer-custom"] == "custom-value", trailers
        # the trailer frame travels in DATA; the last frame on the stream is DATA with END_STREAM
        assert st.frames[-1][0] == FRAME_DATA and st.frames[-1][1] & FLAG_END_STREAM, st.frames
        assert all(f[0] != FRAME_HEADERS for f in st.frames[1:]), st.frames
    assert_serves(gw)


def test_content_length_not_forwarded(portico):
    gw = portico()
    body = body_of(EchoRequest(message="cl"))
    with H2Client(gw.port) as c:
        st = c.call(UNARY, body, extra=[("content-length", str(len(body))), ("x-custom", "kept")])
        resp = assert_ok_unary(st, "cl")
        assert "content-length" not in resp.headers, dict(resp.headers)
        assert resp.headers.get("x-custom") == "kept", dict(resp.headers)
        assert resp.headers.get("x-grpc-web") == "1", dict(resp.headers)
    assert_serves(gw)


def test_request_body_in_many_small_data_frames(portico):
    gw = portico()
    body = body_of(EchoRequest(message="split" * 20, payload=bytes(range(256))))
    with H2Client(gw.port) as c:
        st = c.request(UNARY, None, end=False)
        c.send(st.sid, body, end_stream=True, frame_size=3)
        c.wait(lambda: st.done)
        resp = assert_ok_unary(st, "split" * 20)
        assert resp.payload == bytes(range(256))
    assert_serves(gw)


def test_client_stream_three_messages_one_body(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.call(CLIENT_STREAM, body_of(EchoRequest(message="a"), EchoRequest(message="b"),
                                           EchoRequest(message="c")))
        resp = assert_ok_unary(st, "a|b|c")
        assert resp.index == 3
    assert_serves(gw)


def test_client_stream_body_over_time(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.request(CLIENT_STREAM, None, end=False)
        parts = [EchoRequest(message=m, payload=m.encode() * 3) for m in ("one", "two", "three")]
        for i, p in enumerate(parts):
            c.send(st.sid, grpcweb.frame(p), end_stream=(i == len(parts) - 1))
            if i < len(parts) - 1:
                deadline = time.monotonic() + 0.2
                while time.monotonic() < deadline:
                    c.pump(deadline - time.monotonic())
                assert not st.done, st.frames     # nothing ends before the body does
        c.wait(lambda: st.done)
        resp = assert_ok_unary(st, "one|two|three")
        assert resp.index == 3 and resp.payload == b"oneoneonetwotwotwothreethreethree"
    assert_serves(gw)


# --------------------------------------------------------------------------- 2. multiplexing


def test_twenty_interleaved_unary_calls(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        streams = []
        bodies = []
        for i in range(20):
            streams.append(c.request(UNARY, None, end=False, extra=[("x-echo-n", str(i))]))
            bodies.append(body_of(EchoRequest(message=f"call-{i}", payload=bytes([i]) * (100 + i))))
        # first halves of every body, then the second halves in reverse order
        for st, body in zip(streams, bodies):
            c.send(st.sid, body[:len(body) // 2])
        for st, body in reversed(list(zip(streams, bodies))):
            c.send(st.sid, body[len(body) // 2:], end_stream=True)
        c.wait(lambda: all(s.done for s in streams), 15, "20 calls")
        for i, st in enumerate(streams):
            resp = assert_ok_unary(st, f"call-{i}")
            assert resp.payload == bytes([i]) * (100 + i)
            assert st.hdict()["x-echoed-n"] == str(i)
    assert_serves(gw)


def test_ten_concurrent_server_streams(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        streams = [c.request(SERVER_STREAM, body_of(EchoRequest(message=f"s{i}", count=20, interval_ms=50)))
                   for i in range(10)]
        c.wait(lambda: all(s.done for s in streams), 20, "10 server streams")
        first_data = max(s.data_times[0] for s in streams)
        first_end = min(s.end_time for s in streams)
        assert first_data < first_end, "a stream finished before another one received its first message"
        for i, st in enumerate(streams):
            assert st.reset_code is None and st.hdict()[":status"] == "200"
            msgs, trailers = st.grpcweb()
            got = [EchoResponse.FromString(m) for m in msgs]
            assert [(m.message, m.index) for m in got] == [(f"s{i}", k) for k in range(20)]
            assert trailers["grpc-status"] == "0", trailers
    assert_serves(gw)


# --------------------------------------------------------------------------- 3. native gRPC (grpcio)


class Native:
    def __init__(self, port):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])

    def method(self, name):
        req_cls, res_cls, cstream, sstream = echo_pb.method_types(name)
        factory = {(False, False): self.channel.unary_unary, (False, True): self.channel.unary_stream,
                   (True, False): self.channel.stream_unary, (True, True): self.channel.stream_stream}
        return factory[(cstream, sstream)](echo_pb.method_path(name), request_serializer=req_cls.SerializeToString,
                                           response_deserializer=res_cls.FromString)

    def close(self):
        self.channel.close()


@pytest.fixture
def native(portico):
    gw = portico()
    n = Native(gw.port)
    n.gw = gw
    yield n
    n.close()
    assert_serves(gw)


def test_native_unary(native):
    resp, call = native.method("Unary").with_call(EchoRequest(message="native", payload=b"\x01\x02"),
                                                  metadata=[("x-echo-who", "grpcio")], timeout=10)
    assert resp.message == "native" and resp.payload == b"\x01\x02"
    assert call.code() == grpc.StatusCode.OK
    initial = dict(call.initial_metadata())
    assert initial["x-echo-initial"] == "yes" and initial["x-echoed-who"] == "grpcio", initial
    assert dict(call.trailing_metadata()).get("x-trailer-ok") == "done", call.trailing_metadata()
    assert resp.headers["x-echo-who"] == "grpcio", dict(resp.headers)
    assert resp.headers["user-agent"].startswith("grpc-python/"), dict(resp.headers)
    assert "x-grpc-web" not in resp.headers, dict(resp.headers)


@pytest.mark.parametrize("after_messages", [False, True])
def test_native_error_with_binary_trailers(native, after_messages):
    with pytest.raises(grpc.RpcError) as info:
        native.method("Unary")(EchoRequest(status_code=7, status_message="denied: ü",
                                           fail_after_messages=after_messages), timeout=10)
    err = info.value
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "denied: ü"
    trailing = dict(err.trailing_metadata())
    assert trailing.get("x-trailer-custom") == "custom-value", trailing
    assert trailing.get("x-trailer-bin") == b"\x00\x01\xfe\xff", trailing


def test_native_server_streaming(native):
    call = native.method("ServerStream")(EchoRequest(message="n", count=100, size=100), timeout=20)
    got = list(call)
    assert [m.index for m in got] == list(range(100))
    assert all(m.message == "n" and m.payload == b"x" * 100 for m in got)
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata()).get("x-trailer-ok") == "done"


def test_native_client_streaming(native):
    reqs = [EchoRequest(message=f"c{i}", payload=bytes([i]) * 1000) for i in range(5)]
    resp, call = native.method("ClientStream").with_call(iter(reqs), timeout=10)
    assert resp.message == "c0|c1|c2|c3|c4" and resp.index == 5
    assert resp.payload == b"".join(bytes([i]) * 1000 for i in range(5))
    assert call.code() == grpc.StatusCode.OK


def test_native_bidi_interleaved(native):
    q = queue.Queue()

    def gen():
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    call = native.method("Bidi")(gen(), timeout=10)
    try:
        for i in range(5):
            q.put(EchoRequest(message=f"ping-{i}"))
            resp = next(call)                 # answered before the next request is even sent
            assert (resp.message, resp.index) == (f"ping-{i}", i)
    finally:
        q.put(None)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata()).get("x-trailer-ok") == "done"


def test_native_deadline(native, echo_server):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        native.method("Unary")(EchoRequest(delay_ms=3000, id="h2-native-deadline"), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.0
    info = echo_server.wait_cancel_status("h2-native-deadline")
    assert info.seen and info.cancelled and not info.finished, info


def test_native_client_cancel(native, echo_server):
    call = native.method("ServerStream")(EchoRequest(count=1000, interval_ms=20, id="h2-native-cancel"),
                                         timeout=20)
    first = next(call)
    assert first.index == 0
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED
    info = echo_server.wait_cancel_status("h2-native-cancel", timeout=3)
    assert info.cancelled and not info.finished, info


def test_native_large_message(native):
    payload = bytes(range(256)) * ((4 << 20) // 256 - 16)          # 4 MiB - 4 KiB
    resp = native.method("Unary")(EchoRequest(payload=payload, message="big"), timeout=30)
    assert resp.message == "big" and resp.payload == payload


# --------------------------------------------------------------------------- 4. RST_STREAM


def test_client_rst_stream_cancels_upstream(portico, echo_server):
    gw = portico()
    with H2Client(gw.port) as c:
        st = c.request(SERVER_STREAM, body_of(EchoRequest(count=1000, interval_ms=20, id="h2-rst")))
        c.wait(lambda: len(st.grpcweb()[0]) >= 1 if st.data else False, 10, "first message")
        t0 = time.monotonic()
        c.reset(st.sid)
        info = echo_server.wait_cancel_status("h2-rst", timeout=3)
        elapsed = time.monotonic() - t0
        assert info.cancelled and not info.finished, info
        assert elapsed < 1.5, f"upstream saw the cancellation only after {elapsed:.2f}s"
        assert gw.wait_log(r"stream \d+ reset by the client", 2), "no log line for the reset"
        # the connection keeps working for other streams
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message="after-rst"))), "after-rst")
        assert c.goaway is None
    assert_serves(gw)


def test_client_drops_connection_cancels_upstream(portico, echo_server):
    gw = portico()
    c = H2Client(gw.port)
    try:
        streams = [c.request(SERVER_STREAM, body_of(EchoRequest(count=1000, interval_ms=20, id=f"h2-drop-{i}")))
                   for i in range(3)]
        c.wait(lambda: all(s.data for s in streams), 10, "first messages")
    finally:
        c.close()
    for i in range(3):
        info = echo_server.wait_cancel_status(f"h2-drop-{i}", timeout=3)
        assert info.cancelled and not info.finished, (i, info)
    assert_serves(gw)


# --------------------------------------------------------------------------- 5. flow control


def test_slow_h2_reader_bounded(portico, echo_server):
    gw = portico()
    assert_serves_h2(gw.port, "warm-up")
    baseline = rss_kib(gw.pid)
    with H2Client(gw.port, auto_ack=False, initial_window=65535, timeout=30) as c:
        st = c.request(SERVER_STREAM, body_of(EchoRequest(count=300, size=65536, id="h2-slow")))
        sampler = RssSampler(gw.pid)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:     # read frames, but never give the window back
            c.pump(deadline - time.monotonic())
        peak = sampler.stop()
        growth_mib = (peak - baseline) / 1024
        print(f"h2 slow reader: baseline {baseline} KiB, peak {peak} KiB, received {len(st.data)} bytes")
        assert len(st.data) <= 65535, len(st.data)
        assert SANITIZED or growth_mib < 10, f"RSS grew by {growth_mib:.1f} MiB while the client did not read"
        assert not echo_server.cancel_status("h2-slow").finished, \
            "upstream finished 19 MB although the h2 client kept its window closed"
        c.open_window()
        c.wait(lambda: st.done, 30, "the 300 messages")
        assert st.reset_code is None and st.hdict()[":status"] == "200"
        msgs, trailers = st.grpcweb()
        got = [EchoResponse.FromString(m) for m in msgs]
        assert [m.index for m in got] == list(range(300))
        assert all(len(m.payload) == 65536 for m in got)
        assert trailers["grpc-status"] == "0", trailers
    assert_serves(gw)


def test_unary_responses_through_a_tiny_window_and_after_a_cut_one(portico):
    """A unary response that cannot be written at once (the client's stream windows are 16 bytes) arrives whole and in
    order, 16 bytes a frame; streams reset while most of their response still waits for the window leave nothing behind:
    the streams that follow on the connection (the gateway reuses a closed stream's memory for the next) get exactly
    their own responses, through the tiny window and then with the window widened, 16 at once."""
    gw = portico()
    with H2Client(gw.port, auto_ack=False, initial_window=16) as c:
        for size in (3000, 100):   # the pending rest of a large body, and of a small one (kept in the stream itself)
            cut = c.request(UNARY, body_of(EchoRequest(message="cut", payload=b"x" * size)))
            c.wait(lambda: len(cut.data) >= 16, 10, "the first 16 bytes of the cut response")
            c.reset(cut.sid)
        c.auto_ack = True   # WINDOW_UPDATE for what arrives: the next responses come 16 bytes at a time
        for i in range(3):
            st = c.call(UNARY, body_of(EchoRequest(message=f"tiny-{i}", payload=bytes([65 + i]) * (60 + 100 * i))), timeout=20)
            assert assert_ok_unary(st, f"tiny-{i}").payload == bytes([65 + i]) * (60 + 100 * i)
            sizes = [n for t, _, n in st.frames if t == FRAME_DATA]
            assert len(sizes) > 10 and max(sizes) <= 16, sizes
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        c.flush()
        streams = [c.request(UNARY, body_of(EchoRequest(message=f"wide-{i}", payload=bytes([i]) * (300 + i))))
                   for i in range(16)]
        c.wait(lambda: all(s.done for s in streams), 15, "16 calls")
        for i, st in enumerate(streams):
            assert assert_ok_unary(st, f"wide-{i}").payload == bytes([i]) * (300 + i)
        assert c.goaway is None
    assert_serves(gw)


# --------------------------------------------------------------------------- 6. upload


def test_large_upload_streams_through(portico):
    gw = portico(config=config_yaml("limits: {max_message_size: 16MiB}\n"))
    parts = [EchoRequest(message=f"p{i}", payload=bytes([i]) * (1 << 20)) for i in range(8)]
    with H2Client(gw.port, timeout=30) as c:
        st = c.request(CLIENT_STREAM, None, end=False)
        c.send(st.sid, body_of(*parts), end_stream=True)
        c.wait(lambda: st.done, 30, "the 8 MiB upload")
        resp = assert_ok_unary(st, "|".join(f"p{i}" for i in range(8)))
        assert resp.index == 8
        assert resp.payload == b"".join(bytes([i]) * (1 << 20) for i in range(8))
    assert_serves(gw)


# --------------------------------------------------------------------------- 7. drain


def test_sigterm_goaway_lets_call_finish(portico, echo_server):
    gw = portico()
    c = H2Client(gw.port)
    try:
        st = c.request(UNARY, body_of(EchoRequest(message="drained", delay_ms=1000, id="h2-drain")))
        assert echo_server.wait_cancel_status("h2-drain", field="seen").seen
        c.wait(lambda: st.headers is not None, 5, "response headers")
        gw.signal(signal.SIGTERM)
        c.wait(lambda: c.goaway is not None or st.done, 5, "GOAWAY")
        assert c.goaway is not None, "no GOAWAY before the call ended"
        assert c.goaway.error_code == 0 and c.goaway.last_stream_id >= st.sid, c.goaway
        c.wait(lambda: st.done, 5, "the in-flight call")
        assert_ok_unary(st, "drained")
        assert c.wait_closed(5), "connection not closed after the drain"
    finally:
        c.close()
    assert gw.proc.wait(10) == 0


# --------------------------------------------------------------------------- 8. idle timeout


def test_idle_connection_closed(portico):
    gw = portico(config=config_yaml("timeouts: {idle: 500ms}\n"))
    with H2Client(gw.port) as c:
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message="before idle"))), "before idle")
        t0 = time.monotonic()
        assert c.wait_closed(3.0), "idle h2 connection still open after 3 s"
        elapsed = time.monotonic() - t0
        assert 0.3 < elapsed < 2.0, f"closed after {elapsed:.2f}s (idle 500ms)"
        assert c.goaway is not None and c.goaway.error_code == 0, c.goaway
    assert_serves(gw)


# --------------------------------------------------------------------------- 9. CORS


def test_cors_over_h2(portico, echo_server):
    gw = portico(config=config_yaml('cors: {allow_origins: ["http://page.test"]}\n'))
    with H2Client(gw.port) as c:
        pre = c.request(UNARY, headers=[
            (":method", "OPTIONS"), (":scheme", "http"), (":authority", f"127.0.0.1:{gw.port}"),
            (":path", UNARY), ("origin", "http://page.test"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-grpc-web,x-user-agent")])
        c.wait(lambda: pre.done)
        h = pre.hdict()
        assert h[":status"] == "204", h
        assert h["access-control-allow-origin"] == "http://page.test", h
        assert "POST" in h["access-control-allow-methods"], h
        allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
        assert {"content-type", "x-grpc-web", "x-user-agent"} <= allowed, h
        assert pre.data == b""

        st = c.call(UNARY, body_of(EchoRequest(message="cors", id="h2-cors-ok")),
                    extra=[("origin", "http://page.test")])
        assert_ok_unary(st, "cors")
        h = st.hdict()
        assert h["access-control-allow-origin"] == "http://page.test", h
        exposed = {x.strip().lower() for x in h["access-control-expose-headers"].split(",")}
        assert {"grpc-status", "grpc-message"} <= exposed, h

        bad = c.call(UNARY, body_of(EchoRequest(message="evil", id="h2-cors-bad")),
                     extra=[("origin", "http://evil.test")])
        h = bad.hdict()
        assert h[":status"] == "403" and "access-control-allow-origin" not in h, h
        assert bad.ended and bad.reset_code is None
        assert h["content-type"].startswith("text/plain"), h
        assert bad.data == b"origin not allowed by the CORS policy\n", bytes(bad.data)
        assert not echo_server.cancel_status("h2-cors-bad").seen, "refused call reached the upstream"
        # a refused request with a body far larger than the windows does not stall the connection
        big = c.request(UNARY, None, end=False, extra=[("origin", "http://evil.test")])
        c.send(big.sid, body_of(EchoRequest(id="h2-cors-big", payload=b"z" * (2 << 20))), end_stream=True)
        c.wait(lambda: big.done)
        assert big.hdict()[":status"] == "403" and big.reset_code is None
        assert not echo_server.cancel_status("h2-cors-big").seen
        # the connection is still usable
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message="same-origin"))), "same-origin")
    assert_serves(gw)


def test_cors_origin_of_a_late_response_head_over_h2(portico):
    """A response head written after another request's HEADERS arrived on the same connection (here a
    Trailers-Only answer 500 ms late; a gzip-deferred head or a ClientStream answered after its
    request did the same in Chromium) still carries its own request's origin."""
    gw = portico(config=config_yaml('cors: {allow_origins: ["http://page.test", "http://other.test"]}\n'))
    with H2Client(gw.port) as c:
        late = c.request(UNARY, body_of(EchoRequest(message="late", delay_ms=500, status_code=5, status_message="late")),
                         extra=[("origin", "http://page.test")])
        other = c.call(UNARY, body_of(EchoRequest(message="other")), extra=[("x-pad", "z" * 13), ("origin", "http://other.test")])
        assert_ok_unary(other, "other")
        assert other.hdict()["access-control-allow-origin"] == "http://other.test"
        c.wait(lambda: late.done)
        h = late.hdict()
        assert h["grpc-status"] == "5", h
        assert h["access-control-allow-origin"] == "http://page.test", h
    assert_serves(gw)


# --------------------------------------------------------------------------- 10. protocol errors


def test_garbage_after_preface(portico):
    gw = portico()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(PREFACE + b"\xde\xad\xbe\xef" * 16 + b"GET / HTTP/1.1\r\n\r\n")
        data, t0 = b"", time.monotonic()
        closed = False
        while time.monotonic() - t0 < 3:
            try:
                chunk = s.recv(65536)
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        assert closed, "connection not closed after garbage"
        # nghttp2 answers with its SETTINGS then GOAWAY(PROTOCOL_ERROR or FRAME_SIZE_ERROR)
        types = []
        pos = 0
        while len(data) - pos >= 9:
            length = int.from_bytes(data[pos:pos + 3], "big")
            types.append((data[pos + 3], data[pos + 9:pos + 9 + length]))
            pos += 9 + length
        goaways = [p for t, p in types if t == FRAME_GOAWAY]
        assert goaways and struct.unpack(">I", goaways[-1][4:8])[0] != 0, types
    assert gw.running()
    assert_serves(gw)


def test_oversized_header_list(portico, echo_server):
    gw = portico(config=config_yaml("limits: {max_header_size: 1KiB}\n"))
    with H2Client(gw.port) as c:
        big = c.request(UNARY, body_of(EchoRequest(message="big", id="h2-big-head")),
                        extra=[("x-big", "b" * 2000)])
        ok = c.request(UNARY, body_of(EchoRequest(message="small")))
        c.wait(lambda: big.done and ok.done, 10, "both streams")
        if big.reset_code is None:                 # 431 for that stream (an RST would be fine too)
            h = big.hdict()
            assert h[":status"] == "431", h
            assert big.data == b"request header fields too large\n", bytes(big.data)
        assert not echo_server.cancel_status("h2-big-head").seen, "refused request reached the upstream"
        assert_ok_unary(ok, "small")
        assert c.goaway is None
        assert_ok_unary(c.call(UNARY, body_of(EchoRequest(message="after"))), "after")
    assert_serves(gw)


def test_healthz_over_h2(portico):
    gw = portico()
    with H2Client(gw.port) as c:
        head = c.request("/healthz", method="HEAD")
        get = c.request("/healthz", method="GET")
        c.wait(lambda: head.done and get.done)
        h = head.hdict()
        assert h[":status"] == "200" and h["content-length"] == "3", h
        assert head.data == b"" and head.headers_end, head.frames
        h = get.hdict()
        assert h[":status"] == "200" and h["content-length"] == "3", h
        assert get.data == b"ok\n"
        assert get.reset_code is None and head.reset_code is None
    assert_serves(gw)


# --------------------------------------------------------------------------- 11. nghttp CLI


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) not installed")
def test_nghttp_cli_unary(portico, tmp_path):
    gw = portico()
    body = tmp_path / "body.bin"
    body.write_bytes(body_of(EchoRequest(message="from nghttp")))
    out = subprocess.run(["nghttp", "-H", ":method: POST", "-H", f"content-type: {CT_BIN}",
                          "-H", "x-grpc-web: 1", "-d", str(body),
                          f"http://127.0.0.1:{gw.port}{UNARY}"],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    frames, trailers = grpcweb.parse_body(out.stdout)
    msgs = grpcweb.messages_of(frames)
    assert len(msgs) == 1 and EchoResponse.FromString(msgs[0]).message == "from nghttp"
    assert trailers is not None and trailers["grpc-status"] == "0", out.stdout
    assert grpcweb.frame(EchoResponse.FromString(msgs[0])) in out.stdout or msgs[0] in out.stdout
    assert_serves(gw)


def test_headers_with_a_lower_stream_id_is_a_connection_error(portico):
    """RFC 9113 §5.1.1: a new stream id lower than one already opened → GOAWAY PROTOCOL_ERROR (nghttp2 alone
    would ignore the header block and keep the connection)."""
    import hpack
    gw = portico()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    hdrs = [(":method", "POST"), (":path", "/portico.test.Echo/Unary"), (":scheme", "http"), (":authority", "x"),
            ("content-type", "application/grpc-web+proto")]
    conn.send_headers(3, hdrs)
    sock.sendall(conn.data_to_send())
    block = hpack.Encoder().encode(hdrs)  # stream 1, by hand: h2 itself refuses to send it
    sock.sendall(len(block).to_bytes(3, "big") + bytes([0x1, 0x4]) + (1).to_bytes(4, "big") + block)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    frames, i = [], 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        frames.append((data[i + 3], data[i + 9:i + 9 + n]))
        i += 9 + n
    goaways = [p for t, p in frames if t == 7]
    assert goaways and int.from_bytes(goaways[0][4:8], "big") == 1, frames  # PROTOCOL_ERROR
    assert gw.wait_log(r"HEADERS for stream 1, not above the last stream opened \(3\): GOAWAY PROTOCOL_ERROR")
