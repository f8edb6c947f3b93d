"""gRPC-Web -> gRPC translation through the real gateway binary (PROTOCOL.md §1, §1.13).

Each test sends raw HTTP/1.1 to a fresh `portico` process in front of the grpcio echo upstream
(tests/upstream/echo_server.py) or the non-gRPC h2c upstream (tests/upstream/plain_h2_server.py),
checks the exact answer (HTTP status, headers, frames, trailer bytes) and that the gateway still
serves afterwards. The `portico` fixture also checks that every gateway exits 0 on SIGTERM and
logged no sanitizer report.
"""

import base64
import re
import select
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

import echo_pb
import grpcweb
from echo_pb import EchoRequest, EchoResponse

UNARY = echo_pb.method_path("Unary")
SERVER_STREAM = echo_pb.method_path("ServerStream")
CLIENT_STREAM = echo_pb.method_path("ClientStream")

CT_BIN = "application/grpc-web+proto"        # what the gateway answers for binary responses
CT_TEXT = "application/grpc-web-text+proto"   # ... and for text responses
MiB = 1024 * 1024
DEFAULT_LIMIT = 4 * MiB                      # limits.max_message_size default
TIMEOUT = 10.0                               # per read; generous, nothing should take this long
BIG_TIMEOUT = 30.0

# grpc-status codes
OK, UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED = 0, 2, 3, 5, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 12, 13, 14

UNICODE = "héllo wörld ✓ 日本語 🎉"
# One trailer line as PROTOCOL.md §1.3 wants it: lower-case name, ':' without space, printable value.
TRAILER_LINE = re.compile(rb"[0-9a-z_.\-]+:[\x21-\x7e][\x20-\x7e]*\r\n|[0-9a-z_.\-]+:\r\n")
# Header fields that describe a hop and must never be copied between the two sides.
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
              "transfer-encoding")

PLAIN_H2_SERVER = Path(__file__).resolve().parents[1] / "upstream" / "plain_h2_server.py"
PYTHON = "/usr/bin/python3"


# --------------------------------------------------------------------------- helpers

def web_headers(ctype=grpcweb.CT_BINARY, accept=None, extra=()):
    """The headers a grpc-web client sends; `accept=None` sends no Accept header."""
    headers = [("Content-Type", ctype), ("X-Grpc-Web", "1"),
               ("X-User-Agent", "grpc-web-javascript/0.1")]
    if accept is not None:
        headers.append(("Accept", accept))
    return headers + list(extra)


def text_headers(extra=()):
    """What the Google client sends in its default text mode."""
    return web_headers(grpcweb.CT_TEXT, accept=grpcweb.CT_TEXT, extra=extra)


def frames_of(*messages):
    """The binary request body for these messages (one frame each)."""
    return b"".join(grpcweb.frame(m) for m in messages)


class Answer:
    """A complete gRPC-Web response, parsed strictly."""

    def __init__(self, head, body, conn):
        self.head = head
        self.status = head.status
        self.headers = head.dict()
        self.body = body
        self.http_trailers = list(conn.http_trailers)
        self.content_type = self.headers.get("content-type", "")
        self.text = self.content_type.lower().startswith(grpcweb.CT_TEXT)
        self.data = grpcweb.decode_text(body) if self.text else body
        # raises ValueError on truncated frames, several trailer frames or data after it
        self.frames, self.trailers = grpcweb.parse_body(body, text=self.text)

    @property
    def messages(self):
        return [EchoResponse.FromString(p) for p in grpcweb.messages_of(self.frames)]

    @property
    def trailer_block(self):
        """Raw payload of the trailer frame (None for Trailers-Only)."""
        blocks = [p for f, p in self.frames if f & grpcweb.TRAILER_FLAG]
        return blocks[0] if blocks else None

    @property
    def grpc_status(self):
        return grpcweb.grpc_status(self.headers, self.trailers)[0]

    @property
    def grpc_message(self):
        """grpc-message as sent (percent-encoded)."""
        return grpcweb.grpc_status(self.headers, self.trailers)[1]

    @property
    def grpc_message_decoded(self):
        return urllib.parse.unquote(self.grpc_message, errors="strict")

    def __repr__(self):
        return (f"Answer({self.status}, headers={self.headers!r}, frames={self.frames!r}, "
                f"trailers={self.trailers!r})")


def exchange(gw, path, body, headers, conn=None, chunked=False, timeout=TIMEOUT):
    """Sends one POST (raw `body`, already framed / base64-encoded) and returns its Answer.
    Uses `conn` (keep-alive) if given, else a connection of its own."""
    own = conn is None
    if own:
        conn = gw.connect(timeout=timeout)
    try:
        conn.request("POST", path, headers, body, chunked=chunked)
        head, resp_body = conn.response(timeout)
        return Answer(head, resp_body, conn)
    finally:
        if own:
            conn.close()


def rpc(gw, path, *messages, text=False, headers=None, conn=None, timeout=TIMEOUT):
    """One call carrying `messages`, binary or (Google-client style) text."""
    body = frames_of(*messages)
    if text:
        body = grpcweb.encode_text(body)
    if headers is None:
        headers = text_headers() if text else web_headers()
    return exchange(gw, path, body, headers, conn=conn, timeout=timeout)


