"""Tiny blocking gRPC / gRPC-Web clients for the benchmark harness (stdlib + Debian's python3-h2).

They exist because h2load only sees HTTP status codes: these read the whole response, trailers
included, so the harness can check `grpc-status: 0` and the payload of sampled calls, and learn the
exact number of response body bytes one successful call produces (which it then compares with
h2load's byte count for every call of a run).

- H1Client: one HTTP/1.1 keep-alive connection. mode "grpc-web" (binary gRPC-Web: status in a 0x80
  trailer frame at the end of the body, or in the headers for trailers-only answers) or "grpc"
  (native gRPC over HTTP/1.1, as HAProxy accepts and converts to HTTP/2: status in the chunked
  trailer section).
- H2Client: one HTTP/2 connection (cleartext with prior knowledge, or TLS with ALPN h2), via python3-h2; mode "grpc" (status
  in HEADERS trailers) or "grpc-web" (status in a 0x80 trailer frame, or in trailers-only headers).
"""

import socket
import ssl
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings


class CallError(Exception):
    pass


class Reply:
    """One finished call: HTTP status, gRPC status/message, the messages, body bytes on the wire
    (after de-chunking for HTTP/1.1; DATA payload for HTTP/2: what h2load counts as "data")."""

    def __init__(self):
        self.http_status = None
        self.headers = {}
        self.trailers = {}
        self.grpc_status = None
        self.grpc_message = ""
        self.messages = []
        self.body_bytes = 0


