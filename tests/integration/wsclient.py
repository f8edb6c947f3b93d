"""A small RFC 6455 WebSocket client for the integration tests, and the grpc-websockets call protocol
(improbable-eng/grpc-web, PROTOCOL.md §3.3) on top of it.

Raw on purpose: tests send malformed handshakes, text frames, fragmented or oversized messages, and read
close codes exactly. Only the standard library is used.
"""

import base64
import collections
import hashlib
import os
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events

import grpcweb

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "grpc-websockets"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status, headers, body):
        super().__init__(f"upgrade refused: {status} {body!r}")
        self.status, self.headers, self.body = status, headers, body


class Closed(Exception):
    """The server closed the WebSocket (close frame) or the connection."""

    def __init__(self, code, reason):
        super().__init__(f"closed: {code} {reason!r}")
        self.code, self.reason = code, reason


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class WebSocket:
    """One client WebSocket. recv() answers pings itself; close frames raise Closed."""

    def __init__(self, port, path, headers=(), origin=None, protocols=SUBPROTOCOL, host="127.0.0.1",
                 timeout=grpcweb.DEFAULT_TIMEOUT, tls_context=None, key=None, version="13", raw_head=None):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = bytearray()
        self.pongs = 0
        self.pings_seen = 0
        self.close_code = None
        self.close_reason = None
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        if raw_head is None:
            lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                     f"Sec-WebSocket-Key: {self.key}"]
            if version is not None:
                lines.append(f"Sec-WebSocket-Version: {version}")
            if protocols is not None:
                lines.append(f"Sec-WebSocket-Protocol: {protocols}")
            if origin is not None:
                lines.append(f"Origin: {origin}")
            lines += [f"{k}: {v}" for k, v in (headers.items() if isinstance(headers, dict) else headers)]
            raw_head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(raw_head)
        self.status, self.headers = self._read_head()
        if self.status != 101:
            body = bytes(self.buf)
            try:
                self.sock.settimeout(1.0)
                while len(body) < int(self.headers.get("content-length", "0")):
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            except OSError:
                pass
            self.sock.close()
            raise HandshakeRefused(self.status, self.headers, body.decode(errors="replace"))
        if self.headers.get("sec-websocket-accept") != accept_for(self.key):
            raise AssertionError(f"bad Sec-WebSocket-Accept {self.headers.get('sec-websocket-accept')!r}")

    # -- handshake
    def _read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        data = self.sock.recv(65536)
        if not data:
            raise Closed(None, "connection closed without a close frame")
        self.buf += data

    def _take(self, n, timeout=None):
        while len(self.buf) < n:
            self._fill(timeout)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    # -- frames
    @staticmethod
    def encode(opcode, payload=b"", fin=True, mask=True, rsv=0):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack(">BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack(">BBH", b0, mbit | 126, n)
        else:
            head = struct.pack(">BBQ", b0, mbit | 127, n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, key)
        return head + key + masked

    def send_frame(self, opcode, payload=b"", fin=True, mask=True):
        self._send(self.encode(opcode, payload, fin, mask))

    def send_binary(self, payload, fragments=1):
        """One binary message, optionally split into several frames."""
        if fragments <= 1:
            self.send_frame(BINARY, payload)
            return
        step = max(1, -(-len(payload) // fragments))
        parts = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for i, part in enumerate(parts):
            self.send_frame(BINARY if i == 0 else CONT, part, fin=i == len(parts) - 1)

    def send_close(self, code=1000, reason=b""):
        self.send_frame(CLOSE, struct.pack(">H", code) + reason)

    def recv_frame(self, timeout=None):
        b0, b1 = self._take(2, timeout)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._take(2, timeout))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._take(8, timeout))[0]
        if b1 & 0x80:
            raise AssertionError("server frames must not be masked")
        return bool(b0 & 0x80), b0 & 0x0F, self._take(n, timeout)

    def recv(self, timeout=None):
        """The next data message as (opcode, payload). Raises Closed on a close frame (answered)."""
        data, opcode = bytearray(), None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message")
            fin, op, payload = self.recv_frame(left)
            if op == PING:
                self.pings_seen += 1
                self.send_frame(PONG, payload)
                continue
            if op == PONG:
                self.pongs += 1
                continue
            if op == CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_code, self.close_reason = code, payload[2:].decode(errors="replace")
                try:
                    self.send_frame(CLOSE, payload[:2])
                except OSError:
                    pass
                raise Closed(code, self.close_reason)
            if op != CONT:
                opcode = op
            data += payload
            if fin:
                return opcode, bytes(data)

    def wait_eof(self, timeout=5.0):
        """True when the server closes the TCP connection within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError, ssl.SSLError):
            return False
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _mask_fast(payload, key):
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


# --------------------------------------------------------------------------- grpc-websockets calls


def header_block(headers):
    items = headers.items() if isinstance(headers, dict) else headers
    return "".join(f"{k}: {v}\r\n" for k, v in items).encode("latin-1")


def parse_header_block(payload):
    out = {}
    for line in payload.decode("latin-1").split("\r\n"):
        if line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


class GrpcWs:
    """One grpc-websockets call: open() sends the header block, send() a message, end() the half-close;
    read() collects the response (headers, messages, trailers, close code) as it arrives."""

    def __init__(self, port, path, metadata=(), origin=None, transport=None, **kw):
        self.ws = (transport or WebSocket)(port, path, origin=origin, **kw)
        self.stream = bytearray()
        self.headers = None
        self.trailers = None
        self.messages = []
        self.closed = None  # (code, reason)
        md = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
        md.update(dict(metadata) if not isinstance(metadata, dict) else metadata)
        self.metadata = md

    def open(self):
        self.ws.send_binary(header_block(self.metadata))
        return self

    def send(self, msg, fragments=1):
        self.ws.send_binary(b"\x00" + grpcweb.frame(msg), fragments)

    def end(self):
        self.ws.send_binary(b"\x01")

    def _parse(self):
        while len(self.stream) >= 5:
            flags, n = struct.unpack(">BI", self.stream[:5])
            if len(self.stream) < 5 + n:
                return
            payload = bytes(self.stream[5:5 + n])
            del self.stream[:5 + n]
            if flags & 0x80:
                if self.headers is None:
                    self.headers = parse_header_block(payload)
                else:
                    self.trailers = parse_header_block(payload)
            else:
                self.messages.append(payload)

    def read_until(self, pred, timeout=grpcweb.DEFAULT_TIMEOUT):
        """Reads until pred(self) holds or the socket closes; returns pred(self)."""
        deadline = time.monotonic() + timeout
        while not pred(self) and self.closed is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("grpc-websockets response incomplete")
            try:
                opcode, payload = self.ws.recv(timeout=left)
            except Closed as exc:
                self.closed = (exc.code, exc.reason)
                break
            assert opcode == BINARY, f"text message from the server: {payload!r}"
            self.stream += payload
            self._parse()
        return pred(self)

    def finish(self, timeout=grpcweb.DEFAULT_TIMEOUT):
        """Reads to the end of the call (trailers, then the close); returns self."""
        self.read_until(lambda c: c.closed is not None, timeout)
        return self

    @property
    def status(self):
        return None if self.trailers is None else int(self.trailers.get("grpc-status", "-1"))

    def close(self):
        self.ws.close()


# --------------------------------------------------------------------------- WebSockets over HTTP/2 (RFC 8441)


class H2Tunnel:
    """One prior-knowledge h2c connection carrying WebSockets on extended CONNECT streams."""

    def __init__(self, port, host="127.0.0.1", timeout=grpcweb.DEFAULT_TIMEOUT, tls_context=None):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls_context is not None:  # ALPN h2 is the caller's to offer
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="localhost")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
        self.conn.initiate_connection()
        self.flush()
        self.data = collections.defaultdict(bytearray)   # stream id -> received DATA
        self.heads = {}                                  # stream id -> response headers
        self.ended = set()
        self.resets = {}
        self.goaway = None
        self.settings_seen = False
        while not self.settings_seen:
            self.pump()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, timeout=None):
        self.sock.settimeout(self.timeout if timeout is None else max(0.001, timeout))
        data = self.sock.recv(65536)
        if not data:
            raise Closed(None, "HTTP/2 connection closed")
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(ev, h2.events.ResponseReceived):
                self.heads[ev.stream_id] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.data[ev.stream_id] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
        self.flush()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class H2WebSocket(WebSocket):
    """A WebSocket on an extended CONNECT stream of an H2Tunnel (its own tunnel unless one is given)."""

    def __init__(self, port, path, headers=(), origin=None, protocols=SUBPROTOCOL, tunnel=None, version="13",
                 protocol="websocket", timeout=grpcweb.DEFAULT_TIMEOUT, **_):
        self.timeout = timeout
        self.tunnel = tunnel or H2Tunnel(port, timeout=timeout)
        self.own_tunnel = tunnel is None
        self.buf = bytearray()
        self.pongs = self.pings_seen = 0
        self.close_code = self.close_reason = None
        t = self.tunnel
        self.sid = t.conn.get_next_available_stream_id()
        hdrs = [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"), (":path", path),
                (":authority", f"127.0.0.1:{port}")]
        if version is not None:
            hdrs.append(("sec-websocket-version", version))
        if protocols is not None:
            hdrs.append(("sec-websocket-protocol", protocols))
        if origin is not None:
            hdrs.append(("origin", origin))
        hdrs += [(k.lower(), v) for k, v in (headers.items() if isinstance(headers, dict) else headers)]
        t.conn.send_headers(self.sid, hdrs)
        t.flush()
        deadline = time.monotonic() + timeout
        while self.sid not in t.heads and self.sid not in t.resets:
            t.pump(deadline - time.monotonic())
        if self.sid in t.resets:
            raise HandshakeRefused(None, {}, f"stream reset {t.resets[self.sid]}")
        self.headers = {k: v for k, v in t.heads[self.sid].items() if not k.startswith(":")}
        self.status = int(t.heads[self.sid][":status"])
        if self.status != 200:
            while self.sid not in t.ended and self.sid not in t.resets:
                t.pump(deadline - time.monotonic())
            body = bytes(t.data.pop(self.sid, b"")).decode(errors="replace")
            if self.own_tunnel:
                t.close()
            raise HandshakeRefused(self.status, self.headers, body)

    def _send(self, data):
        t = self.tunnel
        view = memoryview(data)
        while view:
            n = min(len(view), t.conn.local_flow_control_window(self.sid), t.conn.max_outbound_frame_size)
            if n <= 0:
                t.flush()  # what was queued must go out before waiting for the window to reopen
                t.pump()
                continue
            t.conn.send_data(self.sid, bytes(view[:n]))
            view = view[n:]
        t.flush()

    def _fill(self, timeout=None):
        t = self.tunnel
        while not t.data.get(self.sid):
            if self.sid in t.ended:
                raise Closed(None, "stream ended without a close frame")
            if self.sid in t.resets:
                raise Closed(None, f"stream reset ({t.resets[self.sid]})")
            t.pump(self.timeout if timeout is None else timeout)
        self.buf += t.data.pop(self.sid)

    def end_stream(self):
        self.tunnel.conn.end_stream(self.sid)
        self.tunnel.flush()

    def wait_stream_end(self, timeout=5.0):
        """Pumps until the server ended (END_STREAM) or reset the stream; returns 'ended', 'reset:N' or None."""
        t = self.tunnel
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sid in t.resets:
                return f"reset:{t.resets[self.sid]}"
            if self.sid in t.ended:
                return "ended"
            try:
                t.pump(deadline - time.monotonic())
            except (TimeoutError, socket.timeout):
                break
        return None

    def close(self):
        if self.own_tunnel:
            self.tunnel.close()