def assert_well_formed(ans, text=None):
    """The invariants every gRPC-Web answer of the gateway must satisfy (PROTOCOL.md §1.3/§1.4)."""
    assert ans.status == 200, ans
    assert len(ans.head.get_all("content-type")) == 1, ans.head
    if text is not None:
        assert ans.content_type == (CT_TEXT if text else CT_BIN), ans.head
    if ans.trailers is None:
        # Trailers-Only: status in the head, empty body, and no (empty) trailer frame
        assert "grpc-status" in ans.headers, ans
        assert ans.headers.get("content-length") == "0", ans.head
        assert "transfer-encoding" not in ans.headers, ans.head
        assert ans.body == b""
    else:
        assert "grpc-status" in ans.trailers, ans
        assert "grpc-status" not in ans.headers, ans.head
        assert ans.headers.get("transfer-encoding") == "chunked", ans.head
        assert "content-length" not in ans.headers, ans.head
        assert ans.frames[-1][0] == grpcweb.TRAILER_FLAG
        assert_trailer_bytes(ans.trailer_block)
    assert ans.http_trailers == []


def assert_trailer_bytes(block):
    """The trailer frame payload is lower-case `name:value\\r\\n` lines and nothing else."""
    lines = TRAILER_LINE.findall(block)
    assert b"".join(lines) == block, f"malformed trailer block {block!r}"
    assert not re.search(rb"(^|\n)[^:\r\n]*[A-Z][^:\r\n]*:", block), block


def assert_serves(gw, conn=None):
    """A plain unary call still works (on `conn` if given, else on a new connection)."""
    ans = rpc(gw, UNARY, EchoRequest(message="still serving"), conn=conn)
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == OK, ans
    assert [m.message for m in ans.messages] == ["still serving"]


def per_frame_base64(data):
    """The Envoy-compatible text encoding of a byte string of frames: each frame separately."""
    frames, rest = grpcweb.split_frames(data)
    assert rest == b""
    return b"".join(base64.b64encode(grpcweb.frame(p, f)) for f, p in frames)


def padded(frame_len):
    """True if base64 of `frame_len` bytes ends with padding."""
    return frame_len % 3 != 0