def frame(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def parse_frames(data: bytes):
    """Splits a gRPC(-Web) body into [(flags, payload)]; raises on a truncated frame."""
    out, i = [], 0
    while i < len(data):
        if len(data) - i < 5:
            raise CallError("truncated frame header (%d bytes left)" % (len(data) - i))
        flags, n = struct.unpack_from(">BI", data, i)
        if len(data) - i - 5 < n:
            raise CallError("truncated frame: want %d bytes, have %d" % (n, len(data) - i - 5))
        out.append((flags, data[i + 5:i + 5 + n]))
        i += 5 + n
    return out


def _trailer_block(payload: bytes) -> dict:
    fields = {}
    for line in payload.split(b"\r\n"):
        if not line:
            continue
        k, _, v = line.partition(b":")
        fields[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return fields


def _finish(reply: Reply, body: bytes, web: bool) -> Reply:
    reply.body_bytes = len(body)
    for flags, payload in parse_frames(body):
        if flags & 0x80:
            if not web:
                raise CallError("trailer frame in a native gRPC body")
            reply.trailers.update(_trailer_block(payload))
        elif flags & 0x01:
            raise CallError("compressed message not expected")
        else:
            reply.messages.append(payload)
    st = reply.trailers.get("grpc-status", reply.headers.get("grpc-status"))
    reply.grpc_status = int(st) if st is not None and st.isdigit() else None
    reply.grpc_message = reply.trailers.get("grpc-message", reply.headers.get("grpc-message", ""))
    return reply


def _connect(host, port, timeout, rcvbuf=None, tls=False, alpn="http/1.1"):
    """A TCP connection (TCP_NODELAY), wrapped in TLS when asked: the benchmark's self-signed certificate is not
    verified; ALPN offers only `alpn`, and the server must pick it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not tls:
        return sock
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    sock = ctx.wrap_socket(sock, server_hostname=host)
    if sock.selected_alpn_protocol() != alpn:
        raise CallError("TLS: the server chose ALPN %r, not %r" % (sock.selected_alpn_protocol(), alpn))
    return sock


class H1Client:
    def __init__(self, host, port, mode="grpc-web", timeout=30.0, rcvbuf=None, extra_headers=(), tls=False):
        assert mode in ("grpc-web", "grpc")
        self.mode = mode
        self.extra = "".join("%s\r\n" % h for h in extra_headers)
        self.host, self.port = host, port
        self.sock = _connect(host, port, timeout, rcvbuf, tls, "http/1.1")
        self.buf = b""

    def close(self):
        self.sock.close()

    def request_bytes(self, path: str, body: bytes) -> bytes:
        ctype = "application/grpc-web+proto" if self.mode == "grpc-web" else "application/grpc"
        head = ("POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: %s\r\n"
                "content-length: %d\r\n" % (path, self.host, self.port, ctype, len(body)))
        if self.mode == "grpc":
            head += "te: trailers\r\n"
        else:
            head += "x-grpc-web: 1\r\n"
        return (head + self.extra + "\r\n").encode() + body

    def send(self, path: str, body: bytes):
        self.sock.sendall(self.request_bytes(path, body))

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise CallError("connection closed by peer")
        self.buf += d

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_reply(self) -> Reply:
        r = Reply()
        status = self._line()
        parts = status.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise CallError("bad status line %r" % status[:80])
        r.http_status = int(parts[1])
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.partition(b":")
            r.headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        body = []
        if "chunked" in r.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    break
                body.append(self._exact(size))
                if self._exact(2) != b"\r\n":
                    raise CallError("bad chunk terminator")
            while True:  # trailer section
                line = self._line()
                if not line:
                    break
                k, _, v = line.partition(b":")
                r.trailers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        elif "content-length" in r.headers:
            body.append(self._exact(int(r.headers["content-length"])))
        else:
            raise CallError("response without length (connection-delimited) not expected")
        return _finish(r, b"".join(body), self.mode == "grpc-web")

    def call(self, path: str, body: bytes) -> Reply:
        self.send(path, body)
        return self.recv_reply()


class H2Client:
    def __init__(self, host, port, mode="grpc", timeout=30.0, extra_headers=(), tls=False):
        assert mode in ("grpc-web", "grpc")
        self.mode = mode
        self.host, self.port = host, port
        self.scheme = "https" if tls else "http"
        # "Name: value" strings, as for H1Client and h2load's -H
        self.extra = [tuple(x.strip() for x in h.split(":", 1)) for h in extra_headers]
        self.extra = [(k.lower(), v) for k, v in self.extra]
        self.sock = _connect(host, port, timeout, None, tls, "h2")
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 30)
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
        self._flush()

    def close(self):
        try:
            self.conn.close_connection()
            self._flush()
        except Exception:
            pass
        self.sock.close()

    def _flush(self):
        d = self.conn.data_to_send()
        if d:
            self.sock.sendall(d)

    def _pump(self, state):
        d = self.sock.recv(65536)
        if not d:
            raise CallError("connection closed by peer")
        for ev in self.conn.receive_data(d):
            sid = getattr(ev, "stream_id", None)
            if isinstance(ev, h2.events.ResponseReceived) and sid == state["sid"]:
                state["headers"] = ev.headers
            elif isinstance(ev, h2.events.TrailersReceived) and sid == state["sid"]:
                state["trailers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                if sid == state["sid"]:
                    state["body"].append(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and sid == state["sid"]:
                state["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and sid == state["sid"]:
                raise CallError("stream reset, error code %s" % ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                raise CallError("GOAWAY, error code %s" % ev.error_code)
        self._flush()

    def call(self, path: str, body: bytes) -> Reply:
        sid = self.conn.get_next_available_stream_id()
        state = {"sid": sid, "headers": None, "trailers": None, "body": [], "ended": False}
        self.conn.send_headers(sid, [
            (":method", "POST"), (":scheme", self.scheme), (":path", path),
            (":authority", "%s:%d" % (self.host, self.port)),
            ("content-type",
             "application/grpc-web+proto" if self.mode == "grpc-web" else "application/grpc"),
            ("te", "trailers")] + self.extra)
        view = memoryview(body)
        while True:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if len(view) <= room:
                self.conn.send_data(sid, bytes(view), end_stream=True)
                break
            if room > 0:
                self.conn.send_data(sid, bytes(view[:room]))
                view = view[room:]
            self._flush()
            if room == 0:
                self._pump(state)
        self._flush()
        while not state["ended"]:
            self._pump(state)
        r = Reply()
        hdrs = dict(state["headers"] or [])
        r.http_status = int(hdrs.get(":status", 0))
        r.headers = {k: v for k, v in hdrs.items() if not k.startswith(":")}
        r.trailers = dict(state["trailers"] or [])
        return _finish(r, b"".join(state["body"]), self.mode == "grpc-web")
