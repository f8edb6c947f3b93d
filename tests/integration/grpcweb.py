"""gRPC-Web client-side helpers for the integration tests.

Framing (PROTOCOL.md §1.3): every message is `flags(1) | length(4, big-endian) | payload`;
flag 0x80 marks the trailer frame whose payload is `name:value\\r\\n` lines.
The HTTP/1.1 client is deliberately raw so tests can send malformed or split requests
and observe chunk boundaries, keep-alive and connection closes exactly.
"""

import base64
import binascii
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events

DEFAULT_TIMEOUT = 10.0
TRAILER_FLAG = 0x80
CT_BINARY = "application/grpc-web+proto"
CT_TEXT = "application/grpc-web-text"


# --------------------------------------------------------------------------- framing

def frame(payload, flags=0):
    """One length-prefixed gRPC(-Web) frame."""
    if hasattr(payload, "SerializeToString"):
        payload = payload.SerializeToString()
    return struct.pack(">BI", flags, len(payload)) + payload


def trailer_frame(trailers):
    """A 0x80 trailer frame from a list of (name, value) pairs or a dict."""
    items = trailers.items() if isinstance(trailers, dict) else trailers
    return frame("".join(f"{k}:{v}\r\n" for k, v in items).encode("latin-1"), TRAILER_FLAG)


def encode_text(data):
    """Base64 (padded) as used by application/grpc-web-text bodies."""
    return base64.b64encode(data)


