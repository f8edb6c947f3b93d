"""Upstream message compression (PROTOCOL.md §1.10): browser gRPC-Web clients reject compressed
frames (flag 0x01), so Portico inflates them; native gRPC clients get them as they are."""

import struct
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
