"""Upstream message compression (PROTOCOL.md §1.10): browser gRPC-Web clients reject compressed
frames (flag 0x01), so Portico inflates them; native gRPC clients get them as they are."""

import struct
import time
import zlib

import pytest

import grpcweb
from echo_pb import EchoRequest, EchoResponse
from test_protocol import (INTERNAL, RESOURCE_EXHAUSTED, assert_well_formed, plain_h2,  # noqa: F401
                           rpc)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_frames_are_inflated_for_grpc_web(portico, plain_h2, encoding, text):  # noqa: F811
    gw = portico(upstream=plain_h2.port)
    with gw.connect() as conn:
        ans = rpc(gw, f"/plain.Test/{encoding}", EchoRequest(message="x"), text=text, conn=conn)
        assert_well_formed(ans, text=text)
        assert ans.grpc_status == 0, ans
        # every message frame arrives uncompressed, and grpc-encoding no longer describes them
        assert [f for f, _ in ans.frames[:-1]] == [0, 0], ans.frames
        assert [m.message for m in ans.messages] == ["compressed " + "z" * 200, "plain"]
        assert "grpc-encoding" not in ans.headers, ans.headers
        assert rpc(gw, "/plain.Test/gzip", EchoRequest(), conn=conn).grpc_status == 0   # still serves


@pytest.mark.parametrize("mode,status,words", [
    ("gzip_corrupt", INTERNAL, "corrupt gzip-compressed message"),
    ("gzip_bomb", RESOURCE_EXHAUSTED, "decompressed response message exceeds"),
    ("snappy", INTERNAL, "grpc-encoding 'snappy'"),
])
def test_bad_compressed_frames(portico, plain_h2, mode, status, words):  # noqa: F811
    gw = portico(upstream=plain_h2.port)
    with gw.connect() as conn:
        ans = rpc(gw, f"/plain.Test/{mode}", EchoRequest(message="x"), conn=conn)
        assert_well_formed(ans, text=False)
        assert ans.grpc_status == status, ans
        assert words in ans.grpc_message_decoded, ans.grpc_message_decoded
        # the broken message never reaches the client: only the trailer frame
        assert [f for f, _ in ans.frames] == [0x80], ans.frames
        assert rpc(gw, "/plain.Test/gzip", EchoRequest(), conn=conn).grpc_status == 0   # still serves


def test_native_grpc_gets_compressed_frames_unchanged(portico, plain_h2):  # noqa: F811
    """A native gRPC client negotiates compression itself: frames and grpc-encoding pass through."""
    gw = portico(upstream=plain_h2.port)
    body = grpcweb.frame(EchoRequest(message="x"))
    resp = grpcweb.h2_request(gw.port, [(":method", "POST"), (":scheme", "http"), (":path", "/plain.Test/gzip"),
                                         (":authority", f"127.0.0.1:{gw.port}"), ("content-type", "application/grpc"),
                                         ("te", "trailers")], body)
    headers = dict(resp.headers)
    assert headers.get("grpc-encoding") == "gzip", resp.headers
    flag, length = struct.unpack(">BI", resp.data[:5])
    assert flag == 1
    payload = zlib.decompress(resp.data[5:5 + length], wbits=31)
    assert EchoResponse.FromString(payload).message == "compressed " + "z" * 200
    assert dict(resp.trailers).get("grpc-status") == "0", resp.trailers


# --------------------------------------------------------------------------- HTTP Content-Encoding

GZIP_CONFIG = """\
listeners: ["127.0.0.1:{listen_port}"]
upstreams: [{name: echo, endpoints: ["127.0.0.1:{upstream_port}"]}]
log_level: debug
compression: {gzip: true, min_size: 1KiB}
"""


def gzip_call(gw, message, accept_encoding="gzip, deflate", text=False, path="/portico.test.Echo/Unary", conn=None):
    """A gRPC-Web call with Accept-Encoding; returns (head, decoded body bytes)."""
    body = grpcweb.frame(message)
    headers = grpcweb.request_headers(text=text)
    if text:
        body = grpcweb.encode_text(body)
    if accept_encoding is not None:
        headers = list(headers) + [("Accept-Encoding", accept_encoding)]
    own = conn is None
    conn = conn or gw.connect()
    try:
        conn.request("POST", path, headers, body)
        head, raw = conn.response()
    finally:
        if own:
            conn.close()
    if head.get("content-encoding") == "gzip":
        raw = zlib.decompress(raw, wbits=31)
    return head, raw