def decode_text(body):
    """Decode a grpc-web-text body.

    Accepts concatenated padded segments (each a multiple of 4 characters, as emitted
    per frame or per flush) and ignores ASCII whitespace. Raises ValueError on bad input.
    """
    data = bytes(b for b in body if b not in b" \t\r\n")
    if len(data) % 4:
        raise ValueError(f"grpc-web-text body length {len(data)} is not a multiple of 4")
    out = bytearray()
    try:
        for i in range(0, len(data), 4):
            out += base64.b64decode(data[i:i + 4], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 in grpc-web-text body: {exc}") from None
    return bytes(out)


def split_frames(data):
    """Split bytes into complete frames: returns ([(flags, payload), ...], leftover bytes)."""
    frames = []
    pos = 0
    while len(data) - pos >= 5:
        flags, length = struct.unpack_from(">BI", data, pos)
        if len(data) - pos - 5 < length:
            break
        frames.append((flags, bytes(data[pos + 5:pos + 5 + length])))
        pos += 5 + length
    return frames, bytes(data[pos:])


def parse_trailer_block(payload):
    """Parse a trailer frame payload into a dict with lower-case keys.

    Repeated names are joined with ','. Raises ValueError for lines without ':'.
    """
    trailers = {}
    text = payload.decode("latin-1")
    for line in text.split("\r\n"):
        if not line.strip():
            continue
        if ":" not in line:
            raise ValueError(f"malformed trailer line {line!r}")
        name, value = line.split(":", 1)
        name, value = name.strip().lower(), value.strip()
        trailers[name] = trailers[name] + "," + value if name in trailers else value
    return trailers


def parse_body(body, text=False):
    """Parse a complete gRPC-Web response body.

    Returns (frames, trailers): `frames` is every frame as (flags, payload), the trailer
    frame included; `trailers` is the parsed trailer dict, or None if there was no
    trailer frame (e.g. a Trailers-Only response carried in the HTTP headers).
    Raises ValueError for truncated frames, more than one trailer frame, or data after it.
    """
    data = decode_text(body) if text else body
    frames, rest = split_frames(data)
    if rest:
        raise ValueError(f"truncated gRPC-Web frame: {len(rest)} trailing bytes")
    trailers = None
    for i, (flags, payload) in enumerate(frames):
        if flags & TRAILER_FLAG:
            if trailers is not None:
                raise ValueError("more than one trailer frame")
            if i != len(frames) - 1:
                raise ValueError("trailer frame is not the last frame")
            trailers = parse_trailer_block(payload)
    return frames, trailers


def messages_of(frames):
    """Payloads of the data (non-trailer) frames."""
    return [payload for flags, payload in frames if not flags & TRAILER_FLAG]


def grpc_status(headers, trailers):
    """(grpc-status int or None, grpc-message str) from the trailer frame or,
    for Trailers-Only responses, from the response headers (dicts, lower-case keys)."""
    source = trailers if trailers is not None else headers
    status = source.get("grpc-status")
    return (int(status) if status is not None else None), source.get("grpc-message", "")


# --------------------------------------------------------------------------- HTTP/1.1

class ResponseHead:
    def __init__(self, version, status, reason, headers):
        self.version = version          # e.g. "HTTP/1.1"
        self.status = status            # int
        self.reason = reason
        self.headers = headers          # [(name, value)] in wire order, case preserved

    def get(self, name, default=None):
        """Value of a header (case-insensitive); repeated headers joined with ', '."""
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def dict(self):
        """Headers as a dict with lower-case keys; repeated headers joined with ', '."""
        out = {}
        for k, v in self.headers:
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        return out

    def __repr__(self):
        return f"ResponseHead({self.version} {self.status} {self.reason!r}, {self.headers!r})"


class ConnectionClosed(Exception):
    """The peer closed the connection before the expected data arrived."""


class SocketClient:
    """A client owning `self.sock`: close() (quietly) and use as a context manager."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HttpConnection(SocketClient):
    """Minimal HTTP/1.1 client over a plain socket, usable with keep-alive.

    Every blocking read honours a per-read timeout (socket.timeout / TimeoutError).
    """

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self._body = None               # state of the response body being read
        self._method = None

    # -- raw I/O
    def send(self, data):
        """Send raw bytes."""
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionClosed(f"connection closed ({len(self.buf)} bytes unparsed)")
        self.buf += data

    def recv_raw(self, timeout=None):
        """Return buffered bytes or whatever the next recv yields (b'' on EOF)."""
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            return data
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        return self.sock.recv(65536)

    def wait_closed(self, timeout=None):
        """True if the peer closes the connection (EOF or reset) within `timeout`,
        False if the timeout expires. Unread bytes are discarded."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.sock.settimeout(remaining)
                if not self.sock.recv(65536):
                    return True
            except (socket.timeout, TimeoutError):
                return False
            except ConnectionError:
                return True

    def _read_line(self, timeout, limit=65536):
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[:idx + 2]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill(timeout)

    def _read_exact(self, n, timeout):
        while len(self.buf) < n:
            self._fill(timeout)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    # -- requests
    def request(self, method, path, headers=(), body=b"", chunked=False, content_length=True):
        """Send a request. `headers` is a list of (name, value) or a dict; Host is added
        unless given. With `chunked`, `body` may be bytes (one chunk) or a list of chunks.
        Content-Length is added for non-chunked requests unless given or disabled."""
        items = list(headers.items() if isinstance(headers, dict) else headers)
        names = {k.lower() for k, _ in items}
        if "host" not in names:
            items.insert(0, ("Host", f"{self.host}:{self.port}"))
        if chunked:
            if "transfer-encoding" not in names:
                items.append(("Transfer-Encoding", "chunked"))
            chunks = [body] if isinstance(body, (bytes, bytearray)) else list(body)
            payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
        else:
            payload = bytes(body)
            if content_length and "content-length" not in names and (payload or method != "GET"):
                items.append(("Content-Length", str(len(payload))))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items)
        self._method = method
        self.send(head.encode("latin-1") + b"\r\n" + payload)

    def read_head(self, timeout=None, skip_interim=True):
        """Read a response status line and headers. 1xx responses are skipped unless
        `skip_interim` is False. Prepares incremental body reading."""
        while True:
            line = self._read_line(timeout)
            version, _, rest = line.decode("latin-1").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/") or not code.isdigit():
                raise ValueError(f"bad status line {line!r}")
            headers = []
            while True:
                hline = self._read_line(timeout)
                if not hline:
                    break
                name, sep, value = hline.decode("latin-1").partition(":")
                if not sep:
                    raise ValueError(f"bad header line {hline!r}")
                headers.append((name, value.strip(" \t")))
            head = ResponseHead(version, int(code), reason, headers)
            if 100 <= head.status < 200 and head.status != 101 and skip_interim:
                continue
            break
        self._start_body(head)
        return head

    def _start_body(self, head):
        te = (head.get("transfer-encoding") or "").lower()
        if (self._method == "HEAD" or head.status in (204, 304)
                or 100 <= head.status < 200):
            self._body = {"mode": "none"}
        elif "chunked" in te:
            self._body = {"mode": "chunked", "done": False}
        elif head.get("content-length") is not None:
            self._body = {"mode": "length", "remaining": int(head.get("content-length"))}
        else:
            self._body = {"mode": "close", "done": False}
        self.http_trailers = []
        self.chunk_sizes = []

    def read_chunk(self, timeout=None):
        """Next piece of the response body, b'' at its end.

        For chunked responses this is exactly one decoded HTTP chunk (sizes are also
        recorded in `self.chunk_sizes`); HTTP trailers end up in `self.http_trailers`."""
        body = self._body
        if body is None:
            raise RuntimeError("read_head() first")
        mode = body["mode"]
        if mode == "none":
            return b""
        if mode == "length":
            if body["remaining"] == 0:
                return b""
            if not self.buf:
                self._fill(timeout)
            n = min(body["remaining"], len(self.buf))
            body["remaining"] -= n
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        if mode == "close":
            if body["done"]:
                return b""
            if not self.buf:
                try:
                    self._fill(timeout)
                except ConnectionClosed:
                    body["done"] = True
                    return b""
            data, self.buf = bytes(self.buf), bytearray()
            return data
        if body["done"]:
            return b""
        size_line = self._read_line(timeout).split(b";", 1)[0].strip()
        size = int(size_line, 16)
        if size == 0:
            while True:
                line = self._read_line(timeout)
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                self.http_trailers.append((name, value.strip()))
            body["done"] = True
            return b""
        data = self._read_exact(size, timeout)
        if self._read_exact(2, timeout) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        self.chunk_sizes.append(size)
        return data

    def read_body(self, timeout=None):
        """The rest of the response body (per-read `timeout`)."""
        out = bytearray()
        while True:
            data = self.read_chunk(timeout)
            if not data:
                return bytes(out)
            out += data

    def response(self, timeout=None):
        """read_head() + read_body()."""
        head = self.read_head(timeout)
        return head, self.read_body(timeout)