# --------------------------------------------------------------------------- 1. unary

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_unary_exact_answer(portico, text):
    gw = portico()
    with gw.connect() as conn:
        ans = rpc(gw, UNARY, EchoRequest(message="hello", payload=b"\x00\x01\xff"), text=text,
                  conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.content_type == (CT_TEXT if text else CT_BIN)
        assert ans.headers["x-echo-initial"] == "yes"
        assert [f for f, _ in ans.frames] == [0x00, 0x80]       # one message, one trailer frame
        (msg,) = ans.messages
        assert (msg.message, msg.payload) == ("hello", b"\x00\x01\xff")
        block = ans.trailer_block
        # exactly these two lines (in the upstream's order), no blank line at the end
        assert sorted(block.split(b"\r\n")) == [b"", b"grpc-status:0", b"x-trailer-ok:done"]
        assert block.endswith(b"\r\n") and not block.endswith(b"\r\n\r\n")
        assert ans.trailers["grpc-status"] == "0" and ans.trailers["x-trailer-ok"] == "done"
        if text:
            assert ans.body == per_frame_base64(ans.data)
        # keep-alive: the same connection carries the next call
        assert "connection" not in ans.headers
        assert_serves(gw, conn)


# --------------------------------------------------------------------------- 2. content types

@pytest.mark.parametrize("ctype,text", [
    ("application/grpc-web+proto", False),
    ("application/grpc-web", False),
    ("APPLICATION/GRPC-WEB", False),
    ("Application/gRPC-Web+Proto", False),
    ("application/grpc-web+proto; charset=utf-8", False),
    ("application/grpc-web;charset=UTF-8", False),
    ("application/grpc-web-text", True),
    ("application/grpc-web-text+proto", True),
    ("APPLICATION/GRPC-WEB-TEXT", True),
    ("application/grpc-web-text+proto ; charset=utf-8", True),
])
def test_request_content_types(portico, ctype, text):
    """No Accept header: the response encoding follows the request's."""
    gw = portico()
    body = frames_of(EchoRequest(message=ctype))
    ans = exchange(gw, UNARY, grpcweb.encode_text(body) if text else body, web_headers(ctype))
    assert_well_formed(ans, text=text)
    assert ans.grpc_status == OK, ans
    assert [m.message for m in ans.messages] == [ctype]


def test_json_codec_is_forwarded(portico):
    """+json is passed through as application/grpc+json (the echo server does not care about
    the codec name, so the proto body still decodes); the answer keeps the codec."""
    gw = portico()
    ans = exchange(gw, UNARY, frames_of(EchoRequest(message="json?")),
                   web_headers("application/grpc-web+json"))
    assert_well_formed(ans)
    assert ans.content_type == "application/grpc-web+json"
    assert ans.grpc_status is not None
    if ans.grpc_status == OK:
        assert [m.message for m in ans.messages] == ["json?"]
    assert_serves(gw)


@pytest.mark.parametrize("req_text,accept,want_text", [
    (True, None, True),
    (False, None, False),
    (True, "application/grpc-web-text", True),
    (True, "application/grpc-web", False),
    (True, "application/grpc-web+proto", False),
    (False, "application/grpc-web-text", True),
    (False, "application/grpc-web-text+proto", True),
    (True, "*/*", True),
    (False, "*/*", False),
    (False, "text/html, application/grpc-web-text", True),
    (False, "application/grpc-web;q=0.5, application/grpc-web-text;q=0.9", True),
    (True, "application/grpc-web-text;q=0.2, application/grpc-web;q=0.8", False),
    (True, "application/grpc-web-text;q=0, */*", False),
    (False, "APPLICATION/GRPC-WEB-TEXT", True),
])
def test_accept_negotiation(portico, req_text, accept, want_text):
    gw = portico()
    body = frames_of(EchoRequest(message="negotiate"))
    ctype = grpcweb.CT_TEXT if req_text else grpcweb.CT_BINARY
    ans = exchange(gw, UNARY, grpcweb.encode_text(body) if req_text else body,
                   web_headers(ctype, accept=accept))
    assert_well_formed(ans, text=want_text)
    assert ans.grpc_status == OK, ans
    assert [m.message for m in ans.messages] == ["negotiate"]


# --------------------------------------------------------------------------- 3. text requests

def three_requests():
    """Three requests whose frames are 8, 9 and 10 bytes long (mod 3: 2, 0, 1)."""
    reqs = [EchoRequest(message="a"), EchoRequest(message="bc"), EchoRequest(message="def")]
    assert [len(grpcweb.frame(r)) % 3 for r in reqs] == [2, 0, 1]
    return reqs


@pytest.mark.parametrize("encoding", ["binary", "text", "text-segments"])
def test_body_in_tiny_chunks(portico, encoding):
    """Chunked transfer coding with 1-3 byte chunks, i.e. splits at every offset (for
    "text-segments" each frame is base64-encoded on its own, so padding meets chunk edges)."""
    gw = portico()
    reqs = three_requests()
    text = encoding != "binary"
    if encoding == "binary":
        body = frames_of(*reqs)
    elif encoding == "text":
        body = grpcweb.encode_text(frames_of(*reqs))
    else:
        body = b"".join(grpcweb.encode_text(grpcweb.frame(r)) for r in reqs)
    sizes = [1, 2, 3]
    chunks, pos, i = [], 0, 0
    while pos < len(body):
        chunks.append(body[pos:pos + sizes[i % 3]])
        pos += sizes[i % 3]
        i += 1
    headers = text_headers() if text else web_headers()
    with gw.connect() as conn:
        ans = exchange(gw, CLIENT_STREAM, chunks, headers, conn=conn, chunked=True)
        assert_well_formed(ans, text=text)
        assert ans.grpc_status == OK, ans
        assert [(m.message, m.index) for m in ans.messages] == [("a|bc|def", 3)]
        assert_serves(gw, conn)


def test_text_body_sent_byte_by_byte(portico):
    """Content-Length body written one byte per send() (separate TCP segments)."""
    gw = portico()
    body = grpcweb.encode_text(frames_of(*three_requests()))
    with gw.connect() as conn:
        head = (f"POST {CLIENT_STREAM} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in text_headers()) + "\r\n")
        conn.send(head.encode())
        for b in body:
            conn.send(bytes([b]))
        conn._method = "POST"       # what conn.request() would have recorded
        head, resp = conn.response(TIMEOUT)
        ans = Answer(head, resp, conn)
        assert_well_formed(ans, text=True)
        assert [(m.message, m.index) for m in ans.messages] == [("a|bc|def", 3)]
        assert_serves(gw, conn)


def test_text_concatenated_padded_segments(portico):
    """Each frame base64-encoded on its own: padding in the middle of the body."""
    gw = portico()
    body = b"".join(grpcweb.encode_text(grpcweb.frame(r)) for r in three_requests())
    assert b"=" in body.rstrip(b"=")                      # padding inside, not only at the end
    ans = exchange(gw, CLIENT_STREAM, body, text_headers())
    assert_well_formed(ans, text=True)
    assert ans.grpc_status == OK, ans
    assert [(m.message, m.index) for m in ans.messages] == [("a|bc|def", 3)]
    assert_serves(gw)


def test_text_whitespace_and_crlf(portico):
    gw = portico()
    enc = grpcweb.encode_text(frames_of(*three_requests()))
    # CRLF every 8 characters (MIME style), plus spaces and tabs between quanta and inside one
    pieces = [enc[i:i + 8] for i in range(0, len(enc), 8)]
    body = b" \t" + b"\r\n".join(pieces) + b"\r\n"
    body = body[:6] + b" \t " + body[6:]
    ans = exchange(gw, CLIENT_STREAM, body, text_headers())
    assert_well_formed(ans, text=True)
    assert ans.grpc_status == OK, ans
    assert [(m.message, m.index) for m in ans.messages] == [("a|bc|def", 3)]


@pytest.mark.parametrize("message", ["a", "abc"], ids=["one-pad", "two-pad"])
def test_text_missing_final_padding(portico, message):
    gw = portico()
    req = EchoRequest(message=message)
    enc = grpcweb.encode_text(grpcweb.frame(req))
    assert enc.endswith(b"=")
    ans = exchange(gw, UNARY, enc.rstrip(b"="), text_headers())
    assert_well_formed(ans, text=True)
    assert ans.grpc_status == OK, ans
    assert [m.message for m in ans.messages] == [message]
    assert_serves(gw)


def assert_invalid_base64(ans):
    assert_well_formed(ans)
    assert ans.content_type == CT_TEXT
    assert ans.grpc_status == INVALID_ARGUMENT, ans
    assert "base64" in ans.grpc_message_decoded.lower(), ans


@pytest.mark.parametrize("garbage", [b"*", b"-_", b"\xff", b"QQ=A", b"A===", b"====", b"QQ==Q="],
                         ids=["star", "urlsafe", "non-ascii", "pad-then-data", "three-pad",
                              "only-pad", "pad-then-one"])
def test_text_invalid_base64(portico, garbage):
    gw = portico()
    good = grpcweb.encode_text(grpcweb.frame(EchoRequest(message="x" * 10)))
    body = good[:8] + garbage + good[8:]
    with gw.connect() as conn:
        ans = exchange(gw, UNARY, body, text_headers(), conn=conn)
        assert_invalid_base64(ans)
        assert_serves(gw, conn if "connection" not in ans.headers else None)
    assert_serves(gw)


def test_text_invalid_base64_answered_before_body_ends(portico):
    """The error is answered at once, while the client is still sending (no hang waiting for the
    end of the body, Envoy PR #2112); the rest of the body is then discarded."""
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", UNARY, text_headers() + [("Transfer-Encoding", "chunked")],
                     b"", content_length=False)
        conn.send(b"8\r\nAAAA!!!!\r\n")               # no terminating chunk yet
        head, resp = conn.response(timeout=5)
        ans = Answer(head, resp, conn)
        assert_invalid_base64(ans)
        conn.send(b"4\r\nAAAA\r\n0\r\n\r\n")
        if "connection" not in ans.headers:
            assert_serves(gw, conn)
    assert_serves(gw)


def test_text_single_leftover_character(portico):
    gw = portico()
    enc = grpcweb.encode_text(grpcweb.frame(EchoRequest(message="ab")))
    assert not enc.endswith(b"=")     # a complete quantum, then one dangling character
    ans = exchange(gw, UNARY, enc + b"Q", text_headers())
    assert_invalid_base64(ans)
    assert_serves(gw)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("case", ["truncated-frame", "truncated-header", "client-trailer-frame"])
def test_malformed_request_framing(portico, text, case):
    """Framing errors in the request body get a gRPC error answer, not a hang or a bare 400."""
    gw = portico()
    good = grpcweb.frame(EchoRequest(message="framing"))
    body = {"truncated-frame": good[:-3], "truncated-header": good + b"\x00\x00",
            "client-trailer-frame": good + grpcweb.trailer_frame({"grpc-status": "0"})}[case]
    with gw.connect() as conn:
        ans = exchange(gw, UNARY, grpcweb.encode_text(body) if text else body,
                       text_headers() if text else web_headers(), conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.grpc_status not in (None, OK), ans
        assert ans.grpc_status in (INVALID_ARGUMENT, INTERNAL), ans
        assert ans.grpc_message, ans
        if "connection" not in ans.headers:
            assert_serves(gw, conn)
    assert_serves(gw)


# --------------------------------------------------------------------------- 4. text responses

def test_text_response_is_per_frame_base64(portico):
    """Body = concatenation of base64(frame) for every frame, trailer frame included (Envoy):
    every segment is padded, a multiple of 4 characters and decodes to whole frames."""
    gw = portico()
    # message 0 has no index field (proto3 default) -> frames of different lengths mod 3
    ans = rpc(gw, SERVER_STREAM, EchoRequest(message="seg", count=6, size=1), text=True)
    assert_well_formed(ans, text=True)
    assert ans.grpc_status == OK, ans
    assert [m.index for m in ans.messages] == list(range(6))
    assert ans.body == per_frame_base64(ans.data)
    lengths = {len(p) + 5 for _, p in ans.frames}
    assert any(padded(n) for n in lengths), lengths   # the test really covers mid-body padding
    # each frame is its own segment: a multiple of 4 characters that decodes to that frame alone
    pos = 0
    for flags, payload in ans.frames:
        seg_len = -(-(len(payload) + 5) // 3) * 4
        seg = ans.body[pos:pos + seg_len]
        assert grpcweb.split_frames(base64.b64decode(seg, validate=True)) == \
            ([(flags, payload)], b""), seg
        pos += seg_len
    assert pos == len(ans.body)


# --------------------------------------------------------------------------- 5. unicode

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_unicode_round_trip(portico, text):
    gw = portico()
    ans = rpc(gw, UNARY, EchoRequest(message=UNICODE, payload=UNICODE.encode()), text=text)
    assert_well_formed(ans, text=text)
    (msg,) = ans.messages
    assert msg.message == UNICODE and msg.payload == UNICODE.encode("utf-8")


# --------------------------------------------------------------------------- 6. message size limits

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_message_just_under_4mib(portico, text):
    gw = portico()
    # the response also carries the echoed request metadata: leave a little room for it
    payload = bytes(range(256)) * ((DEFAULT_LIMIT - 1024) // 256)
    assert len(grpcweb.frame(EchoRequest(payload=payload))) - 5 > DEFAULT_LIMIT - 1100
    ans = rpc(gw, UNARY, EchoRequest(message="big", payload=payload), text=text,
              timeout=BIG_TIMEOUT)
    assert_well_formed(ans, text=text)
    assert ans.grpc_status == OK, ans.grpc_message
    (msg,) = ans.messages
    assert msg.message == "big" and msg.payload == payload
    if text:
        assert ans.body == per_frame_base64(ans.data)
    assert_serves(gw)


def request_of_size(n):
    """An EchoRequest serialising to exactly n bytes (payload field only)."""
    for overhead in range(2, 8):
        req = EchoRequest(payload=b"p" * (n - overhead))
        if req.ByteSize() == n:
            return req
    raise AssertionError(n)


def test_request_limit_is_exact(portico):
    """A request message of exactly limits.max_message_size passes; one byte more does not.
    (ServerStream count=0 ignores the payload and answers Trailers-Only OK.)"""
    gw = portico()
    with gw.connect(timeout=BIG_TIMEOUT) as conn:
        ans = rpc(gw, SERVER_STREAM, request_of_size(DEFAULT_LIMIT), conn=conn,
                  timeout=BIG_TIMEOUT)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        ans = rpc(gw, SERVER_STREAM, request_of_size(DEFAULT_LIMIT + 1), conn=conn,
                  timeout=BIG_TIMEOUT)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == RESOURCE_EXHAUSTED, ans
        assert "4194305" in ans.grpc_message and "4194304" in ans.grpc_message, ans
        if "connection" not in ans.headers:
            assert_serves(gw, conn)
    assert_serves(gw)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_request_over_4mib(portico, text):
    gw = portico()
    ans = rpc(gw, UNARY, EchoRequest(payload=b"q" * (DEFAULT_LIMIT + 10)), text=text,
              timeout=BIG_TIMEOUT)
    assert_well_formed(ans, text=text)
    assert ans.grpc_status == RESOURCE_EXHAUSTED, ans
    assert "4194304" in ans.grpc_message, ans
    assert ans.messages == []
    assert_serves(gw)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_response_over_4mib(portico, text):
    gw = portico()
    ans = rpc(gw, UNARY, EchoRequest(size=5 * MiB), text=text, timeout=BIG_TIMEOUT)
    assert_well_formed(ans, text=text)
    assert ans.grpc_status == RESOURCE_EXHAUSTED, ans
    assert "4194304" in ans.grpc_message, ans
    assert ans.messages == []                 # no partial message leaks out
    assert_serves(gw)


def test_request_over_limit_after_response_head(portico):
    """ClientStream answers its head at once; a later over-limit request frame must end the
    already started response with a trailer frame (not a second head), without waiting for the
    message body."""
    gw = portico()
    with gw.connect() as conn:
        conn.request("POST", CLIENT_STREAM, web_headers() + [("Transfer-Encoding", "chunked")],
                     b"", content_length=False)
        first = grpcweb.frame(EchoRequest(message="first"))
        conn.send(b"%x\r\n%s\r\n" % (len(first), first))
        head = conn.read_head(TIMEOUT)
        assert head.status == 200 and head.get("x-echo-initial") == "yes", head
        assert head.get("transfer-encoding") == "chunked"
        conn.send(b"5\r\n" + bytes([0]) + (DEFAULT_LIMIT + 1).to_bytes(4, "big") + b"\r\n")
        ans = Answer(head, conn.read_body(TIMEOUT), conn)
        assert_well_formed(ans, text=False)
        assert ans.messages == []
        assert ans.grpc_status == RESOURCE_EXHAUSTED, ans
        assert "4194305" in ans.grpc_message and "4194304" in ans.grpc_message, ans
        if "connection" not in ans.headers:
            conn.send(b"3\r\nabc\r\n0\r\n\r\n")     # the rest of the body is discarded
            assert_serves(gw, conn)
    assert_serves(gw)


LIMIT_CONFIG = """\
workers: 1
log_level: debug
listeners: [127.0.0.1:{listen_port}]
upstreams:
  - name: echo
    endpoints: [127.0.0.1:{upstream_port}]
limits: {max_message_size: 1KiB}
"""


def test_configured_max_message_size(portico):
    gw = portico(config=LIMIT_CONFIG)
    with gw.connect() as conn:
        ans = rpc(gw, UNARY, EchoRequest(payload=b"s" * 700), conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        assert ans.messages[0].payload == b"s" * 700
        ans = rpc(gw, UNARY, EchoRequest(payload=b"s" * 1100), conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == RESOURCE_EXHAUSTED, ans
        assert "1024" in ans.grpc_message, ans
    ans = rpc(gw, UNARY, EchoRequest(size=2000))
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == RESOURCE_EXHAUSTED, ans
    assert "1024" in ans.grpc_message and ans.messages == [], ans
    assert_serves(gw)


# --------------------------------------------------------------------------- 7. server streaming

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_server_stream_1000_messages(portico, text):
    gw = portico()
    body = frames_of(EchoRequest(message="m", count=1000, size=8))
    with gw.connect() as conn:
        conn.request("POST", SERVER_STREAM, text_headers() if text else web_headers(),
                     grpcweb.encode_text(body) if text else body)
        head = conn.read_head(TIMEOUT)
        assert head.status == 200 and head.get("content-type") == (CT_TEXT if text else CT_BIN)
        assert head.get("transfer-encoding") == "chunked"
        reader = grpcweb.FrameReader(conn, text=text)
        for i in range(1000):
            flags, payload = reader.next_frame(TIMEOUT)
            assert flags == 0, (i, payload)
            msg = EchoResponse.FromString(payload)
            assert (msg.index, msg.message, msg.payload) == (i, "m", b"x" * 8)
        flags, payload = reader.next_frame(TIMEOUT)
        assert flags == grpcweb.TRAILER_FLAG
        assert_trailer_bytes(payload)
        assert grpcweb.parse_trailer_block(payload)["grpc-status"] == "0"
        assert reader.next_frame(TIMEOUT) is None
        assert_serves(gw, conn)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_server_stream_is_incremental(portico, text):
    """20 messages 100 ms apart: the first one must arrive long before the stream ends."""
    gw = portico()
    body = frames_of(EchoRequest(message="tick", count=20, interval_ms=100))
    with gw.connect() as conn:
        conn.request("POST", SERVER_STREAM, text_headers() if text else web_headers(),
                     grpcweb.encode_text(body) if text else body)
        conn.read_head(TIMEOUT)
        reader = grpcweb.FrameReader(conn, text=text)
        arrivals = []
        while True:
            f = reader.next_frame(TIMEOUT)
            if f is None or f[0] & grpcweb.TRAILER_FLAG:
                break
            arrivals.append((time.monotonic(), EchoResponse.FromString(f[1]).index))
        assert [i for _, i in arrivals] == list(range(20))
        assert f is not None and grpcweb.parse_trailer_block(f[1])["grpc-status"] == "0"
        spread = arrivals[-1][0] - arrivals[0][0]
        assert spread > 1.0, f"all messages arrived within {spread:.3f}s: buffered, not streamed"


# --------------------------------------------------------------------------- 8. errors

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_error_after_messages(portico, text):
    gw = portico()
    ans = rpc(gw, SERVER_STREAM, EchoRequest(message="e", count=2, status_code=NOT_FOUND,
                                             status_message="gone away",
                                             fail_after_messages=True), text=text)
    assert_well_formed(ans, text=text)
    assert ans.trailers is not None, "expected a trailer frame, got Trailers-Only"
    assert ans.headers["x-echo-initial"] == "yes"
    assert [m.index for m in ans.messages] == [0, 1]
    assert [f for f, _ in ans.frames] == [0, 0, 0x80]
    block = ans.trailer_block
    assert b"grpc-status:5\r\n" in block
    assert b"grpc-message:gone away\r\n" in block
    assert b"x-trailer-custom:custom-value\r\n" in block
    assert b"x-trailer-bin:AAH+/w\r\n" in block         # -bin values stay base64
    if text:
        assert ans.body == per_frame_base64(ans.data)
    assert_serves(gw)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("path", [UNARY, SERVER_STREAM], ids=["unary", "server-stream"])
def test_trailers_only_error(portico, text, path):
    gw = portico()
    with gw.connect() as conn:
        ans = rpc(gw, path, EchoRequest(count=0, status_code=NOT_FOUND, status_message="nope"),
                  text=text, conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.trailers is None, "Trailers-Only must not get a trailer frame"
        assert ans.body == b"" and ans.headers["content-length"] == "0"
        assert ans.headers["grpc-status"] == "5"
        assert ans.headers["grpc-message"] == "nope"
        assert ans.headers["x-trailer-custom"] == "custom-value"
        assert ans.headers["x-trailer-bin"] == "AAH+/w"
        assert "x-echo-initial" not in ans.headers
        assert_serves(gw, conn)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_trailers_only_ok(portico, text):
    gw = portico()
    ans = rpc(gw, SERVER_STREAM, EchoRequest(count=0), text=text)
    assert_well_formed(ans, text=text)
    assert ans.trailers is None and ans.body == b""
    assert ans.headers["grpc-status"] == "0"
    assert ans.headers["x-trailer-ok"] == "done"
    assert_serves(gw)


@pytest.mark.parametrize("after_messages", [False, True], ids=["trailers-only", "trailer-frame"])
def test_grpc_message_percent_encoding_preserved(portico, after_messages):
    gw = portico()
    ans = rpc(gw, SERVER_STREAM, EchoRequest(count=1 if after_messages else 0, status_code=9,
                                             status_message="100% broken\nline é",
                                             fail_after_messages=after_messages))
    assert_well_formed(ans, text=False)
    assert (ans.trailers is not None) == after_messages
    assert ans.grpc_status == 9
    assert ans.grpc_message == "100%25 broken%0Aline %C3%A9"
    assert ans.grpc_message_decoded == "100% broken\nline é"
    if after_messages:
        assert b"grpc-message:100%25 broken%0Aline %C3%A9\r\n" in ans.trailer_block


# --------------------------------------------------------------------------- 9. header translation

def test_metadata_both_ways(portico):
    gw = portico()
    ans = rpc(gw, UNARY, EchoRequest(message="md"),
              headers=web_headers(extra=[("X-Echo-Foo", "bar"), ("X-Custom-Thing", "v 1"),
                                         ("Authorization", "Bearer t0k3n")]))
    assert_well_formed(ans, text=False)
    assert ans.headers["x-echoed-foo"] == "bar"
    assert ans.headers["x-echo-initial"] == "yes"
    seen = dict(ans.messages[0].headers)
    assert seen["x-echo-foo"] == "bar"
    assert seen["x-custom-thing"] == "v 1"
    assert seen["authorization"] == "Bearer t0k3n"
    assert seen["x-grpc-web"] == "1"
    assert seen["x-user-agent"] == "grpc-web-javascript/0.1"
    assert all(k == k.lower() for k in seen), seen


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_hop_by_hop_request_headers_not_forwarded(portico, chunked):
    gw = portico()
    headers = web_headers(extra=[("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
                                 ("TE", "gzip"), ("Proxy-Connection", "keep-alive"),
                                 ("X-Kept", "yes")])
    with gw.connect() as conn:
        ans = exchange(gw, UNARY, frames_of(EchoRequest(message="hop")), headers, conn=conn,
                       chunked=chunked)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        seen = dict(ans.messages[0].headers)
        assert seen["x-kept"] == "yes"
        for name in HOP_BY_HOP + ("content-length", "host"):
            assert name not in seen, (name, seen)
        # grpcio hides te/content-type/grpc-accept-encoding from the handler; if a future grpcio
        # shows grpc-accept-encoding, it must be the gateway's default
        assert seen.get("grpc-accept-encoding", "identity") == "identity", seen
        assert_serves(gw, conn)


def test_connection_nominated_headers_not_forwarded(portico):
    """RFC 9110 §7.6.1: a proxy removes every field named in Connection."""
    gw = portico()
    headers = web_headers(extra=[("Connection", "keep-alive, X-Hop-Secret"),
                                 ("X-Hop-Secret", "s3cret"), ("X-Kept", "yes")])
    ans = exchange(gw, UNARY, frames_of(EchoRequest(message="hop")), headers)
    assert_well_formed(ans, text=False)
    assert ans.grpc_status == OK, ans
    seen = dict(ans.messages[0].headers)
    assert seen["x-kept"] == "yes"
    assert "x-hop-secret" not in seen, seen


def test_h2c_upgrade_offer_is_ignored(portico):
    """curl --http2 offers `Upgrade: h2c` on its POST; the gateway answers in HTTP/1.1 and
    does not forward the upgrade fields."""
    gw = portico()
    headers = web_headers(extra=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                 ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
    with gw.connect() as conn:
        ans = exchange(gw, UNARY, frames_of(EchoRequest(message="upgrade?")), headers,
                       conn=conn)
        assert ans.head.version == "HTTP/1.1"
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans
        seen = dict(ans.messages[0].headers)
        for name in ("upgrade", "http2-settings", "connection"):
            assert name not in seen, seen
        if "connection" not in ans.headers:
            assert_serves(gw, conn)
    assert_serves(gw)


def test_response_has_no_hop_by_hop_headers(portico):
    gw = portico()
    ans = rpc(gw, UNARY, EchoRequest(message="resp"))
    assert_well_formed(ans, text=False)
    names = [k.lower() for k, _ in ans.head.headers]
    assert names.count("content-type") == 1
    assert names.count("transfer-encoding") == 1 and ans.headers["transfer-encoding"] == "chunked"
    for name in ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "content-length", "grpc-status", "grpc-message", "grpc-encoding"):
        assert name not in names, (name, ans.head)
    assert not any(n.startswith(":") for n in names), ans.head


# --------------------------------------------------------------------------- 10. client streaming

@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_client_stream_three_frames(portico, text):
    gw = portico()
    ans = rpc(gw, CLIENT_STREAM, EchoRequest(message="a", payload=b"1"),
              EchoRequest(message="b"), EchoRequest(message="c", payload=b"23"), text=text)
    assert_well_formed(ans, text=text)
    assert ans.grpc_status == OK, ans
    (msg,) = ans.messages
    assert (msg.message, msg.index, msg.payload) == ("a|b|c", 3, b"123")


# --------------------------------------------------------------------------- 11. routing

ROUTES_CONFIG = """\
workers: 1
log_level: debug
listeners: [127.0.0.1:{listen_port}]
upstreams:
  - name: unary-only
    endpoints: [127.0.0.1:{upstream_port}]
  - name: echo-service
    endpoints: [127.0.0.1:{upstream_port}]
routes:
  - path: /portico.test.Echo/Unary
    upstream: unary-only
  - prefix: /portico.test.Echo/
    upstream: echo-service
"""


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_no_route_is_unimplemented(portico, text):
    gw = portico(config=ROUTES_CONFIG)
    with gw.connect() as conn:
        ans = rpc(gw, "/other.Service/Method", EchoRequest(message="lost"), text=text, conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.trailers is None
        assert ans.grpc_status == UNIMPLEMENTED, ans
        assert "/other.Service/Method" in ans.grpc_message_decoded
        # a prefix of a route's path is not the route
        ans = rpc(gw, "/portico.test.Echo", EchoRequest(), text=text, conn=conn)
        assert ans.grpc_status == UNIMPLEMENTED, ans
        assert_serves(gw, conn)


def test_routes_and_query_string_stripped(portico):
    gw = portico(config=ROUTES_CONFIG)
    with gw.connect() as conn:
        ans = rpc(gw, UNARY + "?x=1&y=%20z", EchoRequest(message="q"), conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == OK, ans                   # the echo server matches :path exactly
        assert ans.messages[0].message == "q"
        assert gw.wait_log(r"upstream unary-only: connect")
        assert not re.search(r"upstream echo-service: connect", gw.log_text())
        ans = rpc(gw, SERVER_STREAM + "?y=2", EchoRequest(message="p", count=2), conn=conn)
        assert ans.grpc_status == OK, ans
        assert [m.index for m in ans.messages] == [0, 1]
        assert gw.wait_log(r"upstream echo-service: connect")
        ans = rpc(gw, CLIENT_STREAM, EchoRequest(message="c"), conn=conn)
        assert ans.grpc_status == OK and ans.messages[0].message == "c", ans


# --------------------------------------------------------------------------- 12. health

def http_get(gw, path, method="GET"):
    with gw.connect() as conn:
        conn.request(method, path)
        head, body = conn.response(TIMEOUT)
        return head, body


def test_health_endpoint_is_local(portico):
    """/healthz is answered by the gateway itself, even with no upstream listening."""
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
        gw = portico(upstream=dead_port)
        head, body = http_get(gw, "/healthz")
        assert head.status == 200 and body == b"ok\n"
        head, body = http_get(gw, "/healthz?probe=1")
        assert head.status == 200 and body == b"ok\n"
        head, body = http_get(gw, "/healthz", method="HEAD")
        assert head.status == 200 and body == b""
        ans = rpc(gw, UNARY, EchoRequest())         # while a real call fails
        assert ans.grpc_status == UNAVAILABLE, ans
    assert "call /healthz" not in gw.log_text()


def test_custom_health_path(portico):
    gw = portico(config=LIMIT_CONFIG + "health_path: /ready\n")
    head, body = http_get(gw, "/ready")
    assert head.status == 200 and body == b"ok\n"
    head, body = http_get(gw, "/healthz")
    assert head.status == 405, head
    assert_serves(gw)


# --------------------------------------------------------------------------- 13. non-gRPC upstream

class PlainH2Server:
    """A running tests/upstream/plain_h2_server.py."""

    def __init__(self, log_path):
        self.log_path = Path(log_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([PYTHON, str(PLAIN_H2_SERVER), "--port", "0"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ""
        m = re.fullmatch(r"PORT (\d+)\n", line)
        if not m:
            self.stop()
            pytest.fail(f"plain_h2_server did not start: {line!r}\n{self.log_text()}")
        self.port = int(m.group(1))

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def plain_h2(tmp_path_factory):
    server = PlainH2Server(tmp_path_factory.mktemp("plain") / "plain_h2_server.log")
    yield server
    server.stop()


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("http_status,grpc_status", [(503, UNAVAILABLE), (502, UNAVAILABLE),
                                                     (404, UNIMPLEMENTED), (401, 16),
                                                     (200, UNKNOWN), (500, UNKNOWN)])
def test_non_grpc_upstream(portico, plain_h2, http_status, grpc_status, text):
    gw = portico(upstream=plain_h2.port)
    with gw.connect() as conn:
        ans = rpc(gw, f"/plain.Test/{http_status}", EchoRequest(message="x"), text=text,
                  conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.trailers is None
        assert ans.grpc_status == grpc_status, ans
        msg = ans.grpc_message_decoded
        assert str(http_status) in msg, msg
        assert "<html>Service Unavailable</html>" in msg, msg
        assert "text/html" in msg, msg
        # the message is percent-encoded where needed and has no raw control characters
        assert re.fullmatch(r"[\x20-\x7e]*", ans.grpc_message), ans.grpc_message
        # the connection stays usable
        ans = rpc(gw, "/plain.Test/503", EchoRequest(), conn=conn)
        assert ans.grpc_status == UNAVAILABLE, ans


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_upstream_reset_after_message(portico, plain_h2, text):
    """Valid gRPC head + one message, then RST_STREAM(INTERNAL_ERROR): the client gets the message
    and then a trailer frame with INTERNAL, in a properly terminated chunked body."""
    gw = portico(upstream=plain_h2.port)
    with gw.connect() as conn:
        conn.request("POST", "/plain.Test/reset", text_headers() if text else web_headers(),
                     (grpcweb.encode_text if text else bytes)(frames_of(EchoRequest())))
        head = conn.read_head(TIMEOUT)
        assert head.status == 200 and head.get("transfer-encoding") == "chunked"
        body = conn.read_body(TIMEOUT)      # raises ConnectionClosed without the final 0\r\n\r\n
        assert conn._body["done"] and conn.http_trailers == []
        ans = Answer(head, body, conn)
        assert_well_formed(ans, text=text)
        assert [(m.message, m.index) for m in ans.messages] == [("partial", 7)]
        assert ans.grpc_status == INTERNAL, ans
        assert ans.trailers["grpc-message"], ans
        if text:
            assert ans.body == per_frame_base64(ans.data)
        ans = rpc(gw, "/plain.Test/503", EchoRequest(), conn=conn)
        assert ans.grpc_status == UNAVAILABLE, ans
    gw2 = portico()          # and the echo upstream through another gateway, for good measure
    assert_serves(gw2)


@pytest.mark.parametrize("path", ["/plain.Test/bad_status", "/plain.Test/bad_status_only"])
def test_upstream_invalid_grpc_status(portico, plain_h2, path):
    """A grpc-status that is not a number is not passed on (a client would read it as OK, or fail to
    parse it): the call ends with UNKNOWN and a message that says why."""
    gw = portico(upstream=plain_h2.port)
    ans = rpc(gw, path, EchoRequest())
    assert_well_formed(ans)
    assert ans.grpc_status == UNKNOWN, ans
    assert "invalid grpc-status" in ans.grpc_message_decoded, ans
    assert gw.wait_log(r"upstream sent an invalid grpc-status '(1x|-1)'")


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_upstream_reset_mid_message(portico, plain_h2, text):
    """RST_STREAM after half of a gRPC message: the client must still get a parsable body that
    ends with one trailer frame carrying a non-OK status; the cut message must not be delivered
    and the trailer frame must not end up inside it."""
    gw = portico(upstream=plain_h2.port)
    with gw.connect() as conn:
        conn.request("POST", "/plain.Test/reset_mid", text_headers() if text else web_headers(),
                     (grpcweb.encode_text if text else bytes)(frames_of(EchoRequest())))
        head = conn.read_head(TIMEOUT)
        body = conn.read_body(TIMEOUT)      # raises ConnectionClosed without the final 0\r\n\r\n
        data = grpcweb.decode_text(body) if text else body
        frames, rest = grpcweb.split_frames(data)
        assert rest == b"" and frames and frames[-1][0] == grpcweb.TRAILER_FLAG, (
            f"body is not whole frames ending in a trailer frame: {data!r}")
        ans = Answer(head, body, conn)
        assert_well_formed(ans, text=text)
        assert ans.messages == []
        assert ans.grpc_status == INTERNAL, ans
        ans = rpc(gw, "/plain.Test/503", EchoRequest(), conn=conn)
        assert ans.grpc_status == UNAVAILABLE, ans