def messages_and_trailers(raw, text=False):
    frames, trailers = grpcweb.parse_body(raw, text=text)
    return [EchoResponse.FromString(p) for f, p in frames if not f & 0x80], trailers


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_gzip_response_when_accepted_and_big_enough(portico, text):
    gw = portico(config=GZIP_CONFIG)
    msg = "compress me " * 400                       # ~4.8 KB, very compressible
    head, raw = gzip_call(gw, EchoRequest(message=msg), text=text)
    assert head.get("content-encoding") == "gzip", head
    assert "Accept-Encoding" in head.get_all("vary"), head
    assert head.get("content-length") is None         # streamed (chunked), never buffered whole
    msgs, trailers = messages_and_trailers(raw, text=text)
    assert [m.message for m in msgs] == [msg]
    assert trailers["grpc-status"] == "0"


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br"])
def test_no_gzip_unless_accepted(portico, accept):
    gw = portico(config=GZIP_CONFIG)
    head, raw = gzip_call(gw, EchoRequest(message="x" * 4000), accept_encoding=accept)
    assert head.get("content-encoding") is None, head
    msgs, trailers = messages_and_trailers(raw)
    assert msgs[0].message == "x" * 4000 and trailers["grpc-status"] == "0"


def test_no_gzip_for_small_responses_or_when_disabled(portico):
    gw = portico(config=GZIP_CONFIG)
    head, raw = gzip_call(gw, EchoRequest(message="tiny"))
    assert head.get("content-encoding") is None, head      # first message < min_size: not worth it
    assert messages_and_trailers(raw)[0][0].message == "tiny"
    # trailers-only answers have no body at all
    head, raw = gzip_call(gw, EchoRequest(message="x" * 4000, status_code=5, status_message="no"))
    assert head.get("content-encoding") is None and head.get("grpc-status") == "5", head
    off = portico()                                           # compression.gzip defaults to false
    head, raw = gzip_call(off, EchoRequest(message="x" * 4000))
    assert head.get("content-encoding") is None, head


def test_gzip_stream_is_flushed_per_message(portico):
    """Z_SYNC_FLUSH after every upstream chunk: each message can be decoded as soon as it arrives,
    long before the stream ends."""
    gw = portico(config=GZIP_CONFIG)
    req = EchoRequest(message="m" * 2000, count=6, interval_ms=300)
    with gw.connect() as conn:
        conn.request("POST", "/portico.test.Echo/ServerStream", list(grpcweb.request_headers()) +
                     [("Accept-Encoding", "gzip")], grpcweb.frame(req))
        head = conn.read_head()
        assert head.get("content-encoding") == "gzip", head
        z = zlib.decompressobj(wbits=31)
        plain = b""
        started = time.monotonic()
        first_at = None
        while True:
            chunk = conn.read_chunk(timeout=10)
            if not chunk:
                break
            plain += z.decompress(chunk)
            frames, _ = grpcweb.split_frames(plain)
            if frames and first_at is None:
                first_at = time.monotonic() - started
        total = time.monotonic() - started
        plain += z.flush()
        msgs, trailers = messages_and_trailers(plain)
        assert [m.index for m in msgs] == list(range(6))
        assert trailers["grpc-status"] == "0"
        assert first_at is not None and first_at < total - 1.0, (first_at, total)


def test_native_grpc_never_gets_content_encoding(portico):
    gw = portico(config=GZIP_CONFIG)
    body = grpcweb.frame(EchoRequest(message="x" * 4000))
    resp = grpcweb.h2_request(gw.port, [(":method", "POST"), (":scheme", "http"), (":path", "/portico.test.Echo/Unary"),
                                         (":authority", f"127.0.0.1:{gw.port}"), ("content-type", "application/grpc"),
                                         ("te", "trailers"), ("accept-encoding", "gzip")], body)
    assert "content-encoding" not in dict(resp.headers), resp.headers
    assert dict(resp.trailers).get("grpc-status") == "0"