class FrameReader:
    """Incrementally yields gRPC-Web frames from a response body being read on `conn`
    (after read_head()), decoding base64 on the fly for text responses."""

    def __init__(self, conn, text=False):
        self.conn, self.text = conn, text
        self.raw = bytearray()          # undecoded text characters
        self.data = bytearray()         # decoded frame bytes
        self.ended = False

    def next_frame(self, timeout=None):
        """Next (flags, payload), or None at the end of the body (ValueError if the body
        ends inside a frame)."""
        while True:
            frames, rest = split_frames(self.data)
            if frames:
                flags, payload = frames[0]
                del self.data[:5 + len(payload)]
                return flags, payload
            if self.ended:
                if self.data or self.raw.strip():
                    raise ValueError(f"body ended inside a frame ({len(self.data)} bytes)")
                return None
            chunk = self.conn.read_chunk(timeout)
            if not chunk:
                self.ended = True
            elif self.text:
                self.raw += bytes(b for b in chunk if b not in b" \t\r\n")
                usable = len(self.raw) // 4 * 4
                self.data += decode_text(bytes(self.raw[:usable]))
                del self.raw[:usable]
            else:
                self.data += chunk

    def __iter__(self):
        while True:
            f = self.next_frame()
            if f is None:
                return
            yield f


def request_headers(text=False, extra=()):
    """Headers a grpc-web browser client sends (binary: +proto; text: -text with Accept).
    Names given in `extra` replace the defaults (case-insensitively)."""
    headers = [("Content-Type", CT_TEXT if text else CT_BINARY), ("X-Grpc-Web", "1"),
               ("X-User-Agent", "grpc-web-javascript/0.1")]
    if text:
        headers.append(("Accept", CT_TEXT))
    extra = list(extra.items() if isinstance(extra, dict) else extra)
    overridden = {k.lower() for k, _ in extra}
    return [(k, v) for k, v in headers if k.lower() not in overridden] + extra


def call(port, path, request, headers=(), text=False, conn=None, timeout=DEFAULT_TIMEOUT):
    """One gRPC-Web call over HTTP/1.1.

    `request` is a message (or bytes) framed as a single message, or a list of them.
    Reuses `conn` (keep-alive) if given, else opens and closes its own connection.
    Returns (http status, headers dict with lower-case keys, [message payload bytes],
    trailers dict or None when the response had no trailer frame). Whether the body
    is base64 is decided by the response content-type.
    """
    requests = request if isinstance(request, list) else [request]
    body = b"".join(frame(r) for r in requests)
    if text:
        body = encode_text(body)
    own = conn is None
    if own:
        conn = HttpConnection(port, timeout=timeout)
    try:
        conn.request("POST", path, request_headers(text, headers), body)
        head, resp_body = conn.response(timeout)
    finally:
        if own:
            conn.close()
    hdrs = head.dict()
    resp_text = hdrs.get("content-type", "").lower().startswith(CT_TEXT)
    if head.status != 200 or not hdrs.get("content-type", "").lower().startswith("application/grpc-web"):
        return head.status, hdrs, [], None
    frames, trailers = parse_body(resp_body, text=resp_text)
    return head.status, hdrs, messages_of(frames), trailers


# --------------------------------------------------------------------------- HTTP/2 (h2c)

class H2Response:
    def __init__(self):
        self.headers = None             # [(name, value)] of the first HEADERS block
        self.data = bytearray()
        self.trailers = None            # [(name, value)] of a trailing HEADERS block
        self.reset_code = None          # RST_STREAM error code, if reset
        self.ended = False


def h2_request(port, headers, body=b"", timeout=DEFAULT_TIMEOUT, host="127.0.0.1"):
    """One request over prior-knowledge h2c; returns an H2Response.

    `headers` must include the pseudo-headers. Header names/values are str.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="latin-1"))
    resp = H2Response()
    try:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not body)
        sock.sendall(conn.data_to_send())
        pending = memoryview(bytes(body))
        deadline = time.monotonic() + timeout
        while not (resp.ended or resp.reset_code is not None):
            while pending:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk, pending = pending[:window], pending[window:]
                conn.send_data(sid, bytes(chunk), end_stream=not pending)
            sock.sendall(conn.data_to_send())
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionClosed("h2 connection closed")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    resp.headers = list(ev.headers)
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    resp.trailers = list(ev.headers)
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    resp.data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    resp.ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    resp.reset_code = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionClosed(f"GOAWAY {ev.error_code}")
            if time.monotonic() > deadline:
                raise TimeoutError("h2 request timed out")
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return resp
