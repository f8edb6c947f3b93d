"""Hand-built HTTP/2 frames over a socket (cleartext prior knowledge, or TLS with ALPN h2), for the tests
that break the protocol on purpose: conformance (test_h2_conformance.py) and abuse (test_h2_limits.py).

    c = RawH2(port, ctx=None)          # preface + empty SETTINGS sent; ctx: an ssl.SSLContext for TLS
    c.headers(1, request_headers(port, UNARY), end_stream=False)
    c.data(1, grpcweb.frame(msg), end_stream=True)
    c.goaway_code()                    # waits for the gateway's GOAWAY: (error code, debug text)
    c.rst_code(1)                      # waits for RST_STREAM on stream 1: its error code

Frames received are parsed as they come (Frame tuples in c.frames); the gateway's SETTINGS are
acknowledged unless ack_settings=False. HPACK via the hpack package (one encoder per connection), so
header names go out exactly as given (upper case included).
"""

import socket
import ssl
import struct
import time
from collections import namedtuple

import hpack

from grpcweb import SocketClient

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# error codes (RFC 9113 §7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
CODE_NAMES = dict(enumerate(
    "NO_ERROR PROTOCOL_ERROR INTERNAL_ERROR FLOW_CONTROL_ERROR SETTINGS_TIMEOUT STREAM_CLOSED FRAME_SIZE_ERROR "
    "REFUSED_STREAM CANCEL COMPRESSION_ERROR CONNECT_ERROR ENHANCE_YOUR_CALM".split()))

# SETTINGS ids
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = range(1, 7)
ENABLE_CONNECT_PROTOCOL = 8

Frame = namedtuple("Frame", "type flags sid payload")


class Closed(Exception):
    pass


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings_payload(pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


def request_headers(port, path, method="POST", content_type="application/grpc-web+proto", extra=()):
    hdrs = [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"), (":path", path)]
    if method == "POST":
        hdrs += [("content-type", content_type), ("x-grpc-web", "1")]
    return hdrs + list(extra)


def tls_context():
    """A client context offering only h2 that does not verify (the tests' PKI is not the point here)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


class RawH2(SocketClient):
    def __init__(self, port, ctx=None, preface=PREFACE, settings=(), ack_settings=True, timeout=5.0):
        self.port, self.timeout, self.ack_settings = port, timeout, ack_settings
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 16
        self.frames = []       # every Frame received, in order
        self.closed = False    # the gateway closed (EOF or reset)
        self.rbuf = bytearray()
        self.server_settings = None
        if preface is not None:
            self.send(preface + frame(SETTINGS, 0, 0, settings_payload(settings)))

    # -- sending
    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, ftype, flags, sid, payload=b""):
        self.send(frame(ftype, flags, sid, payload))

    def block(self, hdrs):
        return self.encoder.encode(hdrs)

    def headers(self, sid, hdrs, end_stream=True, end_headers=True, priority=None):
        """HEADERS; `priority` (dependency, weight, exclusive) adds the PRIORITY fields."""
        payload = self.block(hdrs) if not isinstance(hdrs, bytes) else hdrs
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        if priority is not None:
            dep, weight, excl = priority
            payload = struct.pack(">IB", dep | (0x80000000 if excl else 0), weight) + payload
            flags |= PRIORITY_FLAG
        self.send_frame(HEADERS, flags, sid, payload)

    def data(self, sid, payload, end_stream=False):
        self.send_frame(DATA, END_STREAM if end_stream else 0, sid, payload)

    def rst(self, sid, code=CANCEL):
        self.send_frame(RST_STREAM, 0, sid, struct.pack(">I", code))

    def ping(self, payload=b"12345678", ack=False):
        self.send_frame(PING, ACK if ack else 0, 0, payload)

    def settings(self, pairs=(), ack=False):
        self.send_frame(SETTINGS, ACK if ack else 0, 0, settings_payload(pairs))

    def window_update(self, sid, increment):
        self.send_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))

    def priority(self, sid, dep, weight=16, exclusive=False):
        self.send_frame(PRIORITY, 0, sid, struct.pack(">IB", dep | (0x80000000 if exclusive else 0), weight))

    # -- receiving
    def pump(self, timeout):
        """One recv; parses every complete frame. False on timeout; raises Closed at EOF."""
        if self.closed:
            raise Closed()
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            return False
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            raise Closed()
        self.rbuf += data
        while len(self.rbuf) >= 9:
            n = int.from_bytes(self.rbuf[:3], "big")
            if len(self.rbuf) < 9 + n:
                break
            f = Frame(self.rbuf[3], self.rbuf[4], int.from_bytes(self.rbuf[5:9], "big") & 0x7FFFFFFF,
                      bytes(self.rbuf[9:9 + n]))
            del self.rbuf[:9 + n]
            self._received(f)
        return True

    def _received(self, f):
        self.frames.append(f)
        if f.type == SETTINGS and not f.flags & ACK:
            self.server_settings = dict(struct.unpack(">HI", f.payload[i:i + 6]) for i in range(0, len(f.payload), 6))
            if self.ack_settings:
                try:
                    self.settings(ack=True)
                except OSError:
                    pass
        if f.type == HEADERS:
            payload = f.payload
            if f.flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if f.flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.frames[-1] = f._replace(payload=self.decoder.decode(payload, raw=False))

    def wait(self, pred, timeout=None, what="condition"):
        """Pumps until pred() holds; returns True, or False if the gateway closed first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"h2raw: timed out waiting for {what}; frames: {self.summary()}")
            try:
                self.pump(remaining)
            except Closed:
                return pred()
        return True

    def find(self, ftype, sid=None):
        return [f for f in self.frames if f.type == ftype and (sid is None or f.sid == sid)]

    def goaway(self, timeout=None):
        """(error code, last stream id, debug text) of the gateway's first GOAWAY (waits for it)."""
        if not self.wait(lambda: self.find(GOAWAY), timeout, "GOAWAY"):
            raise AssertionError(f"closed without GOAWAY; frames: {self.summary()}")
        p = self.find(GOAWAY)[0].payload
        return struct.unpack(">I", p[4:8])[0], struct.unpack(">I", p[:4])[0] & 0x7FFFFFFF, p[8:].decode(errors="replace")

    def goaway_code(self, timeout=None):
        return self.goaway(timeout)[0]

    def rst_code(self, sid, timeout=None):
        """The error code of the gateway's RST_STREAM on `sid` (waits for it)."""
        if not self.wait(lambda: self.find(RST_STREAM, sid) or self.find(GOAWAY), timeout, f"RST_STREAM {sid}"):
            raise AssertionError(f"closed without RST_STREAM on {sid}; frames: {self.summary()}")
        rst = self.find(RST_STREAM, sid)
        assert rst, f"GOAWAY instead of RST_STREAM on {sid}: {self.goaway()}; frames: {self.summary()}"
        return struct.unpack(">I", rst[0].payload)[0]

    def wait_closed(self, timeout):
        """True if the gateway closes the connection within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.pump(deadline - time.monotonic())
        except Closed:
            return True
        return False

    def response(self, sid, timeout=None):
        """(status, headers dict, body bytes, trailers dict or None) once stream `sid` ended."""
        def ended():
            return any(f.sid == sid and f.type in (HEADERS, DATA) and f.flags & END_STREAM for f in self.frames) \
                or self.find(RST_STREAM, sid)
        if not self.wait(ended, timeout, f"end of stream {sid}"):
            raise AssertionError(f"closed before stream {sid} ended; frames: {self.summary()}")
        assert not self.find(RST_STREAM, sid), f"stream {sid} reset: {self.summary()}"
        blocks = [dict(f.payload) for f in self.frames if f.sid == sid and f.type == HEADERS]
        body = b"".join(f.payload[1:len(f.payload) - f.payload[0]] if f.flags & PADDED else f.payload
                        for f in self.frames if f.sid == sid and f.type == DATA)
        return int(blocks[0][":status"]), blocks[0], body, blocks[1] if len(blocks) > 1 else None

    def summary(self):
        names = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
                 "WINDOW_UPDATE", "CONTINUATION"]
        out = []
        for f in self.frames[-40:]:
            name = names[f.type] if f.type < len(names) else str(f.type)
            extra = ""
            if f.type in (RST_STREAM, GOAWAY):
                code = struct.unpack(">I", f.payload[-4:] if f.type == RST_STREAM else f.payload[4:8])[0]
                extra = " " + CODE_NAMES.get(code, str(code))
            out.append(f"{name}[{f.sid}]{extra}")
        return " ".join(out) + (" <closed>" if self.closed else "")
